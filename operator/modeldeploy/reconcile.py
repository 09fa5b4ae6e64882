"""One reconcile of one ModelDeployment: decide the canary, render, apply, prune, compute status.

Called by the kopf handlers (create, update, resume, periodic resync, a child changed or
deleted, a canary analysis due). Clients and the per-object memory come in as parameters;
the new status is returned, not written: the handlers hand it to kopf's own patch (one
write after the handler, to the status subresource) or write it themselves, and only when
something in it changed. Raises `api.SpecError` for an invalid spec and `kube.KubeError`
for API failures; the handlers turn those into kopf's permanent and temporary errors.

Order inside one reconcile: the canary's decision (command, analysis when due, readiness)
comes first, so a rollback or promotion is applied in the same reconcile that decides it.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field, replace
from typing import Any

from modeldeploy import analysis, api, history, names, render, rollout, status
from modeldeploy.kube import KubeClient, ObjectRef
from modeldeploy.memory import Entry, Key, Memory
from modeldeploy.prometheus import MetricsProvider
from modeldeploy.rolloutstate import RolloutState
from modeldeploy.settings import OperatorSettings
from modeldeploy.status import PodFact

log = logging.getLogger(__name__)


@dataclass
class Outcome:
    applied: list[ObjectRef] = field(default_factory=list)
    pruned: list[ObjectRef] = field(default_factory=list)
    status: dict[str, Any] = field(default_factory=dict)
    status_changed: bool = False
    # A real canary transition (a new canary, another phase or step): (before, after).
    transition: tuple[RolloutState | None, RolloutState] | None = None
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
    """Every child the operator may have made for this ModelDeployment (pruned when not rendered)."""
    ns, name = md.metadata.namespace, md.metadata.name
    return [
        *(ObjectRef("Deployment", ns, names.workload_name(md, track)) for track in names.TRACKS),
        ObjectRef("Service", ns, name),
        *(ObjectRef("Service", ns, names.track_service_name(md, track)) for track in names.TRACKS),
        ObjectRef("HTTPRoute", ns, name),
        ObjectRef("GRPCRoute", ns, name),
        ObjectRef("HorizontalPodAutoscaler", ns, name),
        ObjectRef("ScaledObject", ns, name),
        ObjectRef("PodDisruptionBudget", ns, name),
        ObjectRef("PodMonitor", ns, name),
        ObjectRef("NetworkPolicy", ns, name),
    ]


def _changed(previous: dict[str, Any], new: dict[str, Any]) -> bool:
    return any(previous.get(key) != value for key, value in new.items())


def record_invalid_spec(kube: KubeClient, body: dict[str, Any], error: api.SpecError, memory: Memory) -> None:
    meta = body["metadata"]
    entry = memory.entry(body)
    previous = entry.freshest(body.get("status") or {})
    new_status = status.failed_status(
        previous,
        generation=meta.get("generation"),
        reason="InvalidSpec",
        message="; ".join(error.problems),
        now=status.now_rfc3339(),
    )
    if _changed(previous, new_status):
        kube.patch_status(meta.get("namespace") or "default", meta["name"], new_status)
    entry.remember(new_status, previous)


def record_apply_failed(kube: KubeClient, body: dict[str, Any], message: str, memory: Memory) -> int:
    """Count one more failed apply and show it in status from the first failure on; returns the count."""
    meta = body["metadata"]
    entry = memory.entry(body)
    entry.apply_failures += 1
    previous = entry.freshest(body.get("status") or {})
    new_status = status.apply_failed_status(
        previous, generation=meta.get("generation"), message=message, failures=entry.apply_failures,
        now=status.now_rfc3339(),
    )  # fmt: skip
    kube.patch_status(meta.get("namespace") or "default", meta["name"], new_status)
    entry.remember(new_status, previous)
    return entry.apply_failures


def reconcile(
    body: dict[str, Any],
    kube: KubeClient,
    settings: OperatorSettings,
    memory: Memory,
    *,
    created: bool = False,
    provider: MetricsProvider | None = None,
    trust_watch: bool = True,
) -> Outcome:
    """`created`: the ModelDeployment is new, so its children are created and nothing is pruned.
    `provider`: where canary analyses run; without one a canary waits (commands still act).
    `trust_watch`: read and skip children the watch shows unchanged, and trust the status this
    process last wrote. The resync passes False: it is the safety net for a watch that missed an
    event or a status write overtaken by an older one, so it re-applies every child (the answers
    are the live objects) and rewrites a status the server holds differently."""
    md = parse_body(body)
    entry = memory.entry(body)
    children = memory.children if trust_watch else {}
    with entry.lock:
        stable_pods = memory.pods_of(md.metadata.namespace, md.metadata.name, "stable")
        outcome = _reconcile_locked(body, md, kube, settings, entry, created, provider, children, stable_pods)
        if not trust_watch and _changed(body.get("status") or {}, outcome.status):
            # The server holds another status than the one this process last wrote (an older
            # write, e.g. kopf's own patch retried after ours, landed last): write it again.
            outcome.status_changed = True
        entry.apply_failures = 0
        return outcome


def _decide(
    md: api.ModelDeployment,
    kube: KubeClient,
    before: RolloutState | None,
    desired: str,
    live_stable: dict[str, Any] | None,
    provider: MetricsProvider | None,
    now: str,
) -> tuple[RolloutState, str | None]:
    """The canary for the desired revision after this reconcile's decision, and the outcome of the
    analysis it ran, if any. A new canary starts at the first step, with its pods not ready yet."""
    if before is None or before.revision != desired:
        return analysis.start(md, desired, provider), None
    live_canary = kube.get(ObjectRef("Deployment", md.metadata.namespace, names.workload_name(md, "canary")))
    stable_has_it = names.pod_revision(live_stable) == desired
    new, ran = analysis.advance(
        md,
        before,
        canary_ready=status.workload_state(live_canary).is_ready,
        stable_rolled_out=stable_has_it and status.workload_state(live_stable).rolled_out,
        provider=provider,
        now=now,
    )
    return new, ran.value if ran is not None else None


def _digest(obj: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def _unchanged_children(
    objects: list[dict[str, Any]], entry: Entry, children: dict[Key, dict[str, Any]]
) -> dict[ObjectRef, dict[str, Any]]:
    """Rendered Deployments whose live object (from the watch) is still the one this process last
    applied them as, unchanged since by anyone: re-applying them would change nothing. Any edit
    (drift) gives the live object a new resourceVersion, so it is applied again."""
    found = {}
    for obj in objects:
        ref = ObjectRef.of(obj)
        live = children.get((ref.namespace, ref.name)) if ref.kind == "Deployment" else None
        version = (live or {}).get("metadata", {}).get("resourceVersion")
        if live is not None and version and entry.applied_versions.get(ref) == (_digest(obj), version):
            found[ref] = live
    return found


def _reconcile_locked(
    body: dict[str, Any],
    md: api.ModelDeployment,
    kube: KubeClient,
    settings: OperatorSettings,
    entry: Entry,
    created: bool,
    provider: MetricsProvider | None,
    children: dict[Key, dict[str, Any]],
    stable_pods: list[PodFact],
) -> Outcome:
    """`children`: the watched child Deployments (empty where nothing watches them); `stable_pods`:
    the stable's watched pods (the Ready condition follows them where the Deployment's status lags)."""
    outcome = Outcome()
    previous = entry.freshest(body.get("status") or {})
    now = status.now_rfc3339()
    ns, generation = md.metadata.namespace, md.metadata.generation
    desired = names.revision_of(md.spec, settings.render)
    before = RolloutState.decode(previous)
    if created and not entry.history_loaded:
        entry.history_loaded = True  # a new object (a new uid) owns no revisions yet: no list
    stable = history.load(kube, md, entry, settings.render, read_annotation=not created)
    stable_ref = ObjectRef("Deployment", ns, names.workload_name(md, "stable"))
    canary_ref = ObjectRef("Deployment", ns, names.workload_name(md, "canary"))
    use_canary = stable is not None and md.spec.rollout.strategy == "Canary"

    # 1. Decide (a canary runs while the stable's revision is not the desired one).
    decision: RolloutState | None = None
    plan: rollout.RolloutPlan | None = None
    if stable is not None and use_canary:
        # Settled (no canary, the stable runs the desired revision): nothing reads the live stable.
        settled = before is None and stable.revision == desired
        live_stable = None if settled else kube.get(stable_ref)
        if stable.revision != desired and desired != previous.get("rejectedRevision"):
            decision, outcome.analysis = _decide(md, kube, before, desired, live_stable, provider, now)
        plan = rollout.plan(
            md.spec,
            settings.render,
            stable_spec=stable.spec,
            state=decision.machine if decision else None,
            state_revision=decision.revision if decision else None,
            rejected_revision=previous.get("rejectedRevision"),
            live_stable_replicas=(live_stable or {}).get("spec", {}).get("replicas"),
        )

    # 2. Apply what the decision needs; prune what it does not (a rolled-back canary at once).
    objects = render.render(md, settings.render, plan)
    refs = [ObjectRef.of(obj) for obj in objects]
    known = entry.applied  # None: this process has applied nothing for it yet
    entry.applied = (known or set()) | set(refs)  # still pruned later should this reconcile fail half-way
    unchanged = {} if created else _unchanged_children(objects, entry, children)
    to_apply = [obj for obj, ref in zip(objects, refs, strict=True) if ref not in unchanged]
    answers = kube.apply_all(to_apply, probably_new=created)
    results = {**unchanged, **{ObjectRef.of(obj): answer for obj, answer in zip(to_apply, answers, strict=True)}}
    for obj, answer in zip(to_apply, answers, strict=True):
        version = (answer.get("metadata") or {}).get("resourceVersion")
        if obj["kind"] == "Deployment" and version:
            entry.applied_versions[ObjectRef.of(obj)] = (_digest(obj), version)
    outcome.applied.extend(refs)
    # Prune: every child it may have made once per process (a former process may have made any),
    # then only what this process applied before and no longer renders (no reads on a resync).
    # A new object's first attempt has nothing to prune; a retried one may (its spec may have changed).
    candidates = managed_refs(md) if known is None else [r for r in managed_refs(md) if r in entry.applied]
    for ref in candidates:
        if (created and known is None) or ref in results:
            continue
        existing = kube.get(ref)
        if existing is not None and names.owned_by(existing, md) and kube.delete(ref):
            outcome.pruned.append(ref)
    entry.applied = set(results)
    stable_spec, stable_revision = (plan.stable.spec, plan.stable.revision) if plan else (md.spec, desired)
    if plan is None or plan.state is None or plan.state.phase != "Promoting":
        history.record(kube, md, entry, stable_spec, stable_revision, settings.revision_history_limit)
    if (
        decision is not None
        and decision.phase in ("Progressing", "Paused")
        and decision.step_started_at is None
        and status.workload_state(results.get(canary_ref)).is_ready
    ):
        decision = replace(decision, step_started_at=now)  # the step's clock runs from when the canary is ready

    # 3. Status.
    workload = status.workload_state(results[stable_ref], stable_pods)
    url, grpc_url = render.service_urls(md)
    new = status.reconciled_status(
        previous, generation=generation, revision=desired, workload=workload, url=url, grpc_url=grpc_url, now=now
    )
    new["stableRevision"] = stable_revision
    if decision is not None and decision.transition_from(before):
        outcome.transition = (before, decision)
    new.update(_rollout_fields(md, plan, decision, outcome.transition is not None, previous, new["conditions"], now))
    outcome.status = new
    outcome.status_changed = _changed(previous, new)
    entry.remember(new, previous)
    return outcome


def _rollout_fields(
    md: api.ModelDeployment,
    plan: rollout.RolloutPlan | None,
    decision: RolloutState | None,
    transitioned: bool,
    previous: dict[str, Any],
    conditions: list[dict[str, Any]],
    now: str,
) -> dict[str, Any]:
    """Status fields of the rollout: the canary block while one runs, the outcome once it ends.
    Conditions about the canary change only on a real transition."""
    generation = md.metadata.generation
    if plan is not None and plan.rejected:
        keep = [c for c in previous.get("conditions", []) if c.get("type") == status.DEGRADED]
        kept = [c for c in conditions if c.get("type") != status.DEGRADED] + keep
        return {"phase": "RolledBack", "conditions": kept, "canary": None}
    if decision is None or decision.phase == "Succeeded":
        return {"canary": None} if previous.get("canary") else {}
    if decision.phase == "RolledBack":
        return {
            "phase": "RolledBack",
            "rejectedRevision": decision.revision,
            "canary": None,
            "conditions": analysis.rolled_back_condition(decision, generation, conditions, now),
        }
    old = next((c for c in previous.get("conditions", []) if c.get("type") == status.PROGRESSING), None)
    if transitioned or old is None or old.get("reason") != "Canary":
        steps = list(md.spec.rollout.steps)
        step = min(decision.step, len(steps) - 1) + 1
        where = f"canary at step {step} of {len(steps)}, {decision.weight}% of traffic"
        if decision.phase == "Promoting":
            where = "stable takes the new revision"
        message = f"{where}: {decision.reason}" if decision.reason else where
        conditions = status.set_condition(conditions, status.PROGRESSING, True, "Canary", message, generation, now)
    else:
        conditions = [c for c in conditions if c.get("type") != status.PROGRESSING] + [old]
    return {"phase": decision.phase, "canary": decision.encode(), "conditions": conditions}


def refresh_status(
    body: dict[str, Any], child: dict[str, Any], settings: OperatorSettings, memory: Memory
) -> Outcome | None:
    """Status from a changed stable Deployment, without touching the API: None when a full reconcile
    is needed instead (a canary runs, the spec is not reconciled yet, the child runs another revision)."""
    md = parse_body(body)
    entry = memory.entry(body)
    with entry.lock:
        previous = entry.freshest(body.get("status") or {})
        desired = names.revision_of(md.spec, settings.render)
        if (
            previous.get("canary")
            or previous.get("observedGeneration") != md.metadata.generation
            or previous.get("revision") != desired
            or previous.get("stableRevision") not in (None, desired)
            or previous.get("rejectedRevision") == desired
            or names.pod_revision(child) != desired
        ):
            return None
        workload = status.workload_state(child, memory.pods_of(md.metadata.namespace, md.metadata.name, "stable"))
        url, grpc_url = render.service_urls(md)
        new = status.reconciled_status(
            previous, generation=md.metadata.generation, revision=desired, workload=workload, url=url,
            grpc_url=grpc_url, now=status.now_rfc3339(),
        )  # fmt: skip
        outcome = Outcome(status=new, status_changed=_changed(previous, new))
        entry.remember(new, previous)
        return outcome
