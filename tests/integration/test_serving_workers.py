"""`--workers 2`: two server processes on the same ports, driven by the real tritonclient."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import psutil
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from modelserve import examples
from modelserve.launcher import ServingProcess
from modelserve.supervisor import available_cores, ort_threads

FLUSHED = 0.5  # workers flush their statistics every 0.1 s


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return examples.write_repository(tmp_path_factory.mktemp("workers") / "models", ["simple"])


@pytest.fixture(scope="module")
def server(repository: Path) -> Iterator[ServingProcess]:
    proc = ServingProcess(repository, args=["--workers=2"]).start()
    yield proc
    assert proc.stop() == 0


def workers(server: ServingProcess) -> list[psutil.Process]:
    assert server.process is not None
    return psutil.Process(server.process.pid).children()


def infer_once(server: ServingProcess, x: np.ndarray) -> np.ndarray:
    client = httpclient.InferenceServerClient(server.http_url, connection_timeout=10, network_timeout=10)
    try:
        inputs = [httpclient.InferInput(n, [1, 16], "FP32") for n in ("INPUT0", "INPUT1")]
        inputs[0].set_data_from_numpy(x)
        inputs[1].set_data_from_numpy(np.ones_like(x))
        return client.infer("simple", inputs).as_numpy("OUTPUT0")
    finally:
        client.close()


def stats(server: ServingProcess) -> tuple[int, int]:
    client = httpclient.InferenceServerClient(server.http_url)
    try:
        entry = client.get_inference_statistics("simple")["model_stats"][0]
        return entry["inference_stats"]["success"]["count"], entry["inference_count"]
    finally:
        client.close()


def test_core_count_and_thread_split() -> None:
    assert 1 <= available_cores() <= (os.cpu_count() or 1)
    assert ort_threads(0, 2, 8) == 4 and ort_threads(0, 4, 2) == 1 and ort_threads(3, 4, 2) == 3


def test_two_workers_serve_identical_results(server: ServingProcess) -> None:
    assert len(workers(server)) == 2
    x = np.arange(16, dtype=np.float32).reshape(1, 16)
    answers = [infer_once(server, x) for _ in range(20)]  # a connection each: the kernel spreads them
    for answer in answers:
        np.testing.assert_array_equal(answer, x + 1)


def test_statistics_and_metrics_add_up_across_workers(server: ServingProcess) -> None:
    time.sleep(FLUSHED)
    before_success, before_count = stats(server)
    before_metric = server.metric("nv_inference_request_success", "simple")
    x = np.zeros((1, 16), dtype=np.float32)
    for _ in range(30):
        infer_once(server, x)
    grpc = grpcclient.InferenceServerClient(server.grpc_url)
    inputs = [grpcclient.InferInput(n, [1, 16], "FP32") for n in ("INPUT0", "INPUT1")]
    for item in inputs:
        item.set_data_from_numpy(x)
    for _ in range(7):
        grpc.infer("simple", inputs)
    time.sleep(FLUSHED)
    for _ in range(5):  # every worker answers with the same totals
        success, count = stats(server)
        assert (success - before_success, count - before_count) == (37, 37)
        assert server.metric("nv_inference_request_success", "simple") - before_metric == 37
    grpc_stats = grpc.get_inference_statistics("simple", as_json=True)["model_stats"][0]
    assert int(grpc_stats["inference_stats"]["success"]["count"]) == success
    grpc.close()


def test_repository_api_is_refused_with_workers(server: ServingProcess) -> None:
    client = httpclient.InferenceServerClient(server.http_url)
    with pytest.raises(Exception, match="--workers"):
        client.unload_model("simple")
    client.close()


def test_a_killed_worker_makes_the_server_unready_then_is_replaced(server: ServingProcess) -> None:
    victim = workers(server)[0]
    victim.send_signal(signal.SIGKILL)
    victim.wait(10)
    deadline = time.monotonic() + 5
    while server.http_get("/v2/health/ready") == 200:
        assert time.monotonic() < deadline, "still ready with a worker dead"
        time.sleep(0.02)
    deadline = time.monotonic() + 60
    while server.http_get("/v2/health/ready") != 200:
        assert time.monotonic() < deadline, "the replacement never became ready"
        time.sleep(0.1)
    assert len(workers(server)) == 2 and victim.pid not in {p.pid for p in workers(server)}
    x = np.ones((1, 16), dtype=np.float32)
    for _ in range(10):
        np.testing.assert_array_equal(infer_once(server, x), x + 1)


def test_sigterm_drains_every_worker(repository: Path) -> None:
    proc = ServingProcess(repository, args=["--workers=2", "--shutdown-delay-secs=0.5"]).start()
    children = workers(proc)
    assert proc.stop(timeout=30) == 0
    assert not any(child.is_running() and child.status() != psutil.STATUS_ZOMBIE for child in children)
