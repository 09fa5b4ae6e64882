"""Running a canary step: the analysis through a metrics provider, and the canary's status.

Glue between the pure state machine (`canary`), the queries (`prometheus`) and the
ModelDeployment status. The reconcile calls `advance` after applying the plan's objects.
"""

from __future__ import annotations

import datetime
from dataclasses import replace
from typing import Any

from modeldeploy import api, canary, status
from modeldeploy.prometheus import (
    ERROR_RATE,
    LATENCY_P99_MS,
    NO_VALUES,
    REQUESTS,
    MetricsProvider,
    ProviderError,
    QueryContext,
)
from modeldeploy.rollout import RolloutPlan

COMMAND_ANNOTATION = "modeldeploy.io/rollout"
SETTLED = ("Succeeded", "RolledBack")


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


def state_from_status(previous: dict[str, Any]) -> tuple[canary.CanaryState | None, str | None, str | None]:
    """(state, the revision it is about, when the current step's clock started) from status."""
    current = previous.get("canary")
    if not current:
        return None, None, None
    phase = previous.get("phase") if previous.get("phase") in canary.PHASES else "Progressing"
    state = canary.CanaryState(
        phase=phase,
        step=int(current.get("step", 0)),
        failures=int(current.get("failures", 0)),
        inconclusive=int(current.get("inconclusive", 0)),
    )
    return state, current.get("revision"), current.get("stepStartedAt")


def _elapsed(since: str | None, now: str) -> float:
    if not since:
        return 0.0
    parse = datetime.datetime.fromisoformat
    return (parse(now.replace("Z", "+00:00")) - parse(since.replace("Z", "+00:00"))).total_seconds()


def advance(
    md: api.ModelDeployment,
    plan: RolloutPlan,
    previous: dict[str, Any],
    *,
    canary_ready: bool,
    provider: MetricsProvider | None,
    now: str,
) -> tuple[canary.CanaryState, dict[str, Any], canary.Outcome | None]:
    """One tick of a running canary: maybe analyse, apply a command.

    Returns the new state, its status fields, and the analysis outcome when one ran."""
    state = plan.state or canary.CanaryState()
    _, known_revision, started = state_from_status(previous)
    revision = plan.canary.revision if plan.canary is not None else known_revision or ""
    if known_revision != revision:
        started = None
    last_command = (previous.get("canary") or {}).get("lastCommand")
    raw_command = md.metadata.annotations.get(COMMAND_ANNOTATION)
    command = None
    if raw_command in {c.value for c in canary.Command} and raw_command != last_command:
        command = canary.Command(raw_command)
    if canary_ready and started is None:
        started = now  # the step's clock runs from when the canary can take traffic
    outcome, results = None, ()
    interval = md.spec.rollout.interval_seconds
    if (
        state.phase == "Progressing"
        and command is None
        and canary_ready
        and provider is not None
        and _elapsed(started, now) >= interval
    ):
        outcome, results = run_analysis(provider, md, revision)
    limits = canary.Limits(
        tuple(md.spec.rollout.steps), md.spec.rollout.failure_limit, md.spec.rollout.inconclusive_limit
    )
    new = canary.next_state(state, limits, canary_ready=canary_ready, outcome=outcome, results=results, command=command)
    if new.step != state.step or new.phase != state.phase:
        started = None if new.phase == "Progressing" else started
    if not results:
        new = replace(new, last_results=tuple(_previous_results(previous)))
    fields = {
        "phase": new.phase,
        "canary": {
            "revision": revision,
            "step": new.step,
            "weight": new.weight(list(md.spec.rollout.steps)),
            "failures": new.failures,
            "inconclusive": new.inconclusive,
            "stepStartedAt": started,
            "lastCommand": raw_command if command is not None else last_command,
            "lastAnalysis": [_result_status(r, now) for r in new.last_results],
        },
    }
    return new, fields, outcome


def _result_status(result: canary.CheckResult, now: str) -> dict[str, Any]:
    out: dict[str, Any] = {"check": result.check, "query": result.query, "outcome": result.outcome.value, "time": now}
    for key in ("value", "min", "max"):
        if getattr(result, key) is not None:
            out[key] = getattr(result, key)
    return out


def _previous_results(previous: dict[str, Any]) -> list[canary.CheckResult]:
    out = []
    for item in (previous.get("canary") or {}).get("lastAnalysis", []):
        try:
            out.append(
                canary.CheckResult(
                    item["check"], item.get("query", ""), item.get("value"), item.get("min"), item.get("max"),
                    canary.Outcome(item["outcome"]),
                )
            )  # fmt: skip
        except (KeyError, ValueError):
            continue
    return out


def settled_fields(
    new: canary.CanaryState, revision: str, generation: int | None, conditions: list[dict[str, Any]], now: str
) -> dict[str, Any]:
    """Status once a canary ends: promoted (canary cleared) or rolled back (revision rejected)."""
    if new.phase == "RolledBack":
        failing = next((r for r in new.last_results if r.outcome is canary.Outcome.FAIL), None)
        message = new.reason
        if failing is not None:
            message = (
                f"{failing.check}={failing.value} (min {failing.min}, max {failing.max}) from query: {failing.query}"
            )
        conditions = status.set_condition(conditions, status.DEGRADED, True, "RolledBack", message, generation, now)
        return {"phase": "RolledBack", "rejectedRevision": revision, "canary": None, "conditions": conditions}
    return {"phase": "Succeeded", "canary": None}
