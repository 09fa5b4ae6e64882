"""Canary rollouts and status on the real control plane (issue 10), with the fake kubelet, real
Prometheus and real modelserve tracks (tests/e2e/canary_env.py).

- events and counters once per transition, none for a first deployment or from a resync;
- analyses one interval apart; a paused canary costs no status writes;
- Promoting lasts until the stable has rolled out; only then is the canary removed;
- a stable Deployment deleted mid-canary comes back with the stable revision, judged on;
- a rolled-back canary is gone within 2 s;
- Ready follows the pods within 2 s (the resync is 10 minutes there);
- an apply the API server refuses shows ApplyFailed in status.
"""

from __future__ import annotations

import datetime
import itertools
import time
from collections.abc import Iterator

import pytest

from tests.e2e.canary_env import (
    Cluster,
    Operator,
    api_client,
    condition,
    running_operator,
    scratch_namespace,
    tracks,
    wait_for,
)
from tests.e2e.conftest import kubectl
from tests.integration.prometheus_env import PROMETHEUS

pytestmark = [
    pytest.mark.skipif(PROMETHEUS is None, reason="prometheus is installed by `make install`"),
    pytest.mark.usefixtures("pods_become_ready"),  # pods on loopback IPs: the fake kubelet of shared/realk8s
]
RESYNC = 4.0
CANARY = "e2e.modeldeploy.io/canary"
V2 = {"name": "simple", "storageUri": "s3://bucket/simple", "version": 2}


def epoch(rfc3339: str) -> float:
    return datetime.datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).timestamp()


@pytest.fixture(scope="module")
def canary_cluster(crd_installed: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cluster, Operator]]:
    with scratch_namespace("md-canary-e2e") as ns:
        canaries = {"promote": ({}, True), "failing": ({"MODELSERVE_FAULT_FAILURE_RATIO": "0.2"}, True),
                    "idle": ({}, False)}  # fmt: skip
        with (
            tracks(tmp_path_factory.mktemp("tracks"), ns, canaries) as url,
            running_operator([ns], resync=RESYNC, prometheus_url=url) as operator,
        ):
            yield Cluster(api_client(), ns), operator


def canary_reasons(cluster: Cluster, name: str) -> dict[str, int]:
    return {k: v for k, v in cluster.events(name).items() if k.startswith("Canary")}


def test_promotion_transitions_stable_loss_and_full_rollout(canary_cluster: tuple[Cluster, Operator]) -> None:
    cluster, operator = canary_cluster
    name = "promote"
    rollout = {"strategy": "Canary", "steps": [25, 50], "interval": "3s", "minRequestCount": 5, "failureLimit": 2,
               "inconclusiveLimit": 3, "maxErrorRate": 0.05}  # fmt: skip
    promotions = operator.metric("modeldeploy_canary_promotions_total")
    cluster.apply(name, replicas=4, rollout=rollout)
    wait_for(lambda: cluster.status(name).get("phase") == "Succeeded", what="v1 Ready", timeout=60)
    time.sleep(RESYNC * 1.5)
    assert canary_reasons(cluster, name) == {}, "a deployment that never had a canary gets no canary event"
    assert operator.metric("modeldeploy_canary_promotions_total") == promotions
    v1 = cluster.status(name)["revision"]
    (first,) = cluster.revisions(name)
    assert first["revision"] == 1 and first["metadata"]["labels"]["modeldeploy.io/revision"] == v1

    cluster.apply(name, replicas=4, rollout=rollout, model=V2)
    wait_for(lambda: cluster.deployment(f"{name}-canary"), what="canary Deployment")
    # The stable Deployment is lost mid-canary: it comes back with the stable revision.
    kubectl("delete", "deployment", name, "-n", cluster.ns, "--wait=false")
    back = wait_for(
        lambda: (d := cluster.deployment(name)) and not d["metadata"].get("deletionTimestamp") and d, what="stable back"
    )
    assert back["spec"]["template"]["metadata"]["labels"]["modeldeploy.io/revision"] == v1
    st = cluster.status(name)
    assert st["phase"] in ("Progressing", "Promoting") and st["canary"]["revision"] != v1
    assert st["stableRevision"] == v1

    # Promoting lasts until the stable has rolled out v2 on all 4 pods; only then is the canary removed.
    samples: list[tuple[str | None, bool, dict]] = []

    def canary_gone() -> bool:
        phase = cluster.status(name).get("phase")
        stable = cluster.deployment(name) or {}
        samples.append((phase, cluster.deployment(f"{name}-canary") is not None, stable))
        return samples[-1][1] is False and phase == "Succeeded"

    wait_for(canary_gone, timeout=90, what="promotion")
    promoting = [s for s in samples if s[0] == "Promoting"]
    assert promoting, "Promoting was observed"
    assert any(s[2].get("status", {}).get("updatedReplicas", 0) < 4 for s in promoting), (
        "Promoting lasted while the stable rolled out"
    )
    for _phase, canary_present, stable in samples:
        if not canary_present:
            st = stable["status"]
            assert stable["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/version"] == "2"
            assert st.get("observedGeneration") == stable["metadata"]["generation"]
            assert st.get("updatedReplicas") == st.get("replicas") == st.get("readyReplicas") == 4, st
    final = cluster.status(name)
    assert final.get("canary") is None and final["stableRevision"] == final["revision"] != v1
    revisions = sorted(cluster.revisions(name), key=lambda r: r["revision"])
    assert [r["metadata"]["labels"]["modeldeploy.io/revision"] for r in revisions] == [v1, final["revision"]]

    time.sleep(RESYNC * 2)  # resyncs and child events add nothing
    reasons = canary_reasons(cluster, name)
    assert reasons == {"CanaryProgressing": 2, "CanaryPromoting": 1, "CanarySucceeded": 1}, reasons
    assert operator.metric("modeldeploy_canary_promotions_total") == promotions + 1


def test_analyses_one_interval_apart_then_a_paused_canary_writes_nothing_then_abort(
    canary_cluster: tuple[Cluster, Operator],
) -> None:
    cluster, operator = canary_cluster
    name = "idle"
    rollout = {"strategy": "Canary", "steps": [50], "interval": "3s", "minRequestCount": 5, "inconclusiveLimit": 3}
    rollbacks = operator.metric("modeldeploy_canary_rollbacks_total")
    cluster.apply(name, replicas=2, rollout=rollout)
    wait_for(lambda: cluster.status(name).get("phase") == "Succeeded", what="v1 Ready")
    cluster.apply(name, replicas=2, rollout=rollout, model=V2)
    times: list[str] = []

    def paused() -> bool:
        st = cluster.status(name)
        analysed = [a.get("time") for a in (st.get("canary") or {}).get("lastAnalysis", [])]
        if analysed and analysed[0] and (not times or times[-1] != analysed[0]):
            times.append(analysed[0])
        return st.get("phase") == "Paused"

    wait_for(paused, timeout=60, what="paused after inconclusive analyses")
    assert len(times) == 3, times
    gaps = [epoch(b) - epoch(a) for a, b in itertools.pairwise(times)]
    assert all(3 <= gap <= 4 for gap in gaps), f"one analysis per 3 s interval: {times}"
    assert "inconclusive" in condition(cluster.status(name), "Progressing")["message"]

    before = cluster.md(name)
    time.sleep(3 * 3)  # three intervals, two resyncs
    after = cluster.md(name)
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"], "no writes while paused"
    assert after["status"] == before["status"]

    kubectl("annotate", "md", name, "-n", cluster.ns, "modeldeploy.io/rollout=abort", "--overwrite")
    started = time.monotonic()
    wait_for(lambda: cluster.deployment(f"{name}-canary") is None, timeout=5, what="canary Deployment gone")
    assert time.monotonic() - started <= 2.0, "a rollback removes the canary at once"
    wait_for(lambda: cluster.status(name)["phase"] == "RolledBack", timeout=2, what="RolledBack")
    time.sleep(RESYNC * 2)
    assert canary_reasons(cluster, name) == {"CanaryProgressing": 1, "CanaryPaused": 1, "CanaryRolledBack": 1}
    assert operator.metric("modeldeploy_canary_rollbacks_total") == rollbacks + 1


def test_failing_canary_rolls_back_once_and_at_once(canary_cluster: tuple[Cluster, Operator]) -> None:
    cluster, operator = canary_cluster
    name = "failing"
    rollout = {"strategy": "Canary", "steps": [50], "interval": "3s", "minRequestCount": 5, "failureLimit": 2,
               "maxErrorRate": 0.02}  # fmt: skip
    rollbacks = operator.metric("modeldeploy_canary_rollbacks_total")
    cluster.apply(name, replicas=2, rollout=rollout)
    wait_for(lambda: cluster.status(name).get("phase") == "Succeeded", what="v1 Ready")
    cluster.apply(name, replicas=2, rollout=rollout, model=V2)
    first = wait_for(lambda: (cluster.status(name).get("canary") or {}).get("failures") == 1 and cluster.status(name),
                     timeout=40, what="first failure")  # fmt: skip
    failed_at = epoch(first["canary"]["lastAnalysis"][0]["time"])
    st = wait_for(lambda: cluster.status(name).get("phase") == "RolledBack" and cluster.status(name), timeout=20)
    rolled_back_at = epoch(condition(st, "Degraded")["lastTransitionTime"])
    assert 3 <= rolled_back_at - failed_at <= 4, "failureLimit counts whole intervals"
    assert "error-rate=" in condition(st, "Degraded")["message"]
    wait_for(lambda: cluster.deployment(f"{name}-canary") is None, timeout=5, what="canary gone")
    assert time.time() - rolled_back_at <= 3.0, "canary removed within 2 s of the decision (1 s stamp granularity)"
    time.sleep(RESYNC * 2)
    assert canary_reasons(cluster, name) == {"CanaryProgressing": 1, "CanaryRolledBack": 1}
    assert operator.metric("modeldeploy_canary_rollbacks_total") == rollbacks + 1


@pytest.fixture(scope="module")
def slow_resync_cluster(crd_installed: None) -> Iterator[tuple[Cluster, Cluster]]:
    """An operator whose resync (10 min) never runs during the test: status must move by events."""
    with (
        scratch_namespace("md-ready-e2e") as ns,
        scratch_namespace("md-quota-e2e") as quota_ns,
        running_operator([ns, quota_ns], resync=600),
    ):
        client_ = api_client()
        yield Cluster(client_, ns), Cluster(client_, quota_ns)


def test_ready_follows_the_pods_within_two_seconds(slow_resync_cluster: tuple[Cluster, Cluster]) -> None:
    cluster, _ = slow_resync_cluster
    name = "prompt"
    cluster.apply(name, replicas=3)
    wait_for(lambda: condition(cluster.status(name), "Ready").get("status") == "True", timeout=30, what="Ready")
    seen = time.time()
    pods = cluster.pods(f"modeldeploy.io/deployment={name}")
    ready_at = max(epoch(condition(p["status"], "Ready")["lastTransitionTime"]) for p in pods)
    assert len(pods) == 3
    assert seen - ready_at <= 3.0, f"Ready {seen - ready_at:.1f} s after the last pod (2 s + 1 s stamp granularity)"
    assert cluster.status(name)["readyReplicas"] == 3
    kubectl("scale", "deployment", name, "-n", cluster.ns, "--replicas=5")  # drift: the operator undoes it
    kubectl("apply", "--server-side", "--field-manager=e2e-user", "-n", cluster.ns, "-f", "-",
            input=f"apiVersion: modeldeploy.io/v1alpha1\nkind: ModelDeployment\nmetadata: {{name: {name}}}\n"
                  "spec: {model: {name: simple, storageUri: s3://bucket/simple}, replicas: 4}\n")  # fmt: skip
    wait_for(lambda: cluster.status(name).get("readyReplicas") == 4 and condition(cluster.status(name), "Ready")
             .get("status") == "True", timeout=20, what="4 ready")  # fmt: skip


def test_refused_apply_shows_apply_failed_from_the_first_failure(slow_resync_cluster: tuple[Cluster, Cluster]) -> None:
    _, cluster = slow_resync_cluster
    quota = "apiVersion: v1\nkind: ResourceQuota\nmetadata: {name: no-services}\nspec: {hard: {services: '0'}}\n"
    kubectl("apply", "-n", cluster.ns, "-f", "-", input=quota)
    cluster.apply("refused", replicas=1)
    st = wait_for(lambda: condition(cluster.status("refused"), "Ready").get("reason") == "ApplyFailed"
                  and cluster.status("refused"), timeout=20, what="ApplyFailed")  # fmt: skip
    ready = condition(st, "Ready")
    assert ready["status"] == "False"
    assert "quota" in ready["message"] and "failed 1 time" in ready["message"], ready["message"]
