"""What keeps the operator cheap at 1000s of objects: slim watched bodies, no no-op applies on a
resync while the watch shows a child unchanged (drift still repaired), a retried create prunes."""

from __future__ import annotations

import contextlib
import itertools
from typing import Any, cast

from modeldeploy import api, memory, reconcile, status
from modeldeploy.kube import KubeClient, KubeError, ObjectRef
from modeldeploy.memory import Memory
from modeldeploy.settings import OperatorSettings
from tests.unit.fakes import FakeKube

SETTINGS = OperatorSettings(metrics_port=0, liveness_endpoint=None)
STABLE = ObjectRef("Deployment", "ml", "fraud")


class VersionedKube(FakeKube):
    """A FakeKube whose applies answer a new resourceVersion, as an API server's do."""

    versions = itertools.count(1)

    def apply(self, obj: dict[str, Any], *, probably_new: bool = False) -> dict[str, Any]:
        answer = super().apply(obj, probably_new=probably_new)
        version = str(next(self.versions))
        self.objects[ObjectRef.of(obj)]["metadata"]["resourceVersion"] = version
        answer["metadata"]["resourceVersion"] = version
        return answer


def body(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": api.API_VERSION,
        "kind": api.KIND,
        "metadata": {"name": "fraud", "namespace": "ml", "uid": "u-1", "generation": 1},
        "spec": {"model": {"name": "m", "storageUri": "s3://b/m"}, **spec},
    }


def run(kube: FakeKube, mem: Memory, md: dict[str, Any], created: bool = False) -> reconcile.Outcome:
    return reconcile.reconcile(md, cast(KubeClient, kube), SETTINGS, mem, created=created)


def watch_sees(kube: FakeKube, mem: Memory) -> None:
    """The Deployment watch delivers the live stable Deployment."""
    mem.saw_child(memory.slim(dict(kube.objects[STABLE])))


def stable_applies(kube: FakeKube) -> int:
    return kube.calls.count(("apply", "Deployment", "fraud"))


def test_slim_drops_managed_fields_and_the_pod_spec() -> None:
    deployment = {
        "kind": "Deployment",
        "metadata": {"name": "d", "managedFields": [{"manager": "x"}], "labels": {"a": "b"}},
        "spec": {"replicas": 2, "template": {"metadata": {"labels": {"r": "1"}}, "spec": {"containers": []}}},
        "status": {"readyReplicas": 2},
    }
    slim = memory.slim(deployment)
    assert slim["metadata"] == {"name": "d", "labels": {"a": "b"}}
    assert slim["spec"] == {"replicas": 2, "template": {"metadata": {"labels": {"r": "1"}}}}
    assert slim["status"] == {"readyReplicas": 2}


def test_resync_skips_an_unchanged_deployment_and_repairs_an_edited_one() -> None:
    kube, mem = VersionedKube(), Memory()
    run(kube, mem, body(), created=True)
    watch_sees(kube, mem)
    run(kube, mem, body())  # the watched Deployment is the one applied: not applied again
    assert stable_applies(kube) == 1
    assert ("get", "Deployment", "fraud") not in kube.calls  # read from the watch
    kube.objects[STABLE]["metadata"]["resourceVersion"] = "edited"  # drift, seen by the watch
    watch_sees(kube, mem)
    run(kube, mem, body())
    assert stable_applies(kube) == 2
    watch_sees(kube, mem)
    run(kube, mem, body())
    assert stable_applies(kube) == 2
    assert kube.calls.count(("apply", "Service", "fraud")) == 4  # unwatched children: every time


def test_without_a_watch_every_resync_applies() -> None:
    kube, mem = VersionedKube(), Memory()
    run(kube, mem, body(), created=True)
    run(kube, mem, body())
    assert stable_applies(kube) == 2


def test_a_settled_resync_reads_nothing_before_it_applies() -> None:
    """The safety-net resync (trusting no watch copy) of an object without a canary: its apply
    answers the live stable, so no GET comes before it (three requests would be two)."""
    kube, mem = VersionedKube(), Memory()
    run(kube, mem, body(), created=True)
    kube.calls.clear()
    reconcile.reconcile(body(), cast(KubeClient, kube), SETTINGS, mem, trust_watch=False)
    assert [verb for verb, _, _ in kube.calls] == ["apply", "apply"], kube.calls


def test_a_retried_create_prunes_what_its_failed_first_attempt_applied() -> None:
    kube, mem = VersionedKube(), Memory()
    autoscaled = body(autoscaling={"minReplicas": 1, "maxReplicas": 3, "targetCPUUtilization": 50})
    kube.fail_apply["ControllerRevision"] = KubeError(503, "unavailable")  # after the children
    with contextlib.suppress(KubeError):
        run(kube, mem, autoscaled, created=True)
    assert "fraud" in kube.names("HorizontalPodAutoscaler")
    del kube.fail_apply["ControllerRevision"]
    run(kube, mem, body(replicas=1), created=True)  # the spec changed before the retry
    assert "fraud" not in kube.names("HorizontalPodAutoscaler")


def test_memory_keeps_each_workloads_pods_and_says_when_they_changed() -> None:
    mem = memory.Memory()

    def pod(name: str, ready: bool, track: str = "stable", **meta: object) -> dict:
        labels = {"modeldeploy.io/deployment": "iris", "modeldeploy.io/track": track, "modeldeploy.io/revision": "r1"}
        conditions = [{"type": "Ready", "status": "True" if ready else "False"}]
        return {"metadata": {"name": name, "namespace": "ml", "labels": labels, **meta},
                "status": {"conditions": conditions}}  # fmt: skip

    assert mem.saw_pod(pod("a", False)) == ("ml", "iris", "stable")
    assert mem.saw_pod(pod("a", False)) is None  # nothing the status reads changed
    assert mem.saw_pod(pod("a", True)) == ("ml", "iris", "stable")
    assert mem.saw_pod(pod("c", True, track="canary")) == ("ml", "iris", "canary")
    assert mem.pods_of("ml", "iris", "stable") == [status.PodFact("r1", True)]
    assert mem.saw_pod(pod("a", True, deletionTimestamp="2026-12-03T00:00:00Z")) == ("ml", "iris", "stable")
    assert mem.pods_of("ml", "iris", "stable") == []  # a terminating pod no longer counts
    assert mem.saw_pod(pod("c", True, track="canary"), deleted=True) == ("ml", "iris", "canary")
    assert mem.pods == {}  # nothing kept for workloads without pods
    assert mem.saw_pod({"metadata": {"name": "x", "namespace": "ml", "labels": {}}}) is None  # not ours
