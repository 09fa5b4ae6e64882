"""Rollout planning and rendering a plan: tracks, replicas, weights, the Gateway API route."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from modeldeploy import api, canary, names, render, rollout
from tests.k8s_schemas import assert_valid_kubernetes_object

SETTINGS = render.RenderSettings()


def spec(version: int = 1, **extra: Any) -> api.ModelDeploymentSpec:
    return api.ModelDeploymentSpec.model_validate(
        {"model": {"name": "m", "storageUri": "s3://b/m", "version": version}, **extra}
    )


def md_of(s: api.ModelDeploymentSpec) -> api.ModelDeployment:
    return api.ModelDeployment(
        metadata=api.ObjectMeta(name="fraud", namespace="ml", uid="0b5e6f3a-6d2c-4d3e-9a57-1f0c2f4b8e11"), spec=s
    )


def plan_for(
    new: api.ModelDeploymentSpec, old: api.ModelDeploymentSpec | None, state=None, **kw: Any
) -> rollout.RolloutPlan:
    revision = names.revision_of(new, SETTINGS)
    return rollout.plan(new, SETTINGS, stable_spec=old, state=state, state_revision=revision if state else None,
                        rejected_revision=kw.pop("rejected", None), **kw)  # fmt: skip


def test_first_deployment_and_unchanged_revision_have_no_canary() -> None:
    assert plan_for(spec(replicas=3), None).canary is None
    same = plan_for(spec(replicas=5), spec(replicas=3))
    assert same.canary is None and same.stable.replicas == 5, "a scale change is not a new revision"


def test_new_revision_starts_a_canary_at_the_first_step() -> None:
    p = plan_for(spec(2, replicas=4), spec(1, replicas=4))
    assert p.canary is not None and p.weight == 10 and p.state == canary.CanaryState()
    assert p.stable.spec.model.version == 1 and p.canary.spec.model.version == 2
    assert (p.stable.replicas, p.canary.replicas) == canary.apportion(4, 10)


def test_rolling_update_strategy_skips_the_canary() -> None:
    p = plan_for(spec(2, rollout={"strategy": "RollingUpdate"}), spec(1))
    assert p.canary is None and p.stable.spec.model.version == 2


def test_rejected_revision_is_not_retried() -> None:
    new = spec(2, replicas=2)
    p = plan_for(new, spec(1, replicas=2), rejected=names.revision_of(new, SETTINGS))
    assert p.canary is None and p.stable.spec.model.version == 1 and p.weight == 0


def test_promotion_and_rollback_plans() -> None:
    promoting = plan_for(spec(2, replicas=3), spec(1, replicas=3), state=canary.CanaryState(phase="Promoting", step=3))
    assert promoting.stable.spec.model.version == 2 and promoting.weight == 100 and promoting.canary is not None
    done = plan_for(spec(2, replicas=3), spec(1, replicas=3), state=canary.CanaryState(phase="Succeeded", step=3))
    assert done.canary is None and done.stable.spec.model.version == 2
    back = plan_for(
        spec(2, replicas=3), spec(1, replicas=3), state=canary.CanaryState(phase="RolledBack", reason="error-rate")
    )
    assert back.canary is None and back.stable.spec.model.version == 1 and back.stable.replicas == 3


def test_autoscaled_canary_is_sized_from_the_stable_live_replicas() -> None:
    scaled = {"minReplicas": 2, "maxReplicas": 20, "targetCPUUtilization": 60}
    p = plan_for(spec(2, autoscaling=scaled), spec(1, autoscaling=scaled), live_stable_replicas=10,
                 state=canary.CanaryState(step=1))  # fmt: skip
    assert p.weight == 25 and p.canary is not None
    assert p.stable.replicas is None, "the HPA keeps owning the stable's replica count"
    assert p.canary.replicas == 3 and abs(3 / (10 + 3) - 0.25) < 0.05


@given(step=st.integers(0, 2), replicas=st.integers(1, 12))
def test_rendered_plan_is_valid_and_labels_tracks(step: int, replicas: int) -> None:
    new, old = spec(2, replicas=replicas), spec(1, replicas=replicas)
    p = plan_for(new, old, state=canary.CanaryState(step=step))
    objects = render.render(md_of(new), SETTINGS, p)
    deployments = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Deployment"}
    assert set(deployments) == {"fraud", "fraud-canary"}
    for obj in objects:
        assert_valid_kubernetes_object(obj)
    stable, can = deployments["fraud"], deployments["fraud-canary"]
    assert stable["spec"]["template"]["metadata"]["labels"][names.LABEL_TRACK] == "stable"
    assert can["spec"]["template"]["metadata"]["labels"][names.LABEL_TRACK] == "canary"
    assert rollout.stable_spec_of(stable) == old, "the stable Deployment carries the spec it runs"
    assert stable["spec"]["replicas"] + can["spec"]["replicas"] >= replicas


def test_gateway_mode_renders_weighted_route_and_track_services() -> None:
    new = spec(2, replicas=4, rollout={"gateway": {"name": "public", "namespace": "gw", "routeKind": "GRPCRoute"}})
    p = plan_for(new, spec(1, replicas=4, rollout={"gateway": {"name": "public", "namespace": "gw", "routeKind": "GRPCRoute"}}),
                 state=canary.CanaryState(step=1))  # fmt: skip
    objects = render.render(md_of(new), SETTINGS, p)
    route = next(o for o in objects if o["kind"] == "GRPCRoute")
    assert route["apiVersion"] == "gateway.networking.k8s.io/v1"
    assert route["spec"]["parentRefs"] == [
        {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "public", "namespace": "gw"}
    ]
    assert [(b["name"], b["port"], b["weight"]) for b in route["spec"]["rules"][0]["backendRefs"]] == [
        ("fraud-stable", 8001, 75), ("fraud-canary", 8001, 25)]  # fmt: skip
    services = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Service"}
    assert services["fraud-canary"]["spec"]["selector"][names.LABEL_TRACK] == "canary"
    assert p.stable.replicas == 4, "with exact weights from the route the stable keeps all its pods"


def test_unreadable_spec_annotation_is_ignored() -> None:
    assert rollout.stable_spec_of({"metadata": {"annotations": {names.SPEC_ANNOTATION: "{not json"}}}) is None
    assert rollout.stable_spec_of(None) is None


def test_promoting_holds_even_when_the_stable_already_runs_the_new_revision() -> None:
    new = spec(2, replicas=3)
    p = plan_for(new, new, state=canary.CanaryState(phase="Promoting", step=1))
    assert p.canary is not None and p.weight == 100, "the canary stays until the stable has rolled out"
    assert plan_for(new, new).canary is None
