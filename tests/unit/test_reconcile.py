"""One reconcile in-process: an in-memory KubeClient and MetricsProvider, a controlled clock.

Create, a spec change that prunes, a new revision that starts a canary (and one whose metrics
provider is offline), an analysis that fails and rolls back, an apply the API server refuses,
an invalid spec, and (hypothesis) that after any sequence of specs exactly the rendered
children are left.
"""

from __future__ import annotations

import copy
import datetime
from typing import Any, cast

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modeldeploy import api, names, reconcile, render, status
from modeldeploy.kube import KubeClient, KubeError, ObjectRef
from modeldeploy.memory import Memory
from modeldeploy.settings import OperatorSettings
from tests.unit.fakes import FakeKube, FakeProvider

SETTINGS = OperatorSettings(metrics_port=0, liveness_endpoint=None)
UID = "3f1c2a9e-0000-4000-8000-000000000001"
T0 = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)


class Clock:
    def __init__(self) -> None:
        self.seconds = 0.0

    def __call__(self) -> str:
        return (T0 + datetime.timedelta(seconds=self.seconds)).isoformat().replace("+00:00", "Z")


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    now = Clock()
    monkeypatch.setattr(status, "now_rfc3339", now)
    return now


def body(generation: int = 1, version: int = 1, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": api.API_VERSION,
        "kind": api.KIND,
        "metadata": {"name": "fraud", "namespace": "ml", "uid": UID, "generation": generation, "labels": {"team": "a"}},
        "spec": {"model": {"name": "m", "storageUri": "s3://b/m", "version": version}, **spec},
    }


class Operator:
    """One operator process: its memory, the cluster it talks to, its metrics provider."""

    def __init__(self, kube: FakeKube | None = None, provider: FakeProvider | None = None) -> None:
        self.kube = kube or FakeKube()
        self.provider = provider
        self.memory = Memory()

    def reconcile(self, b: dict[str, Any], *, created: bool = False) -> reconcile.Outcome:
        return reconcile.reconcile(
            copy.deepcopy(b), cast(KubeClient, self.kube), SETTINGS, self.memory, created=created,
            provider=self.provider,
        )  # fmt: skip

    def status(self, b: dict[str, Any]) -> dict[str, Any]:
        return self.memory.status_of(b)


def condition(st_: dict[str, Any], kind: str) -> dict[str, Any]:
    return next(c for c in st_["conditions"] if c["type"] == kind)


def test_create_applies_owned_children_records_the_revision_and_reports_status(clock: Clock) -> None:
    op = Operator()
    b = body(replicas=2)
    outcome = op.reconcile(b, created=True)
    assert {(r.kind, r.name) for r in outcome.applied} == {
        ("Deployment", "fraud"), ("Service", "fraud"), ("PodDisruptionBudget", "fraud"),
    }  # fmt: skip
    assert outcome.pruned == [] and ("get", "Deployment", "fraud-canary") not in op.kube.calls, "nothing to prune"
    for ref in outcome.applied:
        meta = op.kube.objects[ref]["metadata"]
        assert meta["ownerReferences"] == [render.owner_reference(reconcile.parse_body(b))]
        assert meta["labels"]["team"] == "a" and meta["labels"][names.MANAGED_BY_LABEL] == names.MANAGED_BY
    [revision] = [o for ref, o in op.kube.objects.items() if ref.kind == "ControllerRevision"]
    assert revision["revision"] == 1 and revision["metadata"]["labels"][names.LABEL_DEPLOYMENT] == "fraud"
    assert names.owned_by(revision, reconcile.parse_body(b))
    st_ = outcome.status
    assert outcome.status_changed and st_["observedGeneration"] == 1
    assert condition(st_, status.READY)["status"] == "False", "no pod is ready yet"
    assert st_["url"].startswith(f"http://fraud.ml.svc.cluster.local:{names.HTTP_PORT}/")

    op.kube.set_ready("fraud")
    again = op.reconcile(b)
    assert condition(again.status, status.READY)["status"] == "True" and again.status["readyReplicas"] == 2


def test_spec_change_prunes_what_is_no_longer_rendered(clock: Clock) -> None:
    op = Operator()
    op.reconcile(body(autoscaling={"minReplicas": 2, "maxReplicas": 4, "targetCPUUtilization": 70}), created=True)
    assert op.kube.names("HorizontalPodAutoscaler") == {"fraud"} and op.kube.names("PodDisruptionBudget") == {"fraud"}
    outcome = op.reconcile(body(2, replicas=1))
    assert {(r.kind, r.name) for r in outcome.pruned} == {
        ("HorizontalPodAutoscaler", "fraud"),
        ("PodDisruptionBudget", "fraud"),
    }
    assert op.kube.names("HorizontalPodAutoscaler") == set() and op.kube.names("PodDisruptionBudget") == set()
    assert op.kube.objects[ObjectRef("Deployment", "ml", "fraud")]["spec"]["replicas"] == 1
    assert op.kube.names("ControllerRevision") == {next(iter(op.kube.names("ControllerRevision")))}, "same revision"


def test_a_new_process_prunes_only_what_this_model_deployment_owns(clock: Clock) -> None:
    kube = FakeKube()
    Operator(kube).reconcile(body(replicas=3), created=True)
    stranger = {"kind": "HorizontalPodAutoscaler", "metadata": {"name": "fraud", "namespace": "ml"}, "spec": {}}
    kube.objects[ObjectRef("HorizontalPodAutoscaler", "ml", "fraud")] = stranger  # made by someone else
    outcome = Operator(kube).reconcile(body(2, replicas=1))
    assert [(r.kind, r.name) for r in outcome.pruned] == [("PodDisruptionBudget", "fraud")]
    assert kube.names("HorizontalPodAutoscaler") == {"fraud"}


def start_canary(op: Operator, **rollout: Any) -> dict[str, Any]:
    spec = {"replicas": 4, "rollout": {"interval": "30s", "failureLimit": 1, **rollout}}
    op.reconcile(body(**spec), created=True)
    op.kube.set_ready("fraud")
    op.reconcile(body(**spec))
    return body(2, version=2, **spec)


def test_a_new_revision_starts_a_canary_beside_the_stable(clock: Clock) -> None:
    op = Operator(provider=FakeProvider())
    b = start_canary(op)
    outcome = op.reconcile(b)
    assert op.kube.names("Deployment") == {"fraud", "fraud-canary"}
    deployments = {n: op.kube.objects[ObjectRef("Deployment", "ml", n)] for n in ("fraud", "fraud-canary")}
    assert deployments["fraud"]["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/version"] == "1"
    assert deployments["fraud-canary"]["spec"]["template"]["metadata"]["labels"][names.LABEL_TRACK] == "canary"
    assert (deployments["fraud"]["spec"]["replicas"], deployments["fraud-canary"]["spec"]["replicas"]) == (3, 1)
    before, after = outcome.transition or (None, None)
    assert before is None and after is not None and (after.phase, after.weight) == ("Progressing", 10)
    assert outcome.status["phase"] == "Progressing" and outcome.status["canary"]["stepStartedAt"] is None
    assert condition(outcome.status, status.PROGRESSING)["reason"] == "Canary"
    assert outcome.analysis is None and op.provider is not None and op.provider.queries == []


def test_an_offline_provider_pauses_the_canary_when_it_starts(clock: Clock) -> None:
    op = Operator(provider=FakeProvider(online=False))
    outcome = op.reconcile(start_canary(op))
    assert outcome.status["phase"] == "Paused" and op.kube.names("Deployment") == {"fraud", "fraud-canary"}
    assert "metrics provider offline" in condition(outcome.status, status.PROGRESSING)["message"]
    assert outcome.transition is not None and outcome.transition[1].phase == "Paused"


def test_a_failed_analysis_rolls_back_at_once(clock: Clock) -> None:
    provider = FakeProvider()
    op = Operator(provider=provider)
    b = start_canary(op)
    op.reconcile(b)
    op.kube.set_ready("fraud-canary")
    ready = op.reconcile(b)
    assert ready.status["canary"]["stepStartedAt"] == clock(), "the step's clock runs from readiness"
    md = reconcile.parse_body(b)
    provider.answer(md, ready.status["canary"]["revision"], requests=500, error_rate=0.4, latency_ms=10)
    clock.seconds = 29
    assert op.reconcile(b).analysis is None, "not due before an interval"
    clock.seconds = 31
    outcome = op.reconcile(b)
    assert outcome.analysis == "Fail" and outcome.status["phase"] == "RolledBack"
    assert [(r.kind, r.name) for r in outcome.pruned] == [("Deployment", "fraud-canary")], "in the same reconcile"
    assert outcome.status["rejectedRevision"] == ready.status["canary"]["revision"]
    degraded = condition(outcome.status, status.DEGRADED)
    assert degraded["reason"] == "RolledBack" and "error-rate=0.4" in degraded["message"]
    stable = op.kube.objects[ObjectRef("Deployment", "ml", "fraud")]
    assert (
        stable["spec"]["replicas"] == 4
        and stable["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/version"] == "1"
    )
    assert op.reconcile(b).pruned == [] and op.kube.names("Deployment") == {"fraud"}, "the rejected revision stays out"


def test_an_apply_the_api_server_refuses_shows_in_status(clock: Clock) -> None:
    op = Operator()
    op.kube.fail_apply["Service"] = KubeError(422, 'Service "fraud" is invalid')
    b = body()
    with pytest.raises(KubeError) as info:
        op.reconcile(b, created=True)
    assert not info.value.transient
    assert reconcile.record_apply_failed(cast(KubeClient, op.kube), b, str(info.value), op.memory) == 1
    assert reconcile.record_apply_failed(cast(KubeClient, op.kube), b, str(info.value), op.memory) == 2
    written = op.kube.statuses[("ml", "fraud")]
    ready = condition(written, status.READY)
    assert ready["reason"] == "ApplyFailed" and "is invalid" in ready["message"] and "2 times" in ready["message"]
    del op.kube.fail_apply["Service"]
    outcome = op.reconcile(b)
    assert condition(outcome.status, status.READY)["reason"] != "ApplyFailed"
    assert op.memory.entry(b).apply_failures == 0


def test_an_invalid_spec_applies_nothing_and_names_the_field(clock: Clock) -> None:
    op = Operator()
    b = body(replicas=-1)
    with pytest.raises(api.SpecError) as info:
        op.reconcile(b, created=True)
    reconcile.record_invalid_spec(cast(KubeClient, op.kube), b, info.value, op.memory)
    assert op.kube.objects == {}
    ready = condition(op.kube.statuses[("ml", "fraud")], status.READY)
    assert ready["reason"] == "InvalidSpec" and ready["message"].startswith("spec.replicas:")


SPECS = st.fixed_dictionaries(
    {},
    optional={
        "replicas": st.integers(0, 4),
        "autoscaling": st.just({"minReplicas": 2, "maxReplicas": 5, "targetCPUUtilization": 60}),
        "monitoring": st.just({"podMonitor": True}),
        "security": st.just({"networkPolicy": {}}),
        "rollout": st.just({"strategy": "RollingUpdate", "gateway": {"name": "gw"}}),
    },
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(specs=st.lists(SPECS, min_size=1, max_size=4), restart=st.booleans())
def test_after_any_sequence_of_specs_exactly_the_rendered_children_are_left(
    clock: Clock, specs: list[dict[str, Any]], restart: bool
) -> None:
    kube = FakeKube()
    op = Operator(kube)
    for generation, spec in enumerate(specs, start=1):
        if restart and generation == len(specs):
            op = Operator(kube)
        try:
            b = body(generation, **spec)
            op.reconcile(b, created=generation == 1)
        except api.SpecError:
            continue
        rendered = {ObjectRef.of(o) for o in render.render(reconcile.parse_body(b), SETTINGS.render)}
        children = {ref for ref in kube.objects if ref.kind != "ControllerRevision"}
        assert children == rendered
