"""Rollout planning: which spec each track runs, with how many pods, at what traffic weight.

Pure: the operator passes in what it observed (the spec the stable Deployment runs, the
canary state from status, the stable's live replica count under an HPA) and renders the
plan that comes out. The spec the stable runs comes from the revision history
(`modeldeploy.history`); the stable Deployment also carries it in its `modeldeploy.io/spec`
annotation, read only when there is no history yet.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from modeldeploy import api, canary, names


@dataclass(frozen=True)
class TrackPlan:
    spec: api.ModelDeploymentSpec
    revision: str
    replicas: int | None  # None: the HPA owns the count (stable, no canary running)


@dataclass(frozen=True)
class RolloutPlan:
    stable: TrackPlan
    canary: TrackPlan | None
    weight: int  # percent of traffic on the canary
    state: canary.CanaryState | None  # None: no canary for the desired revision
    reason: str
    rejected: bool = False  # the desired revision was rolled back before: the stable stays


def stable_spec_of(deployment: dict[str, Any] | None) -> api.ModelDeploymentSpec | None:
    """The spec a stable Deployment runs, from its annotation; None if absent or unreadable."""
    if not deployment:
        return None
    raw = deployment.get("metadata", {}).get("annotations", {}).get(names.SPEC_ANNOTATION)
    if not raw:
        return None
    try:
        return api.ModelDeploymentSpec.model_validate(json.loads(raw))
    except (ValueError, TypeError):
        return None


def _baseline(spec: api.ModelDeploymentSpec, live_stable_replicas: int | None) -> int:
    """Pods the model needs now: under an HPA the stable's current count, else the spec's."""
    if spec.autoscaling is not None and live_stable_replicas:
        return live_stable_replicas
    return max(spec.effective_replicas, 1)


def plan(
    spec: api.ModelDeploymentSpec,
    settings: names.ImageDefault,
    *,
    stable_spec: api.ModelDeploymentSpec | None,
    state: canary.CanaryState | None,
    state_revision: str | None,
    rejected_revision: str | None,
    live_stable_replicas: int | None = None,
) -> RolloutPlan:
    desired = names.revision_of(spec, settings)
    fixed = None if spec.autoscaling is not None else spec.effective_replicas

    def settled(reason: str) -> RolloutPlan:
        return RolloutPlan(TrackPlan(spec, desired, fixed), None, 0, None, reason)

    if stable_spec is None:
        return settled("first deployment: no canary")
    current = names.revision_of(stable_spec, settings)
    total = _baseline(spec, live_stable_replicas)
    if state is not None and state_revision == desired and state.phase == "Promoting":
        # Until the stable has fully rolled out the new revision, the canary keeps serving.
        return RolloutPlan(
            TrackPlan(spec, desired, fixed),
            TrackPlan(spec, desired, total),
            100,
            state,
            "stable takes the new revision",
        )
    if current == desired:
        return settled("stable runs the desired revision")
    if spec.rollout.strategy != "Canary":
        return settled(f"{spec.rollout.strategy}: the Deployment replaces the pods itself")
    stable_fixed = None if stable_spec.autoscaling is not None else total
    if desired == rejected_revision:
        return RolloutPlan(
            TrackPlan(stable_spec, current, stable_fixed), None, 0, None, "revision was rolled back; not retried", True
        )
    if state is None or state_revision != desired:
        state = canary.CanaryState()
    steps = list(spec.rollout.steps)
    if state.phase == "Succeeded":
        return settled("promoted")
    if state.phase == "RolledBack":
        return RolloutPlan(TrackPlan(stable_spec, current, stable_fixed), None, 0, state, state.reason or "rolled back")
    weight = state.weight(steps)
    stable_pods: int | None
    if spec.rollout.gateway is not None:
        # Exact weights come from the route: the canary needs only enough pods for its share.
        canary_pods = max(1, math.ceil(total * weight / 100))
        stable_pods = stable_fixed
    elif stable_spec.autoscaling is not None:
        # Never set replicas under an HPA: the canary is added on top, sized so that its share
        # of all pods is the step's weight.
        canary_pods = max(1, round(total * weight / max(1, 100 - weight)))
        stable_pods = None
    else:
        stable_pods, canary_pods = canary.apportion(total, weight)
    return RolloutPlan(
        TrackPlan(stable_spec, current, stable_pods),
        TrackPlan(spec, desired, canary_pods),
        weight,
        state,
        f"canary at step {state.step + 1} of {len(steps)}",
    )
