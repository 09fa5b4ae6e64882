"""kopf handlers: thin wrappers that call `reconcile` and translate its outcome.

Run with `kopf run -m modeldeploy.handlers` or `modeldeploy run`.

- create / update / resume: reconcile now;
- every ModelDeployment event keeps an in-memory index of live objects, which a single
  resync loop walks every `resync_seconds` (with jitter) to repair drift; no per-object
  daemon, so kopf adds no finalizer and deletion never waits for the operator;
- a serving Deployment deleted by someone else: reconcile its owner now (other children
  come back with the next resync).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from typing import Any

import kopf

from modeldeploy import api, reconcile
from modeldeploy.kube import KubeClient, KubeError
from modeldeploy.opmetrics import OperatorMetrics
from modeldeploy.prometheus import PrometheusProvider
from modeldeploy.settings import OperatorSettings

log = logging.getLogger("modeldeploy")
MD = (api.GROUP, api.VERSION, api.PLURAL)
MANAGED = {"app.kubernetes.io/managed-by": "modeldeploy-operator"}
# Watched for deletion: losing a Deployment stops serving, so it is restored at once.
# Services, HPAs and PDBs are restored by the resync loop: watching them too would make
# kopf keep a worker per object (~45 MiB per 1000 children, measured in bench/operator).
CHILD_RESOURCES = [("apps", "v1", "deployments")]


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    memo.settings = memo.get("settings") or OperatorSettings()
    memo.kube = memo.get("kube") or KubeClient.from_environment(memo.settings.field_manager)
    if memo.get("metrics") is None:
        memo.metrics = OperatorMetrics()
        if memo.settings.metrics_port:
            memo.metrics.serve(memo.settings.metrics_port)
    if "provider" not in memo:
        memo.provider = PrometheusProvider(memo.settings.prometheus_url)
    memo.known = {}
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="modeldeploy.io")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="modeldeploy.io", key="last-handled-configuration"
    )
    settings.posting.level = logging.INFO
    settings.execution.max_workers = memo.settings.max_workers
    if memo.settings.namespaces:
        # Namespaced installs get Roles only: no cluster-wide discovery of CRDs and namespaces.
        settings.scanning.disabled = True
    memo.resync_task = asyncio.create_task(_resync_loop(memo))
    memo.rollout_task = asyncio.create_task(_rollout_loop(memo))


@kopf.on.cleanup()
async def stop_resync(memo: kopf.Memo, **_: Any) -> None:
    for name in ("resync_task", "rollout_task"):
        task = memo.get(name)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


@kopf.on.create(*MD)
@kopf.on.update(*MD)
@kopf.on.resume(*MD)
def reconcile_handler(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, retry: int, reason: str, **_: Any) -> None:
    outcome = run_reconcile(dict(body), memo, retry=retry, created=reason == "create")
    if outcome.status_changed:
        patch.setdefault("status", {}).update(outcome.status)
    kopf.info(
        body, reason="Applied", message=f"{reason}: applied {', '.join(f'{r.kind}/{r.name}' for r in outcome.applied)}"
    )


@kopf.on.event(*MD)
async def track(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    key = (body.metadata.namespace, body.metadata.name)
    if type == "DELETED" or body.metadata.get("deletionTimestamp"):
        memo.known.pop(key, None)
        reconcile.forget(body.metadata.uid)
    else:
        memo.known[key] = dict(body)


def _owner_key(body: kopf.Body) -> tuple[str, str] | None:
    for ref in body.metadata.get("ownerReferences", []):
        if ref.get("kind") == api.KIND and ref.get("apiVersion", "").startswith(api.GROUP):
            return (body.metadata.namespace, ref["name"])
    return None


def child_deleted(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    if type != "DELETED":
        return
    key = _owner_key(body)
    owner = memo.known.get(key) if key else None
    if owner is None:
        return  # the owner is gone too: garbage collection, not drift
    with contextlib.suppress(kopf.PermanentError, kopf.TemporaryError):
        run_reconcile(owner, memo)
        kopf.info(
            owner,
            reason="Restored",
            message=f"{body.get('kind', 'object')}/{body.metadata.name} was deleted; re-created",
        )


for _group, _version, _plural in CHILD_RESOURCES:
    kopf.on.event(_group, _version, _plural, labels=MANAGED)(child_deleted)


def run_reconcile(body: dict[str, Any], memo: kopf.Memo, retry: int = 0, created: bool = False) -> reconcile.Outcome:
    """Reconcile one body; map errors to kopf's, record metrics and events."""
    with memo.metrics.reconcile() as result:
        try:
            outcome = reconcile.reconcile(
                body, memo.kube, memo.settings, created=created, provider=memo.get("provider")
            )
        except api.SpecError as exc:
            result["outcome"] = "invalid_spec"
            with contextlib.suppress(KubeError):
                reconcile.record_invalid_spec(memo.kube, body, exc)
            event(memo, body, "InvalidSpec", "; ".join(exc.problems), warning=True)
            raise kopf.PermanentError(f"invalid spec: {exc.problems[0]}") from None
        except KubeError as exc:
            if exc.transient:
                result["outcome"] = "transient_error"
                raise kopf.TemporaryError(f"Kubernetes API: {exc}", delay=_backoff(retry)) from None
            event(memo, body, "ApplyFailed", str(exc), warning=True)
            raise kopf.PermanentError(f"Kubernetes API refused: {exc}") from None
    if outcome.pruned:
        event(memo, body, "Pruned", f"deleted {', '.join(f'{r.kind}/{r.name}' for r in outcome.pruned)}")
    if outcome.analysis is not None:
        memo.metrics.analyses.labels(outcome.analysis).inc()
    if outcome.rollout is not None and outcome.rollout[0] != outcome.rollout[1]:
        before, after = outcome.rollout
        if after == "RolledBack":
            memo.metrics.rollbacks.inc()
        elif after == "Succeeded":
            memo.metrics.promotions.inc()
        canary_status = outcome.status.get("canary") or {}
        detail = f" at {canary_status['weight']}%" if canary_status else ""
        message = f"canary {before or 'started'} -> {after}{detail}"
        event(memo, body, f"Canary{after}", message, warning=after == "RolledBack")
    if outcome.scaled:
        event(memo, body, "Scaled", f"ready replicas {outcome.scaled[0]} -> {outcome.scaled[1]}")
    return outcome


def reconcile_and_write_status(body: dict[str, Any], memo: kopf.Memo) -> None:
    """Outside kopf's change handlers (resync, a deleted child): write the status ourselves."""
    outcome = run_reconcile(body, memo)
    if outcome.status_changed:
        meta = body["metadata"]
        memo.kube.patch_status(meta.get("namespace") or "default", meta["name"], outcome.status)


def event(memo: kopf.Memo, body: dict[str, Any], reason: str, message: str, *, warning: bool = False) -> None:
    """Post an Event: through kopf inside its handlers, through our client from our own loops."""
    try:
        (kopf.warn if warning else kopf.info)(body, reason=reason, message=message)
    except LookupError:  # outside kopf's handler context (resync and rollout loops)
        with contextlib.suppress(KubeError):
            memo.kube.post_event(body, "Warning" if warning else "Normal", reason, message)


def _backoff(retry: int) -> float:
    return min(60.0, 2.0 ** min(retry, 6)) * random.uniform(0.8, 1.2)


ACTIVE_PHASES = ("Progressing", "Paused", "Promoting")


async def _reconcile_in_background(body: dict[str, Any], memo: kopf.Memo, what: str) -> None:
    """A reconcile from our own loops: errors are logged; the next tick tries again."""
    try:
        await asyncio.to_thread(reconcile_and_write_status, body, memo)
    except (kopf.PermanentError, kopf.TemporaryError, KubeError) as exc:
        log.info("%s of %s: %s", what, body["metadata"].get("name"), exc)
    except Exception:
        log.exception("%s of %s failed", what, body["metadata"].get("name"))


async def _rollout_loop(memo: kopf.Memo) -> None:
    """Tick every running canary each second: readiness, analysis when due, commands."""
    while True:
        await asyncio.sleep(1.0)
        for body in list(memo.known.values()):
            current = body.get("status") or {}
            if current.get("canary") and current.get("phase") in ACTIVE_PHASES:
                await _reconcile_in_background(body, memo, "rollout tick")


async def _resync_loop(memo: kopf.Memo) -> None:
    """Re-apply every known ModelDeployment each period, spread over it, to undo drift."""
    while True:
        period = memo.settings.resync_seconds
        await asyncio.sleep(period * random.uniform(0.9, 1.1))
        bodies = list(memo.known.values())
        random.shuffle(bodies)
        spacing = period / max(1, len(bodies)) / 2
        for body in bodies:
            await _reconcile_in_background(body, memo, "resync")
            await asyncio.sleep(spacing)
