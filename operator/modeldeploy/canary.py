"""The canary rollout's pure parts: weights, replica apportioning, checks and the phase machine.

Nothing here talks to Kubernetes or Prometheus: the operator feeds in what it observed
(analysis results, whether the canary's pods are ready, manual commands) and applies
the decision that comes out. Every function is deterministic and property-tested.

Semantics follow Flagger and Argo Rollouts where users expect them, and are stricter
where users complain about them:
- a check without data (no requests, empty or NaN result) is *inconclusive*, never a pass;
- fewer canary requests than `minRequestCount` in an interval make the analysis
  inconclusive, whatever the checks say;
- Prometheus unreachable is an error: the rollout pauses, it neither promotes nor fails;
- `failureLimit` failed analyses roll back; `inconclusiveLimit` consecutive inconclusive
  ones pause the rollout with a condition saying why;
- weights never move to the canary before its pods are ready.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Literal

# The canary's phases. (A ModelDeployment's status.phase can also be Failed: an invalid spec or
# an apply the API server refused; that is not a canary outcome.)
Phase = Literal["Progressing", "Paused", "Promoting", "Succeeded", "RolledBack"]
PHASES: tuple[Phase, ...] = ("Progressing", "Paused", "Promoting", "Succeeded", "RolledBack")
ACTIVE_PHASES: tuple[Phase, ...] = ("Progressing", "Paused", "Promoting")  # a canary runs: status.canary is set
SETTLED_PHASES: tuple[Phase, ...] = ("Succeeded", "RolledBack")  # the canary is over

# Allowed transitions; a new revision (spec change) starts a new canary in Progressing.
TRANSITIONS: dict[Phase, frozenset[Phase]] = {
    "Progressing": frozenset({"Progressing", "Paused", "Promoting", "RolledBack"}),
    "Paused": frozenset({"Paused", "Progressing", "Promoting", "RolledBack"}),
    "Promoting": frozenset({"Promoting", "Succeeded"}),
    "Succeeded": frozenset({"Succeeded"}),
    "RolledBack": frozenset({"RolledBack"}),
}


class Outcome(StrEnum):
    PASS = "Pass"
    FAIL = "Fail"
    INCONCLUSIVE = "Inconclusive"
    ERROR = "Error"


class Command(StrEnum):
    """Manual control through the `modeldeploy.io/rollout` annotation."""

    PROMOTE = "promote"
    ABORT = "abort"
    PAUSE = "pause"
    RESUME = "resume"


@dataclass(frozen=True)
class CheckResult:
    check: str
    query: str
    value: float | None
    min: float | None
    max: float | None
    outcome: Outcome


def evaluate(check: str, query: str, value: float | None, minimum: float | None, maximum: float | None) -> CheckResult:
    """One threshold check. No value, NaN or infinity is inconclusive: it never passes."""
    if value is None or math.isnan(value) or math.isinf(value):
        outcome = Outcome.INCONCLUSIVE
        value = None
    elif (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        outcome = Outcome.FAIL
    else:
        outcome = Outcome.PASS
    return CheckResult(check, query, value, minimum, maximum, outcome)


def analysis_outcome(results: list[CheckResult], requests: float | None, min_requests: int) -> Outcome:
    """One interval's verdict: any error → Error; too few requests → Inconclusive; any fail → Fail."""
    if any(r.outcome is Outcome.ERROR for r in results):
        return Outcome.ERROR
    if requests is None or math.isnan(requests) or requests < min_requests:
        return Outcome.INCONCLUSIVE
    if any(r.outcome is Outcome.FAIL for r in results):
        return Outcome.FAIL
    if any(r.outcome is Outcome.INCONCLUSIVE for r in results) or not results:
        return Outcome.INCONCLUSIVE
    return Outcome.PASS


def apportion(total: int, weight: int, *, min_stable: int = 1) -> tuple[int, int]:
    """Split `total` pods into (stable, canary) to approximate `weight` percent on the canary.

    Any positive weight gets at least one canary pod (else it would get no traffic); the
    stable side keeps at least `min_stable` pods until the canary takes 100 percent.
    The canary pods are added on top when `total` is too small to split.
    """
    if not 0 <= weight <= 100:
        raise ValueError(f"weight must be within 0..100, got {weight}")
    total = max(total, 1)
    if weight == 0:
        return max(total, min_stable), 0
    if weight == 100:
        return 0, total
    canary = max(1, round(total * weight / 100))
    stable = total - canary
    if stable < min_stable:
        stable = min_stable
    return stable, canary


@dataclass(frozen=True)
class CanaryState:
    phase: Phase = "Progressing"
    step: int = 0  # index into steps; len(steps) once every step has passed
    failures: int = 0
    inconclusive: int = 0
    reason: str = ""
    last_results: tuple[CheckResult, ...] = field(default_factory=tuple)

    def weight(self, steps: list[int]) -> int:
        if self.phase == "RolledBack" or not steps:
            return 0
        if self.phase in ("Promoting", "Succeeded"):
            return 100
        return steps[min(self.step, len(steps) - 1)]


@dataclass(frozen=True)
class Limits:
    steps: tuple[int, ...]
    failure_limit: int
    inconclusive_limit: int


def _move(state: CanaryState, phase: Phase, **changes: object) -> CanaryState:
    if phase not in TRANSITIONS[state.phase]:
        raise ValueError(f"illegal canary transition {state.phase} -> {phase}")
    return replace(state, phase=phase, **changes)


def next_state(
    state: CanaryState,
    limits: Limits,
    *,
    canary_ready: bool,
    outcome: Outcome | None = None,
    results: tuple[CheckResult, ...] = (),
    command: Command | None = None,
) -> CanaryState:
    """Advance the rollout by one event: a manual command, or one analysis interval's outcome.

    `outcome=None` means no analysis ran (the interval has not elapsed, or the canary is not
    ready yet): only commands act then. While Promoting, `canary_ready` says the stable
    Deployment has finished rolling out the promoted revision.
    """
    if state.phase in ("Succeeded", "RolledBack"):
        return state
    if state.phase == "Promoting":  # the stable is taking the new revision: too late to steer
        return _move(state, "Succeeded", reason="promoted") if canary_ready else state
    if command is Command.ABORT:
        return _move(state, "RolledBack", reason="aborted by the modeldeploy.io/rollout annotation")
    if command is Command.PROMOTE:
        return _move(
            state, "Promoting", step=len(limits.steps), reason="promoted by the modeldeploy.io/rollout annotation"
        )
    if command is Command.PAUSE:
        return _move(state, "Paused", reason="paused by the modeldeploy.io/rollout annotation")
    if state.phase == "Paused":
        if command is Command.RESUME:
            return _move(state, "Progressing", inconclusive=0, reason="resumed")
        return state
    if not canary_ready or outcome is None:
        return state
    if outcome is Outcome.ERROR:
        return _move(state, "Paused", last_results=results, reason="metrics provider unreachable; analysis paused")
    if outcome is Outcome.FAIL:
        failures = state.failures + 1
        failing = next((r for r in results if r.outcome is Outcome.FAIL), None)
        why = (
            f"{failing.check}={failing.value:g} outside [{failing.min}, {failing.max}]"
            if failing
            else "analysis failed"
        )
        if failures >= limits.failure_limit:
            return _move(state, "RolledBack", failures=failures, inconclusive=0, last_results=results, reason=why)
        return _move(state, "Progressing", failures=failures, inconclusive=0, last_results=results, reason=why)
    if outcome is Outcome.INCONCLUSIVE:
        inconclusive = state.inconclusive + 1
        if inconclusive >= limits.inconclusive_limit:
            return _move(
                state,
                "Paused",
                inconclusive=inconclusive,
                last_results=results,
                reason=f"{inconclusive} inconclusive analyses in a row (too few requests or no data)",
            )
        return _move(state, "Progressing", inconclusive=inconclusive, last_results=results, reason="inconclusive")
    step = state.step + 1
    if step >= len(limits.steps):
        return _move(state, "Promoting", step=step, inconclusive=0, last_results=results, reason="every step passed")
    return _move(state, "Progressing", step=step, inconclusive=0, last_results=results, reason=f"step {step} passed")
