"""One reconcile of one ModelDeployment: render, apply, prune, compute the status.

Called by the kopf handlers (create, update, resume, periodic resync, a child deleted).
The new status is returned, not written: the handlers hand it to kopf's own patch (one
write after the handler, to the status subresource), the resync loop writes it itself.
Raises `api.SpecError` for an invalid spec and `kube.KubeError` for API failures; the
handlers turn those into kopf's permanent and temporary errors.
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import kopf

from modeldeploy import analysis, api, render, rollout, status
from modeldeploy.kube import KubeClient, ObjectRef
from modeldeploy.prometheus import MetricsProvider
from modeldeploy.settings import OperatorSettings

log = logging.getLogger(__name__)

# One reconcile at a time per ModelDeployment (timers, child events and spec changes race).
_locks: defaultdict[str, threading.Lock] = defaultdict(threading.Lock)
# The status each ModelDeployment was last given. Only the operator writes status, so this is
# never older than what a watched body carries, and often newer: a second reconcile right
# after the first must not decide from the snapshot the first already moved past.
_last_status: dict[str, dict[str, Any]] = {}


def forget(uid: str | None) -> None:
    """Drop what is kept for a deleted ModelDeployment."""
    if uid:
        _last_status.pop(uid, None)
        _locks.pop(uid, None)


def _freshest(observed: dict[str, Any], remembered: dict[str, Any] | None) -> dict[str, Any]:
    if remembered is None:
        return observed
    if (remembered.get("observedGeneration") or 0) < (observed.get("observedGeneration") or 0):
        return observed
    return remembered


@dataclass
class Outcome:
    applied: list[ObjectRef] = field(default_factory=list)
    pruned: list[ObjectRef] = field(default_factory=list)
    status: dict[str, Any] = field(default_factory=dict)
    status_changed: bool = False
    scaled: tuple[int, int] | None = None  # (before, after) ready replicas, when they changed
    rollout: tuple[str | None, str | None] | None = None  # canary phase (before, after)
    analysis: str | None = None  # the outcome of the canary analysis this reconcile ran, if any


def parse_body(body: dict[str, Any]) -> api.ModelDeployment:
    """The ModelDeployment in a watched body; SpecError names the field when it is invalid."""
    meta = body.get("metadata", {})
    return api.parse_model_deployment(
        {
            "apiVersion": api.API_VERSION,
            "kind": api.KIND,
            "metadata": {
                "name": meta.get("name"),
                "namespace": meta.get("namespace") or "default",
                "uid": meta.get("uid"),
                "generation": meta.get("generation"),
                "labels": meta.get("labels") or {},
                "annotations": meta.get("annotations") or {},
            },
            "spec": body.get("spec"),
        }
    )


def managed_refs(md: api.ModelDeployment) -> list[ObjectRef]:
    """Every child the operator may have made for this ModelDeployment."""
    ns, name = md.metadata.namespace, md.metadata.name
    return [
        ObjectRef("Deployment", ns, render.workload_name(md, "stable")),
        ObjectRef("Deployment", ns, render.workload_name(md, "canary")),
        ObjectRef("Service", ns, name),
        ObjectRef("Service", ns, f"{name}-stable"),
        ObjectRef("Service", ns, f"{name}-canary"),
        ObjectRef("HTTPRoute", ns, name),
        ObjectRef("GRPCRoute", ns, name),
        ObjectRef("HorizontalPodAutoscaler", ns, name),
        ObjectRef("PodDisruptionBudget", ns, name),
    ]


def _owned_by(obj: dict[str, Any], uid: str | None) -> bool:
    return any(ref.get("uid") == uid for ref in obj.get("metadata", {}).get("ownerReferences", []))


def record_invalid_spec(kube: KubeClient, body: dict[str, Any], error: api.SpecError) -> dict[str, Any]:
    meta = body["metadata"]
    new_status = status.failed_status(
        body.get("status"),
        generation=meta.get("generation"),
        reason="InvalidSpec",
        message="; ".join(error.problems),
        now=status.now_rfc3339(),
    )
    kube.patch_status(meta.get("namespace") or "default", meta["name"], new_status)
    return new_status


def reconcile(
    body: dict[str, Any],
    kube: KubeClient,
    settings: OperatorSettings,
    *,
    created: bool = False,
    provider: MetricsProvider | None = None,
) -> Outcome:
    """`created`: the ModelDeployment is new, so its children are created and nothing is pruned.
    `provider`: where canary analyses run; without one a canary waits (commands still act)."""
    md = parse_body(body)
    with _locks[md.metadata.uid or f"{md.metadata.namespace}/{md.metadata.name}"]:
        return _reconcile_locked(body, md, kube, settings, created, provider)


def _plan(
    md: api.ModelDeployment, kube: KubeClient, settings: OperatorSettings, previous: dict[str, Any], created: bool
) -> rollout.RolloutPlan | None:
    if created or md.spec.rollout.strategy != "Canary":
        return None
    live = kube.get(ObjectRef("Deployment", md.metadata.namespace, render.workload_name(md, "stable")))
    state, state_revision, _ = analysis.state_from_status(previous)
    return rollout.plan(
        md.spec,
        settings.render,
        stable_spec=rollout.stable_spec_of(live),
        state=state,
        state_revision=state_revision,
        rejected_revision=previous.get("rejectedRevision"),
        live_stable_replicas=(live or {}).get("spec", {}).get("replicas"),
    )


def _reconcile_locked(
    body: dict[str, Any],
    md: api.ModelDeployment,
    kube: KubeClient,
    settings: OperatorSettings,
    created: bool,
    provider: MetricsProvider | None,
) -> Outcome:
    outcome = Outcome()
    observed = body.get("status") or {}
    key = md.metadata.uid or f"{md.metadata.namespace}/{md.metadata.name}"
    previous = _freshest(observed, _last_status.get(key))
    plan = _plan(md, kube, settings, previous, created)
    objects = render.render(md, settings.render, plan)
    kopf.adopt(objects, owner=body)
    results: dict[ObjectRef, dict[str, Any]] = {}
    for obj in objects:
        ref = ObjectRef.of(obj)
        results[ref] = kube.apply(obj, probably_new=created)
        outcome.applied.append(ref)
    for ref in managed_refs(md):
        if created or ref in results:
            continue
        existing = kube.get(ref)
        if existing is not None and _owned_by(existing, md.metadata.uid) and kube.delete(ref):
            outcome.pruned.append(ref)
    stable_ref = ObjectRef("Deployment", md.metadata.namespace, render.workload_name(md, "stable"))
    workload = status.workload_state(results[stable_ref])
    url, grpc_url = render.service_urls(md)
    outcome.status = status.reconciled_status(
        previous,
        generation=md.metadata.generation,
        revision=render.revision_of(md.spec, settings.render),
        workload=workload,
        url=url,
        grpc_url=grpc_url,
        now=status.now_rfc3339(),
    )
    if plan is not None:
        fields, outcome.analysis = _rollout_status(
            md, plan, previous, results, outcome.status, provider, workload, settings.render
        )
        outcome.status.update(fields)
        outcome.rollout = (plan.state.phase if plan.state else None, outcome.status.get("phase"))
    if previous.get("readyReplicas") is not None and previous.get("readyReplicas") != workload.ready:
        outcome.scaled = (int(previous["readyReplicas"]), workload.ready)
    outcome.status_changed = any(observed.get(field) != value for field, value in outcome.status.items())
    _last_status[key] = {**previous, **outcome.status}
    return outcome


def _rollout_status(
    md: api.ModelDeployment,
    plan: rollout.RolloutPlan,
    previous: dict[str, Any],
    results: dict[ObjectRef, dict[str, Any]],
    base: dict[str, Any],
    provider: MetricsProvider | None,
    workload: status.WorkloadState,
    render_settings: render.RenderSettings,
) -> tuple[dict[str, Any], str | None]:
    """Status fields of a canary rollout, advancing it by one tick when one runs; and the
    outcome of the analysis that tick ran, if any."""
    now = status.now_rfc3339()
    generation = md.metadata.generation
    fields: dict[str, Any] = {"stableRevision": plan.stable.revision}
    if plan.rejected:
        keep = [c for c in previous.get("conditions", []) if c.get("type") == status.DEGRADED]
        conditions = [c for c in base["conditions"] if c.get("type") != status.DEGRADED] + keep
        return {**fields, "phase": "RolledBack", "conditions": conditions}, None
    if plan.state is None:
        return ({**fields, "canary": None} if previous.get("canary") else fields), None
    canary_ref = ObjectRef("Deployment", md.metadata.namespace, render.workload_name(md, "canary"))
    if plan.state.phase == "Promoting":
        ready = workload.is_ready
    else:
        ready = status.workload_state(results.get(canary_ref)).is_ready
    new, rollout_fields, analysed = analysis.advance(md, plan, previous, canary_ready=ready, provider=provider, now=now)
    analysed_value = analysed.value if analysed is not None else None
    fields.update(rollout_fields)
    if new.phase in analysis.SETTLED:
        revision = plan.canary.revision if plan.canary else render.revision_of(md.spec, render_settings)
        fields.update(analysis.settled_fields(new, revision, generation, base["conditions"], now))
        return fields, analysed_value
    message = f"{plan.reason}: {new.reason}" if new.reason else plan.reason
    conditions = status.set_condition(base["conditions"], status.PROGRESSING, True, "Canary", message, generation, now)
    return {**fields, "conditions": conditions}, analysed_value
