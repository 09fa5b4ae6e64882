"""The canary analysis step beside the code: `run_analysis`, `advance` and `start` with a fake provider."""

from __future__ import annotations

import datetime
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from modeldeploy import analysis, api, canary
from modeldeploy.rolloutstate import RolloutState
from tests.unit.fakes import FakeProvider

REVISION = "abc123"
T0 = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)


def at(seconds: float) -> str:
    return (T0 + datetime.timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")


def md(annotations: dict[str, str] | None = None, **rollout: Any) -> api.ModelDeployment:
    return api.parse_model_deployment(
        {
            "apiVersion": api.API_VERSION,
            "kind": api.KIND,
            "metadata": {"name": "fraud", "namespace": "ml", "uid": "u-1", "annotations": annotations or {}},
            "spec": {
                "model": {"name": "m", "storageUri": "s3://b/m"},
                "rollout": {"interval": "30s", "minRequestCount": 50, "maxErrorRate": 0.01, **rollout},
            },
        }
    )


def test_healthy_canary_passes_every_check() -> None:
    m = md()
    provider = FakeProvider().answer(m, REVISION, requests=500, error_rate=0.001, latency_ms=120)
    outcome, results = analysis.run_analysis(provider, m, REVISION)
    assert outcome is canary.Outcome.PASS
    assert [(r.check, r.outcome) for r in results] == [
        ("error-rate", canary.Outcome.PASS),
        ("latency-p99-ms", canary.Outcome.PASS),
    ]
    assert all('modeldeploy_track="canary"' in q and 'namespace="ml"' in q for q in provider.queries)


def test_too_few_requests_is_inconclusive_whatever_the_checks_say() -> None:
    m = md()
    provider = FakeProvider().answer(m, REVISION, requests=49, error_rate=0.5, latency_ms=9000)
    outcome, results = analysis.run_analysis(provider, m, REVISION)
    assert outcome is canary.Outcome.INCONCLUSIVE
    assert {r.outcome for r in results} == {canary.Outcome.FAIL}, "the checks are still recorded"
    no_data, _ = analysis.run_analysis(FakeProvider(), m, REVISION)
    assert no_data is canary.Outcome.INCONCLUSIVE


def test_error_rate_and_latency_fail_on_their_own() -> None:
    m = md()
    errors, results = analysis.run_analysis(
        FakeProvider().answer(m, REVISION, requests=500, error_rate=0.02, latency_ms=100), m, REVISION
    )
    assert errors is canary.Outcome.FAIL and results[0].outcome is canary.Outcome.FAIL and results[0].value == 0.02
    slow, results = analysis.run_analysis(
        FakeProvider().answer(m, REVISION, requests=500, error_rate=0.0, latency_ms=501), m, REVISION
    )
    assert slow is canary.Outcome.FAIL and results[1].check == "latency-p99-ms" and results[1].max == 500


def test_latency_check_is_left_out_when_unset_and_custom_checks_run() -> None:
    m = md(maxLatencyP99Ms=None, checks=[{"name": "gpu", "query": 'gpu{rev="{{revision}}"}', "max": 0.9}])
    provider = FakeProvider().answer(m, REVISION, requests=500, error_rate=0.0)
    provider.answers[f'gpu{{rev="{REVISION}"}}'] = 0.95
    outcome, results = analysis.run_analysis(provider, m, REVISION)
    assert [r.check for r in results] == ["error-rate", "gpu"]
    assert outcome is canary.Outcome.FAIL and results[1].query == f'gpu{{rev="{REVISION}"}}'


def test_provider_error_is_an_error_naming_the_provider() -> None:
    outcome, results = analysis.run_analysis(FakeProvider(error="connection refused"), md(), REVISION)
    assert outcome is canary.Outcome.ERROR
    assert [(r.check, r.query) for r in results] == [("metrics-provider", "connection refused")]


@given(
    requests=st.integers(0, 1000),
    error_rate=st.floats(0, 1),
    latency=st.floats(0.001, 10_000),
    max_error_rate=st.floats(0, 1),
    min_requests=st.integers(0, 1000),
)
def test_verdict_follows_thresholds(
    requests: int, error_rate: float, latency: float, max_error_rate: float, min_requests: int
) -> None:
    m = md(maxErrorRate=max_error_rate, minRequestCount=min_requests, maxLatencyP99Ms=250)
    provider = FakeProvider().answer(m, REVISION, requests=requests, error_rate=error_rate, latency_ms=latency)
    outcome, _ = analysis.run_analysis(provider, m, REVISION)
    if requests < min_requests:
        assert outcome is canary.Outcome.INCONCLUSIVE
    elif error_rate > max_error_rate or latency > 250:
        assert outcome is canary.Outcome.FAIL
    else:
        assert outcome is canary.Outcome.PASS


def running(**changes: Any) -> RolloutState:
    return RolloutState(revision=REVISION, weight=10, step_started_at=at(0), **changes)


def advance(m: api.ModelDeployment, state: RolloutState, provider: FakeProvider | None, now: float, **kw: Any):
    return analysis.advance(
        m, state, canary_ready=kw.get("ready", True), stable_rolled_out=False, provider=provider, now=at(now)
    )


def test_no_analysis_before_an_interval_has_passed_or_while_not_ready() -> None:
    m = md()
    provider = FakeProvider().answer(m, REVISION, requests=500, error_rate=0.0, latency_ms=1)
    assert advance(m, running(), provider, 29) == (running(), None)
    assert advance(m, running(), provider, 31, ready=False)[1] is None
    assert provider.queries == []


def test_a_passing_analysis_moves_to_the_next_step_with_a_fresh_clock() -> None:
    m = md()
    provider = FakeProvider().answer(m, REVISION, requests=500, error_rate=0.0, latency_ms=1)
    new, outcome = advance(m, running(), provider, 30)
    assert outcome is canary.Outcome.PASS
    assert (new.step, new.weight, new.step_started_at) == (1, 25, None)
    assert all(r.time == at(30) for r in new.last_analysis)


def test_failures_up_to_the_limit_roll_back() -> None:
    m = md(failureLimit=2)
    provider = FakeProvider().answer(m, REVISION, requests=500, error_rate=0.3, latency_ms=1)
    once, _ = advance(m, running(), provider, 30)
    assert (once.phase, once.failures) == ("Progressing", 1)
    twice, outcome = advance(m, once, provider, 61)
    assert outcome is canary.Outcome.FAIL and twice.phase == "RolledBack" and twice.weight == 0
    assert "error-rate=0.3" in twice.reason


def test_provider_error_pauses_and_a_command_acts_without_an_analysis() -> None:
    m = md()
    paused, outcome = advance(m, running(), FakeProvider(error="down"), 30)
    assert outcome is canary.Outcome.ERROR and paused.phase == "Paused"
    provider = FakeProvider()
    aborted, outcome = advance(md({"modeldeploy.io/rollout": "abort"}), running(), provider, 30)
    assert outcome is None and aborted.phase == "RolledBack" and aborted.last_command == "abort"
    assert provider.queries == []


def test_without_a_provider_the_canary_waits() -> None:
    assert advance(md(), running(), None, 3600) == (running(), None)


def test_start_checks_the_provider_once_and_pauses_when_it_is_offline() -> None:
    m = md({"modeldeploy.io/rollout": "resume"})
    online = analysis.start(m, REVISION, FakeProvider())
    assert (online.phase, online.step, online.weight, online.last_command) == ("Progressing", 0, 10, "resume")
    offline = analysis.start(m, REVISION, FakeProvider(online=False))
    assert offline.phase == "Paused" and offline.reason == analysis.PROVIDER_OFFLINE
    assert "offline" in offline.reason and offline.transition_from(None)
    assert analysis.start(m, REVISION, None).phase == "Progressing"
