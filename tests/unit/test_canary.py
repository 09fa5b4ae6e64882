"""Property tests for the canary's pure parts: apportioning, checks, the phase machine."""

from __future__ import annotations

import math
from collections import deque

import pytest
from hypothesis import given
from hypothesis import strategies as st

from modeldeploy import canary
from modeldeploy.canary import CanaryState, Command, Limits, Outcome, next_state

LIMITS = Limits(steps=(10, 25, 50), failure_limit=2, inconclusive_limit=3)
EVENTS = [
    {"canary_ready": ready, "outcome": outcome, "command": command}
    for ready in (True, False)
    for outcome in (None, *Outcome)
    for command in (None, *Command)
]


@given(total=st.integers(0, 500), weight=st.integers(0, 100), min_stable=st.integers(1, 5))
def test_apportion_properties(total: int, weight: int, min_stable: int) -> None:
    stable, canary_pods = canary.apportion(total, weight, min_stable=min_stable)
    assert stable >= 0 and canary_pods >= 0
    assert stable + canary_pods >= max(total, 1)
    if weight > 0:
        assert canary_pods >= 1, "a positive weight needs a canary pod"
    if weight < 100:
        assert stable >= min_stable, "the stable side is never scaled below what keeps serving"
    else:
        assert stable == 0
    if weight == 0:
        assert canary_pods == 0
    if 0 < weight < 100 and total >= 2 and stable > min_stable:
        assert abs(canary_pods / (stable + canary_pods) * 100 - weight) <= 100 / (stable + canary_pods) + 1e-9


def test_apportion_rejects_bad_weights() -> None:
    with pytest.raises(ValueError, match=r"0\.\.100"):
        canary.apportion(4, 101)


@given(
    value=st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True)),
    low=st.one_of(st.none(), st.floats(-1e6, 1e6)),
    high=st.one_of(st.none(), st.floats(-1e6, 1e6)),
)
def test_evaluate_never_passes_without_a_real_value(value: float | None, low: float | None, high: float | None) -> None:
    result = canary.evaluate("c", "q", value, low, high)
    if value is None or math.isnan(value) or math.isinf(value):
        assert result.outcome is Outcome.INCONCLUSIVE and result.value is None
    elif (low is not None and value < low) or (high is not None and value > high):
        assert result.outcome is Outcome.FAIL
    else:
        assert result.outcome is Outcome.PASS


@given(
    outcomes=st.lists(st.sampled_from(list(Outcome)), max_size=5),
    requests=st.one_of(st.none(), st.floats(0, 1e6), st.just(float("nan"))),
    min_requests=st.integers(0, 1000),
)
def test_analysis_passes_only_when_everything_passes_with_enough_requests(outcomes, requests, min_requests) -> None:
    results = [canary.CheckResult("c", "q", 1.0, None, None, o) for o in outcomes]
    verdict = canary.analysis_outcome(results, requests, min_requests)
    if verdict is Outcome.PASS:
        assert outcomes and all(o is Outcome.PASS for o in outcomes)
        assert requests is not None and requests >= min_requests
    if Outcome.ERROR in outcomes:
        assert verdict is Outcome.ERROR
    elif requests is None or math.isnan(requests) or requests < min_requests:
        assert verdict is Outcome.INCONCLUSIVE


@given(st.lists(st.sampled_from(EVENTS), max_size=40))
def test_phase_machine_only_makes_legal_moves(events: list[dict]) -> None:
    state = CanaryState()
    weights = [state.weight(list(LIMITS.steps))]
    for event in events:
        new = next_state(state, LIMITS, **event)
        assert new.phase in canary.TRANSITIONS[state.phase]
        if state.phase in ("Succeeded", "RolledBack"):
            assert new == state, "settled phases only change with a new revision"
        if not event["canary_ready"] and event["command"] is None and state.phase == "Progressing":
            assert new.step == state.step, "weights never move before the canary is ready"
        if new.phase == "Succeeded" and state.phase != "Succeeded":
            assert state.phase == "Promoting", "only a promotion succeeds"
        state = new
        weights.append(state.weight(list(LIMITS.steps)))
    assert all(0 <= w <= 100 for w in weights)


def test_every_phase_is_reachable() -> None:
    seen = {CanaryState().phase}
    queue = deque([CanaryState()])
    visited = {CanaryState()}
    while queue:
        state = queue.popleft()
        for event in EVENTS:
            new = next_state(state, LIMITS, **event)
            seen.add(new.phase)
            key = replace_results(new)
            if key not in visited and len(visited) < 5000:
                visited.add(key)
                queue.append(key)
    assert seen == set(canary.PHASES), f"unreachable: {set(canary.PHASES) - seen}"
    assert set(canary.TRANSITIONS) == set(canary.PHASES)


def replace_results(state: CanaryState) -> CanaryState:
    from dataclasses import replace

    return replace(state, last_results=(), reason="")


def test_healthy_canary_walks_every_step_then_promotes() -> None:
    state = CanaryState()
    weights = []
    for _ in LIMITS.steps:
        weights.append(state.weight(list(LIMITS.steps)))
        state = next_state(state, LIMITS, canary_ready=True, outcome=Outcome.PASS)
    assert weights == [10, 25, 50] and state.phase == "Promoting"
    assert next_state(state, LIMITS, canary_ready=True).phase == "Succeeded"


def test_failures_roll_back_at_the_failure_limit() -> None:
    failing = (canary.evaluate("error-rate", "q", 0.1, None, 0.01),)
    state = next_state(CanaryState(), LIMITS, canary_ready=True, outcome=Outcome.FAIL, results=failing)
    assert state.phase == "Progressing" and state.failures == 1
    state = next_state(state, LIMITS, canary_ready=True, outcome=Outcome.FAIL, results=failing)
    assert state.phase == "RolledBack" and "error-rate=0.1" in state.reason
    assert state.weight(list(LIMITS.steps)) == 0


def test_inconclusive_pauses_and_errors_pause_never_promote() -> None:
    state = CanaryState()
    for _ in range(LIMITS.inconclusive_limit):
        state = next_state(state, LIMITS, canary_ready=True, outcome=Outcome.INCONCLUSIVE)
    assert state.phase == "Paused" and "inconclusive" in state.reason
    assert next_state(CanaryState(), LIMITS, canary_ready=True, outcome=Outcome.ERROR).phase == "Paused"
    resumed = next_state(state, LIMITS, canary_ready=True, command=Command.RESUME)
    assert resumed.phase == "Progressing" and resumed.inconclusive == 0
