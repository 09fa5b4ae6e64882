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


# The typed rollout state: decoded from status once, encoded once.
from modeldeploy.rolloutstate import AnalysisRecord, RolloutState  # noqa: E402

RESULTS = st.builds(
    canary.CheckResult,
    check=st.sampled_from(["error-rate", "latency-p99-ms", "custom"]),
    query=st.text(max_size=20),
    value=st.none() | st.floats(0, 1000, allow_nan=False),
    min=st.none() | st.floats(0, 10, allow_nan=False),
    max=st.none() | st.floats(0, 10, allow_nan=False),
    outcome=st.sampled_from(list(Outcome)),
)
STATES = st.builds(
    RolloutState,
    revision=st.text("0123456789abcdef", min_size=10, max_size=10),
    phase=st.sampled_from(canary.ACTIVE_PHASES),
    step=st.integers(0, 5),
    weight=st.integers(0, 100),
    failures=st.integers(0, 5),
    inconclusive=st.integers(0, 5),
    step_started_at=st.none() | st.just("2026-01-01T00:00:00Z"),
    last_command=st.none() | st.sampled_from([c.value for c in Command]),
    last_analysis=st.lists(
        st.builds(AnalysisRecord, result=RESULTS, time=st.just("2026-01-01T00:00:03Z")), max_size=3
    ).map(tuple),
)


@given(state=STATES)
def test_rollout_state_round_trips_through_status(state: RolloutState) -> None:
    wire = {"phase": state.phase, "canary": state.encode()}
    assert RolloutState.decode(wire) == state
    assert not state.transition_from(RolloutState.decode(wire))


def test_no_rollout_state_without_a_running_canary() -> None:
    assert RolloutState.decode({}) is None
    assert RolloutState.decode({"phase": "Succeeded", "canary": None}) is None


@given(started=st.integers(0, 100), analysed=st.none() | st.integers(0, 200), interval=st.integers(1, 60))
def test_next_analysis_is_one_interval_after_the_later_of_step_start_and_last_analysis(
    started: int, analysed: int | None, interval: int
) -> None:
    import datetime

    base = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)

    def stamp(seconds: int) -> str:
        return (base + datetime.timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")

    records = () if analysed is None else (AnalysisRecord(canary.evaluate("c", "q", 1.0, None, None), stamp(analysed)),)
    state = RolloutState("r", step_started_at=stamp(started), last_analysis=records)
    due = state.analysis_due_at(interval)
    assert due == base + datetime.timedelta(seconds=max(started, analysed or 0) + interval)
    assert RolloutState("r", step_started_at=None).analysis_due_at(interval) is None, "not ready: nothing due"
    assert RolloutState("r", phase="Paused", step_started_at=stamp(0)).analysis_due_at(interval) is None


def test_only_phase_or_step_changes_are_transitions() -> None:
    state = RolloutState("r", step=1, weight=25)
    assert state.transition_from(None)
    assert not state.transition_from(RolloutState("r", step=1, weight=25, failures=1, inconclusive=1))
    assert state.transition_from(RolloutState("r", step=0))
    assert state.transition_from(RolloutState("r", phase="Paused", step=1))
    assert state.transition_from(RolloutState("other", step=1))
