"""Running a canary step: the analysis through a metrics provider, commands, the next state.

Glue between the pure state machine (`canary`), the queries (`prometheus`) and the typed
rollout state (`rolloutstate`). The reconcile calls `advance` before it plans and applies, so
a decision (a rollback above all) takes effect in the same reconcile.
"""

from __future__ import annotations

import datetime
from dataclasses import replace
from typing import Any

from modeldeploy import api, canary, names, status
from modeldeploy.prometheus import (
    ERROR_RATE,
    LATENCY_P99_MS,
    NO_VALUES,
    REQUESTS,
    MetricsProvider,
    ProviderError,
    QueryContext,
)
from modeldeploy.rolloutstate import AnalysisRecord, RolloutState, parse_time

PROVIDER_OFFLINE = (
    "metrics provider offline when the canary started: analysis paused before judging"
    f" (resume with the {names.COMMAND_ANNOTATION}: resume annotation once it answers)"
)


def run_analysis(
    provider: MetricsProvider, md: api.ModelDeployment, revision: str
) -> tuple[canary.Outcome, tuple[canary.CheckResult, ...]]:
    rollout = md.spec.rollout
    context = QueryContext(md.metadata.name, md.metadata.namespace, "canary", revision, rollout.interval)
    checks: list[tuple[str, str, float | None, float | None]] = [
        ("error-rate", ERROR_RATE, None, rollout.max_error_rate)
    ]
    if rollout.max_latency_p99_ms is not None:
        checks.append(("latency-p99-ms", LATENCY_P99_MS, None, rollout.max_latency_p99_ms))
    checks += [(c.name, c.query, c.min, c.max) for c in rollout.checks]
    try:
        requests = provider.run_query(context.render(REQUESTS))
        results = []
        for name, template, low, high in checks:
            query = context.render(template)
            value = provider.run_query(query)
            results.append(canary.evaluate(name, query, None if value is NO_VALUES else value, low, high))
    except ProviderError as exc:
        error = canary.CheckResult("metrics-provider", str(exc), None, None, None, canary.Outcome.ERROR)
        return canary.Outcome.ERROR, (error,)
    count = None if requests is NO_VALUES else requests
    return canary.analysis_outcome(results, count, rollout.min_request_count), tuple(results)


def start(md: api.ModelDeployment, revision: str, provider: MetricsProvider | None) -> RolloutState:
    """A new canary for `revision`: at the first step, its pods not ready yet.

    As Flagger does, the metrics provider is checked when a canary starts: an offline one
    pauses the canary at once, saying so, instead of letting analyses judge without data.
    Without a provider the canary waits at its step anyway (commands still act)."""
    fresh = RolloutState(
        revision=revision,
        weight=md.spec.rollout.steps[0],
        last_command=md.metadata.annotations.get(names.COMMAND_ANNOTATION),
    )
    if provider is not None and not provider.is_online():
        return replace(fresh, phase="Paused", reason=PROVIDER_OFFLINE)
    return fresh


def _parse_now(now: str) -> datetime.datetime:
    parsed = parse_time(now)
    assert parsed is not None, now
    return parsed


def command_of(md: api.ModelDeployment, state: RolloutState) -> canary.Command | None:
    """The modeldeploy.io/rollout command to act on: a known value not acted on yet."""
    raw = md.metadata.annotations.get(names.COMMAND_ANNOTATION)
    if raw in {c.value for c in canary.Command} and raw != state.last_command:
        return canary.Command(raw)
    return None


def advance(
    md: api.ModelDeployment,
    state: RolloutState,
    *,
    canary_ready: bool,
    stable_rolled_out: bool,
    provider: MetricsProvider | None,
    now: str,
) -> tuple[RolloutState, canary.Outcome | None]:
    """One decision for a running canary: a command, an analysis when one is due, readiness.

    Returns the new state and the analysis outcome when one ran. At most one analysis per
    interval: one is due an interval after the step's clock started or after the last one."""
    command = command_of(md, state)
    outcome, results = None, ()
    rollout = md.spec.rollout
    due = state.analysis_due_at(rollout.interval_seconds)
    if command is None and canary_ready and provider is not None and due is not None and _parse_now(now) >= due:
        outcome, results = run_analysis(provider, md, state.revision)
    limits = canary.Limits(tuple(rollout.steps), rollout.failure_limit, rollout.inconclusive_limit)
    ready = stable_rolled_out if state.phase == "Promoting" else canary_ready
    machine = canary.next_state(
        state.machine, limits, canary_ready=ready, outcome=outcome, results=results, command=command
    )
    new = state.after(machine, list(rollout.steps))
    if results:
        new = replace(new, last_analysis=tuple(AnalysisRecord(r, now) for r in results))
    if command is not None:
        new = replace(new, last_command=command.value)
    if (new.phase, new.step) != (state.phase, state.step):
        new = replace(new, step_started_at=None)  # a new step's clock starts when the canary is ready again
    return new, outcome


def rolled_back_condition(
    state: RolloutState, generation: int | None, conditions: list[dict[str, Any]], now: str
) -> list[dict[str, Any]]:
    """Degraded, naming the failing check, its value and its query (or why it was aborted)."""
    failing = next((r.result for r in state.last_analysis if r.result.outcome is canary.Outcome.FAIL), None)
    message = state.reason or "rolled back"
    if failing is not None:
        message = f"{failing.check}={failing.value} (min {failing.min}, max {failing.max}) from query: {failing.query}"
    return status.set_condition(conditions, status.DEGRADED, True, "RolledBack", message, generation, now)
