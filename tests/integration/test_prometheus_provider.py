"""The Prometheus metrics provider against a real Prometheus scraping a real modelserve.

modelserve runs with test-only fault injection (10 % failures); Prometheus scrapes it every
second with the labels the canary queries select on; the built-in queries must see the
error rate, the request count and a p99 latency, and a track without traffic has no values.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as httpclient

from modeldeploy.prometheus import (
    ERROR_RATE,
    LATENCY_P99_MS,
    NO_VALUES,
    REQUESTS,
    PrometheusProvider,
    ProviderError,
    QueryContext,
)
from modelserve import examples
from modelserve.launcher import ServingProcess
from tests.integration.prometheus_env import PROMETHEUS, running_prometheus

pytestmark = [
    pytest.mark.skipif(PROMETHEUS is None, reason="prometheus is installed by `make install`"),
    pytest.mark.timeout(120),
]


@pytest.fixture
def canary_server(tmp_path: Path) -> Iterator[ServingProcess]:
    repo = examples.write_repository(tmp_path / "models", ["simple"])
    server = ServingProcess(repo, env={"MODELSERVE_FAULT_FAILURE_RATIO": "0.1"}).start()
    yield server
    server.stop()


@pytest.fixture
def prometheus(tmp_path: Path, canary_server: ServingProcess) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    labels = {"namespace": "ml", "modeldeploy_deployment": "fraud", "modeldeploy_track": "canary"}
    with running_prometheus(tmp_path, [(canary_server.metrics_port, labels)]) as running:
        yield running


def send(server: ServingProcess, count: int) -> int:
    client = httpclient.InferenceServerClient(server.http_url)
    failures = 0
    for _ in range(count):
        inputs = []
        for name in ("INPUT0", "INPUT1"):
            tensor = httpclient.InferInput(name, [1, 16], "FP32")
            tensor.set_data_from_numpy(np.ones((1, 16), np.float32))
            inputs.append(tensor)
        try:
            client.infer("simple", inputs)
        except Exception:
            failures += 1
    return failures


def test_builtin_queries_see_errors_requests_and_latency(canary_server: ServingProcess, prometheus) -> None:
    url, _ = prometheus
    provider = PrometheusProvider(url)
    failures = send(canary_server, 200)
    assert failures == 20, "the fault injector fails exactly 10 %"
    canary = QueryContext(name="fraud", namespace="ml", track="canary", revision="r2", interval="1m")
    deadline = time.monotonic() + 30
    requests = provider.run_query(canary.render(REQUESTS))
    while (requests is NO_VALUES or requests < 150) and time.monotonic() < deadline:
        time.sleep(1)
        requests = provider.run_query(canary.render(REQUESTS))
    assert requests is not NO_VALUES and requests >= 150
    error_rate = provider.run_query(canary.render(ERROR_RATE))
    assert error_rate is not NO_VALUES and 0.05 <= error_rate <= 0.15
    latency = provider.run_query(canary.render(LATENCY_P99_MS))
    assert latency is not NO_VALUES and 0 < latency < 1000
    stable = QueryContext(name="fraud", namespace="ml", track="stable", revision="r1", interval="1m")
    assert provider.run_query(stable.render(ERROR_RATE)) is NO_VALUES, "a track without traffic has no values"


def test_unreachable_prometheus_is_an_error_not_a_value(prometheus) -> None:
    url, process = prometheus
    provider = PrometheusProvider(url, timeout=2)
    assert provider.is_online()
    process.terminate()
    process.wait(10)

    assert not provider.is_online()
    with pytest.raises(ProviderError, match="failed"):
        provider.run_query("up")


def test_query_templates_reject_unknown_variables() -> None:
    context = QueryContext(name="m", namespace="ns", track="canary", revision="abc", interval="30s")
    assert 'modeldeploy_track="canary"' in context.render(ERROR_RATE)
    assert context.render("x{rev='{{ revision }}'}[{{interval}}]") == "x{rev='abc'}[30s]"
    with pytest.raises(ProviderError, match="unknown variable"):
        context.render("{{pod}}")
