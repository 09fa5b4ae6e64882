"""kopf handlers: thin wrappers that call `reconcile` and translate its outcome.

Run with `kopf run -m modeldeploy.handlers` or `modeldeploy run`.

- create / update / resume: reconcile now (a `modeldeploy.io/rollout` command is an update);
- every ModelDeployment event keeps the per-object memory (`memo.memory`) current;
- a child Deployment changed: its status reaches the owner's status at once (mapped through
  owner references), on threads of its own (`child-status`), never behind kopf's workers;
  while a canary runs, or when a Deployment was deleted, the owner is reconciled in full (a
  deleted stable comes back with the stable revision);
- a stable pod's revision or readiness changed (no canary running): the owner's status follows
  the pods at once (mapped through their labels), before the Deployment controller reports them;
- a rollout loop reconciles a canary only when its next analysis is due: a waiting or paused
  canary costs nothing;
- a resync loop walks every known object each `resync_seconds` (with jitter) to repair drift;
  no per-object daemon, so kopf adds no finalizer and deletion never waits for the operator.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import random
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import kopf

from modeldeploy import analysis, api, kopfstorage, names, reconcile, resilience
from modeldeploy.kube import FANOUT_THREADS, KubeClient, KubeError
from modeldeploy.memory import Memory
from modeldeploy.opmetrics import OperatorMetrics
from modeldeploy.prometheus import PrometheusProvider
from modeldeploy.rolloutstate import RolloutState
from modeldeploy.settings import OperatorSettings

log = logging.getLogger("modeldeploy")
MD = (api.GROUP, api.VERSION, api.PLURAL)
MANAGED = names.MANAGED
# Deployments are watched: their status is the ModelDeployment's, and losing one stops serving.
# Services, HPAs and PDBs are restored by the resync loop: watching them too would make
# kopf keep a worker per object (~45 MiB per 1000 children, measured in bench/operator).
CHILD_RESOURCES = [("apps", "v1", "deployments")]
ROLLOUT_TICK_SECONDS = 0.5
CHILD_THREADS = 8  # child Deployment events (status refreshes), apart from kopf's reconcile workers
CHILD_RETRY_SECONDS = 0.1
resilience.install()  # kopf's watches restart instead of ending the process; its PATCHes retry a 409


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    memo.settings = memo.get("settings") or OperatorSettings()
    if memo.get("metrics") is None:
        memo.metrics = OperatorMetrics()
        if memo.settings.metrics_port:
            memo.metrics.serve(memo.settings.metrics_port)
    memo.kube = memo.get("kube") or KubeClient.from_environment(
        # One connection per thread that may call at once (kopf's workers, child events, apply
        # fan-out) and a few for the loops: fewer make threads open a TLS connection per call.
        memo.settings.field_manager,
        pool_size=memo.settings.max_workers + CHILD_THREADS + FANOUT_THREADS + 8,
    )
    memo.kube.on_request = memo.metrics.kube_request
    if "provider" not in memo:
        memo.provider = PrometheusProvider(memo.settings.prometheus_url)
    memo.memory = Memory()
    memo.child_pool = ThreadPoolExecutor(max_workers=CHILD_THREADS, thread_name_prefix="child-status")
    memo.command_tasks = set()  # keeps the background tasks of rollout commands referenced
    # Nothing of kopf's on the object while handlers succeed: a PATCH saved per create and spec change.
    settings.persistence.progress_storage = kopfstorage.FailureOnlyProgressStorage(prefix=api.GROUP)
    settings.persistence.diffbase_storage = kopfstorage.MemoryDiffBaseStorage(memo.memory)
    settings.posting.level = logging.INFO
    resilience.configure(settings)
    settings.execution.max_workers = memo.settings.max_workers
    # Only the operator's own Deployments reach kopf (filtered by the API server, not in kopf).
    managed = ",".join(f"{k}={v}" for k, v in MANAGED.items())
    settings.watching.label_selectors["apps", "deployments"] = managed
    settings.watching.label_selectors["v1", "pods"] = managed
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
    pool = memo.get("child_pool")
    if pool is not None:
        pool.shutdown(wait=False, cancel_futures=True)


@kopf.on.create(*MD)
@kopf.on.update(*MD)
@kopf.on.resume(*MD)
def reconcile_handler(body: kopf.Body, memo: kopf.Memo, reason: str, **_: Any) -> None:
    """The status is written here, under the object's lock, not left to kopf's patch after the
    handler: a child event's status write can then never be overtaken by an older one.
    An `Applied` Event marks a generation applied for the first time (not a restart's resume)."""
    seen = dict(body)
    generation = seen["metadata"].get("generation")
    first_time = (seen.get("status") or {}).get("observedGeneration") != generation
    try:
        outcome = reconcile_and_write_status(seen, memo, created=kopfstorage.is_new(seen, reason))
    except KubeError as exc:  # the status write itself failed
        raise kopf.TemporaryError(f"Kubernetes API: {exc}", delay=_backoff(1)) from None
    if first_time:
        applied = ", ".join(f"{r.kind}/{r.name}" for r in outcome.applied)
        kopf.info(body, reason="Applied", message=f"generation {generation}: applied {applied}")


@kopf.on.event(*MD)
async def track(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    if type == "DELETED" or body.metadata.get("deletionTimestamp"):
        memo.memory.forget(dict(body))
    else:
        memo.memory.seen(dict(body))
        # kopf leaves out annotations under its own prefix (modeldeploy.io/) when it diffs, so a
        # modeldeploy.io/rollout command is no update for it: act on it here, at once.
        entry = memo.memory.entry(dict(body))
        if not entry.command_pending and _command_pending(dict(body), memo.memory):
            entry.command_pending = True
            memo.command_tasks.add(asyncio.create_task(_run_command(dict(body), memo)))


def _command_pending(body: dict[str, Any], memory: Memory) -> bool:
    state = RolloutState.decode(memory.status_of(body))
    if state is None:
        return False
    try:
        return analysis.command_of(reconcile.parse_body(body), state) is not None
    except api.SpecError:
        return False


async def _run_command(body: dict[str, Any], memo: kopf.Memo) -> None:
    try:
        await _reconcile_in_background(body, memo, "rollout command")
    finally:
        memo.memory.entry(body).command_pending = False
        memo.command_tasks.discard(asyncio.current_task())


def _owner_key(child: dict[str, Any]) -> tuple[str, str] | None:
    meta = child.get("metadata", {})
    for ref in meta.get("ownerReferences") or []:
        if ref.get("kind") == api.KIND and ref.get("apiVersion", "").startswith(api.GROUP):
            return (meta.get("namespace") or "default", ref["name"])
    return None


async def child_changed(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """A child Deployment's event: its owner's status follows within the event's latency."""
    memo.memory.saw_child(dict(body), deleted=type == "DELETED")
    await _follow(type, dict(body), memo)


async def pod_changed(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """A pod's event: when a stable pod's revision or readiness changed, the owner's status follows
    at once, from the pods, not only once the Deployment controller reports them (rate-limited)."""
    workload = memo.memory.saw_pod(dict(body), deleted=type == "DELETED")
    if workload is None or workload[2] != "stable":
        return
    namespace, name, _ = workload
    owner = memo.memory.owner((namespace, name))
    stable = memo.memory.children.get((namespace, name))  # the stable Deployment has the owner's name
    if owner is None or stable is None or RolloutState.decode(memo.memory.status_of(owner)) is not None:
        return  # a canary's decisions wait for the Deployments' own status
    await _follow("MODIFIED", stable, memo)


async def _follow(type: str | None, child: dict[str, Any], memo: kopf.Memo) -> None:
    """Bring the owner's status up to a child's change. The work runs on threads of its own, so
    status never queues behind creates holding kopf's workers; while the owner's reconcile is in
    flight, it waits here (no thread held) and follows it."""
    loop = asyncio.get_running_loop()
    while not await loop.run_in_executor(memo.child_pool, _follow_child, type, child, memo):
        await asyncio.sleep(CHILD_RETRY_SECONDS)


def _follow_child(type: str | None, child: dict[str, Any], memo: kopf.Memo) -> bool:
    """False when the owner is busy (a reconcile holds its lock): try again after it."""
    key = _owner_key(child)
    owner = memo.memory.owner(key) if key else None
    if owner is None:
        return True  # the owner is gone too (garbage collection), or not known yet
    lock = memo.memory.entry(owner).lock
    if not lock.acquire(blocking=False):  # a reconcile in flight: it may be pruning this child
        return False
    try:
        _follow_child_locked(type, child, owner, memo)
    finally:
        lock.release()
    return True


def _follow_child_locked(type: str | None, child: dict[str, Any], owner: dict[str, Any], memo: kopf.Memo) -> None:
    name = child["metadata"]["name"]
    is_stable = name == owner["metadata"]["name"]
    canary_runs = RolloutState.decode(memo.memory.status_of(owner)) is not None
    with contextlib.suppress(kopf.PermanentError, kopf.TemporaryError, KubeError, api.SpecError):
        if type == "DELETED":
            if not (is_stable or canary_runs):
                return  # a canary the operator pruned
            reconcile_and_write_status(owner, memo)
            event(memo, owner, "Restored", f"Deployment/{name} was deleted; re-created")
        elif is_stable and not canary_runs:
            refreshed = reconcile.refresh_status(owner, child, memo.settings, memo.memory)
            if refreshed is not None:
                _write_status(owner, memo, refreshed)
                _report(memo, owner, refreshed)
        elif canary_runs:
            reconcile_and_write_status(owner, memo)


for _group, _version, _plural in CHILD_RESOURCES:
    kopf.on.event(_group, _version, _plural, labels=MANAGED)(child_changed)
kopf.on.event("", "v1", "pods", labels=MANAGED)(pod_changed)


def run_reconcile(
    body: dict[str, Any], memo: kopf.Memo, created: bool = False, trust_watch: bool = True
) -> reconcile.Outcome:
    """Reconcile one body; map errors to kopf's, record metrics and events."""
    with memo.metrics.reconcile() as result:
        try:
            outcome = reconcile.reconcile(
                body,
                memo.kube,
                memo.settings,
                memo.memory,
                created=created,
                provider=memo.get("provider"),
                trust_watch=trust_watch,
            )
        except api.SpecError as exc:
            result["outcome"] = "invalid_spec"
            with contextlib.suppress(KubeError):
                reconcile.record_invalid_spec(memo.kube, body, exc, memo.memory)
            event(memo, body, "InvalidSpec", "; ".join(exc.problems), warning=True)
            raise kopf.PermanentError(f"invalid spec: {exc.problems[0]}") from None
        except KubeError as exc:
            failures = 0
            with contextlib.suppress(KubeError):
                failures = reconcile.record_apply_failed(memo.kube, body, str(exc), memo.memory)
            if exc.transient:
                result["outcome"] = "transient_error"
                raise kopf.TemporaryError(f"Kubernetes API: {exc}", delay=_backoff(failures)) from None
            event(memo, body, "ApplyFailed", str(exc), warning=True)
            raise kopf.PermanentError(f"Kubernetes API refused: {exc}") from None
    _report(memo, body, outcome)
    return outcome


def _report(memo: kopf.Memo, body: dict[str, Any], outcome: reconcile.Outcome) -> None:
    """Events and metrics of one reconcile: canary ones only on a real transition."""
    if outcome.pruned:
        event(memo, body, "Pruned", f"deleted {', '.join(f'{r.kind}/{r.name}' for r in outcome.pruned)}")
    meta = body["metadata"]
    memo.metrics.record_status(meta.get("namespace") or "default", meta["name"], outcome.status)
    if outcome.analysis is not None:
        memo.metrics.analyses.labels(outcome.analysis).inc()
    if outcome.transition is not None:
        before, after = outcome.transition
        if after.phase == "RolledBack":
            memo.metrics.rollbacks.inc()
        elif after.phase == "Succeeded":
            memo.metrics.promotions.inc()
        was = f"{before.phase} step {before.step + 1}" if before else "started"
        message = f"canary {was} -> {after.phase} step {after.step + 1} at {after.weight}%"
        if after.reason:
            message += f": {after.reason}"
        event(memo, body, f"Canary{after.phase}", message, warning=after.phase == "RolledBack")


def _write_status(body: dict[str, Any], memo: kopf.Memo, outcome: reconcile.Outcome) -> None:
    if outcome.status_changed:
        meta = body["metadata"]
        memo.kube.patch_status(meta.get("namespace") or "default", meta["name"], outcome.status)


def reconcile_and_write_status(
    body: dict[str, Any], memo: kopf.Memo, trust_watch: bool = True, created: bool = False
) -> reconcile.Outcome:
    """Reconcile and write the status it gives, both under the object's lock (in that order)."""
    with memo.memory.entry(body).lock:
        outcome = run_reconcile(body, memo, created=created, trust_watch=trust_watch)
        _write_status(body, memo, outcome)
    return outcome


def event(memo: kopf.Memo, body: dict[str, Any], reason: str, message: str, *, warning: bool = False) -> None:
    """Post an Event: through kopf inside its change handlers, through our client elsewhere."""
    try:
        (kopf.warn if warning else kopf.info)(body, reason=reason, message=message)
    except LookupError:  # outside kopf's handler context (our loops)
        with contextlib.suppress(KubeError):
            memo.kube.post_event(body, "Warning" if warning else "Normal", reason, message)


def _backoff(retry: int) -> float:
    return min(60.0, 2.0 ** min(retry, 6)) * random.uniform(0.8, 1.2)


async def _reconcile_in_background(body: dict[str, Any], memo: kopf.Memo, what: str) -> None:
    """A reconcile from our own loops: errors are logged; the next tick tries again."""
    try:
        # The resync is the safety net for a watch that missed an event: it reads afresh.
        await asyncio.to_thread(reconcile_and_write_status, body, memo, what != "resync")
    except (kopf.PermanentError, kopf.TemporaryError, KubeError) as exc:
        log.info("%s of %s: %s", what, body["metadata"].get("name"), exc)
    except Exception:
        log.exception("%s of %s failed", what, body["metadata"].get("name"))


def analysis_due(body: dict[str, Any], memory: Memory, now: datetime.datetime) -> bool:
    state = RolloutState.decode(memory.status_of(body))
    if state is None or state.phase != "Progressing" or state.step_started_at is None:
        return False
    try:
        interval = reconcile.parse_body(body).spec.rollout.interval_seconds
    except api.SpecError:
        return False
    due = state.analysis_due_at(interval)
    return due is not None and now >= due


async def _rollout_loop(memo: kopf.Memo) -> None:
    """Reconcile a running canary when its next analysis is due, and only then."""
    while True:
        await asyncio.sleep(ROLLOUT_TICK_SECONDS)
        now = datetime.datetime.now(datetime.UTC)
        for key in list(memo.memory.known):
            body = memo.memory.owner(key)  # as the watch shows it now
            if body is not None and analysis_due(body, memo.memory, now):
                await _reconcile_in_background(body, memo, "canary analysis")


async def _resync_loop(memo: kopf.Memo) -> None:
    """Re-apply every known ModelDeployment each period, spread over it, to undo drift."""
    while True:
        period = memo.settings.resync_seconds
        await asyncio.sleep(period * random.uniform(0.9, 1.1))
        keys = list(memo.memory.known)
        random.shuffle(keys)
        spacing = period / max(1, len(keys)) / 2
        for key in keys:
            body = memo.memory.owner(key)  # as the watch shows it now, not as it was when the pass began
            if body is not None:
                await _reconcile_in_background(body, memo, "resync")
            await asyncio.sleep(spacing)
