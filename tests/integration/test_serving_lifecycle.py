"""Repository control, bad models and configs, quantization, graceful shutdown, fetch."""

from __future__ import annotations

import http.server
import tarfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from modelserve import examples
from modelserve.fetch import FetchError, fetch
from modelserve.launcher import ServingProcess

CONTRADICTING_CONFIG = """
name: "badcfg"
max_batch_size: 8
input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ 16 ] }, { name: "WRONG" data_type: TYPE_FP32 dims: [ 16 ] } ]
"""
WRONG_DIMS_CONFIG = 'max_batch_size: 8\ninput [ { name: "input" data_type: TYPE_FP32 dims: [ 255 ] } ]\n'
UNKNOWN_FIELD_CONFIG = "max_batch_size: 8\nsequence_batching { }\n"


def infer_simple(client: httpclient.InferenceServerClient, model: str = "simple") -> np.ndarray:
    inputs = []
    for name in ("INPUT0", "INPUT1"):
        item = httpclient.InferInput(name, [1, 16], "FP32")
        item.set_data_from_numpy(np.full((1, 16), 2, np.float32))
        inputs.append(item)
    return client.infer(model, inputs).as_numpy("OUTPUT0")


@pytest.fixture
def mixed_repository(tmp_path: Path) -> Path:
    root = tmp_path / "models"
    examples.write_repository(root, ["simple", "mlp"])
    examples.write_model(root, "badcfg", examples.simple(), config=CONTRADICTING_CONFIG)
    examples.write_model(root, "baddims", examples.mlp(), config=WRONG_DIMS_CONFIG)
    examples.write_model(root, "badfield", examples.mlp(), config=UNKNOWN_FIELD_CONFIG)
    garbage = root / "garbage" / "1"
    garbage.mkdir(parents=True)
    (garbage / "model.onnx").write_bytes(b"not an onnx model")
    return root


def test_bad_models_are_reported_and_others_serve(mixed_repository: Path) -> None:
    server = ServingProcess(mixed_repository).start(wait_ready=False)
    try:
        client = httpclient.InferenceServerClient(server.http_url)
        deadline = time.monotonic() + 30
        while not client.is_model_ready("mlp") and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.5)
        index = {m["name"]: m for m in client.get_model_repository_index()}
        assert index["simple"]["state"] == "READY" and index["mlp"]["state"] == "READY"
        assert "input[1].name: 'WRONG' is not an input of the model" in index["badcfg"]["reason"]
        assert "input[0].dims: [255]" in index["baddims"]["reason"]
        assert 'no field named "sequence_batching"' in index["badfield"]["reason"]
        assert "not a loadable ONNX model" in index["garbage"]["reason"]
        np.testing.assert_array_equal(infer_simple(client), np.full((1, 16), 4, np.float32))
        assert not client.is_server_ready(), "server must not be ready while a model failed to load"
        with pytest.raises(InferenceServerException, match="not ready"):
            infer_simple(client, "badcfg")
    finally:
        assert server.stop() == 0


def test_explicit_load_and_unload(tmp_path: Path) -> None:
    root = examples.write_repository(tmp_path / "models", ["simple", "mlp"])
    server = ServingProcess(root, args=["--model-control-mode=explicit", "--load-model=simple"]).start()
    try:
        http = httpclient.InferenceServerClient(server.http_url)
        grpc = grpcclient.InferenceServerClient(server.grpc_url)
        assert http.is_model_ready("simple") and not http.is_model_ready("mlp")
        assert {m["name"] for m in http.get_model_repository_index()} == {"simple", "mlp"}
        grpc.load_model("mlp")
        assert http.is_model_ready("mlp")
        http.unload_model("simple")
        assert not grpc.is_model_ready("simple")
        assert {m.name for m in grpc.get_model_repository_index(as_json=False).models if m.state == "READY"} == {"mlp"}
        http.load_model("simple")
        np.testing.assert_array_equal(infer_simple(http), np.full((1, 16), 4, np.float32))
        with pytest.raises(InferenceServerException, match="not in the repository"):
            http.load_model("missing")
        assert http.is_server_ready()
    finally:
        assert server.stop() == 0


def test_load_api_refused_without_explicit_mode(tmp_path: Path) -> None:
    server = ServingProcess(examples.write_repository(tmp_path / "models", ["simple"])).start()
    try:
        with pytest.raises(InferenceServerException, match="explicit"):
            httpclient.InferenceServerClient(server.http_url).unload_model("simple")
    finally:
        server.stop()


def test_int8_quantization_is_cached_and_checked(tmp_path: Path) -> None:
    root = examples.write_repository(tmp_path / "models", ["mlp"])
    server = ServingProcess(root, args=["--quantization=dynamic-int8", "--quantization-tolerance=0.5"]).start()
    try:
        cached = list((root / "mlp" / "1").glob("model.int8.*.onnx"))
        assert len(cached) == 1 and cached[0].stat().st_size < (root / "mlp" / "1" / "model.onnx").stat().st_size
        client = httpclient.InferenceServerClient(server.http_url)
        data = np.random.default_rng(0).standard_normal((2, 256), dtype=np.float32)
        item = httpclient.InferInput("input", [2, 256], "FP32")
        item.set_data_from_numpy(data)
        quantized = client.infer("mlp", [item]).as_numpy("output")
        import onnxruntime as ort

        exact = ort.InferenceSession(str(root / "mlp" / "1" / "model.onnx")).run(None, {"input": data})[0]
        assert 0 < np.max(np.abs(quantized - exact)) < 0.5
    finally:
        server.stop()
    strict = ServingProcess(root, args=["--quantization=dynamic-int8", "--quantization-tolerance=1e-9"]).start(
        wait_ready=False
    )
    try:
        client = httpclient.InferenceServerClient(strict.http_url)
        deadline = time.monotonic() + 30
        reason = ""
        while time.monotonic() < deadline and "refusing" not in reason:
            reason = next((m.get("reason", "") for m in client.get_model_repository_index() if m["name"] == "mlp"), "")
            time.sleep(0.2)
        assert "differs from FP32 by up to" in reason and "tolerance 1e-09" in reason
    finally:
        strict.stop()


def test_sigterm_finishes_in_flight_requests(tmp_path: Path) -> None:
    root = examples.write_repository(tmp_path / "models", ["simple"])
    server = ServingProcess(root, args=["--exit-timeout-secs=10"], env={"MODELSERVE_FAULT_LATENCY_MS": "800"}).start()
    client = httpclient.InferenceServerClient(server.http_url)
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(infer_simple, client)
        time.sleep(0.3)
        started = time.monotonic()
        assert server.process is not None
        server.process.terminate()
        np.testing.assert_array_equal(pending.result(timeout=10), np.full((1, 16), 4, np.float32))
    assert server.process.wait(15) == 0
    assert time.monotonic() - started < 10


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def file_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    served = tmp_path / "served"
    served.mkdir()
    handler = lambda *a, **kw: _QuietHandler(*a, directory=str(served), **kw)  # noqa: E731
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", served
    httpd.shutdown()


def test_fetch_onnx_and_archive_over_http(tmp_path: Path, file_server: tuple[str, Path]) -> None:
    url, served = file_server
    source = examples.write_repository(tmp_path / "src", ["simple"])
    (served / "simple.onnx").write_bytes((source / "simple" / "1" / "model.onnx").read_bytes())
    (source / "simple" / "config.pbtxt").write_text("max_batch_size: 2\n")
    with tarfile.open(served / "simple.tar.gz", "w:gz") as archive:
        archive.add(source / "simple", arcname=".")
    fetch(f"{url}/simple.onnx", tmp_path / "a" / "simple", version=3)
    assert (tmp_path / "a" / "simple" / "3" / "model.onnx").is_file()
    fetch(f"{url}/simple.tar.gz", tmp_path / "b" / "simple", version=1)
    assert (tmp_path / "b" / "simple" / "config.pbtxt").read_text() == "max_batch_size: 2\n"
    with pytest.raises(FetchError, match="404"):
        fetch(f"{url}/missing.onnx", tmp_path / "c", version=1)
    with pytest.raises(FetchError, match=r"version directory|does not exist"):
        fetch(f"{url}/simple.tar.gz", tmp_path / "d" / "simple", version=5)
    # s3:// and gs:// against real API servers on loopback: tests/integration/test_fetch_stores.py
