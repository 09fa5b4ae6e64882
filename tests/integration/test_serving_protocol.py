"""The real tritonclient (HTTP and gRPC) against a real modelserve process."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException, np_to_triton_dtype

from modelserve import examples
from modelserve.launcher import ServingProcess

TYPES = {
    "BOOL": np.bool_, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32, "UINT64": np.uint64,
    "INT8": np.int8, "INT16": np.int16, "INT32": np.int32, "INT64": np.int64,
    "FP16": np.float16, "FP32": np.float32, "FP64": np.float64, "BYTES": np.object_,
}  # fmt: skip


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return examples.write_repository(tmp_path_factory.mktemp("repo") / "models")


@pytest.fixture(scope="module")
def server(repository: Path) -> Iterator[ServingProcess]:
    proc = ServingProcess(repository, args=["--max-queue-delay-us=2000", "--max-batch-size=32"]).start()
    yield proc
    assert proc.stop() == 0


@pytest.fixture(scope="module")
def http(server: ServingProcess) -> Iterator[httpclient.InferenceServerClient]:
    client = httpclient.InferenceServerClient(server.http_url, concurrency=16)
    yield client
    client.close()


@pytest.fixture(scope="module")
def grpc(server: ServingProcess) -> Iterator[grpcclient.InferenceServerClient]:
    client = grpcclient.InferenceServerClient(server.grpc_url)
    yield client
    client.close()


def reference(repository: Path, model: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(str(repository / model / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feeds), strict=True))


def http_infer(client, model: str, feeds: dict[str, np.ndarray], binary: bool, outputs: list[str] | None = None):
    inputs = []
    for name, array in feeds.items():
        item = httpclient.InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
        item.set_data_from_numpy(array, binary_data=binary)
        inputs.append(item)
    requested = [httpclient.InferRequestedOutput(o, binary_data=binary) for o in outputs] if outputs else None
    return client.infer(model, inputs, outputs=requested)


def grpc_infer(client, model: str, feeds: dict[str, np.ndarray], outputs: list[str] | None = None):
    inputs = []
    for name, array in feeds.items():
        item = grpcclient.InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
        item.set_data_from_numpy(array)
        inputs.append(item)
    requested = [grpcclient.InferRequestedOutput(o) for o in outputs] if outputs else None
    return client.infer(model, inputs, outputs=requested)


def test_health_and_server_metadata(http, grpc) -> None:
    assert http.is_server_live() and http.is_server_ready()
    assert grpc.is_server_live() and grpc.is_server_ready()
    assert "binary_tensor_data" in http.get_server_metadata()["extensions"]
    assert "statistics" in grpc.get_server_metadata().extensions


def test_model_metadata_and_config(http, grpc) -> None:
    meta = http.get_model_metadata("mlp")
    assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 256]}]
    assert grpc.get_model_metadata("mlp", "1").outputs[0].shape == [-1, 10]
    assert http.is_model_ready("mlp") and http.is_model_ready("mlp", "1")
    assert not http.is_model_ready("mlp", "7") and not grpc.is_model_ready("nope")
    config = http.get_model_config("simple")
    assert config["max_batch_size"] == 32 and config["input"][0]["dims"] == [16]
    assert grpc.get_model_config("simple").config.dynamic_batching.max_queue_delay_microseconds == 2000


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_http_results_equal_onnxruntime(http, repository, binary) -> None:
    rng = np.random.default_rng(1)
    feeds = {
        "INPUT0": rng.standard_normal((3, 16), dtype=np.float32),
        "INPUT1": rng.standard_normal((3, 16), dtype=np.float32),
    }
    result = http_infer(http, "simple", feeds, binary, outputs=["OUTPUT0", "OUTPUT1"])
    expected = reference(repository, "simple", feeds)
    for name in ("OUTPUT0", "OUTPUT1"):
        np.testing.assert_array_equal(result.as_numpy(name), expected[name])


def test_http_mlp_and_cnn_equal_onnxruntime(http, grpc, repository) -> None:
    rng = np.random.default_rng(2)
    for model, shape in (("mlp", (4, 256)), ("cnn", (2, 3, 64, 64))):
        feeds = {"input": rng.standard_normal(shape, dtype=np.float32)}
        expected = reference(repository, model, feeds)["output"]
        np.testing.assert_allclose(
            http_infer(http, model, feeds, True).as_numpy("output"), expected, rtol=1e-5, atol=1e-5
        )
        np.testing.assert_allclose(grpc_infer(grpc, model, feeds).as_numpy("output"), expected, rtol=1e-5, atol=1e-5)


def _typed_inputs() -> dict[str, np.ndarray]:
    feeds = {}
    for name, dtype in TYPES.items():
        if dtype is np.object_:
            feeds[f"in_{name}"] = np.array([[b"a", b"bc", b"", "d\u00e9".encode()]] * 2, dtype=np.object_)
        elif dtype is np.bool_:
            feeds[f"in_{name}"] = np.array([[True, False, True, True]] * 2)
        else:
            info = np.finfo(dtype) if np.dtype(dtype).kind == "f" else np.iinfo(dtype)
            feeds[f"in_{name}"] = np.array([[info.min, 0, 1, info.max]] * 2, dtype=dtype)
    return feeds


@pytest.mark.parametrize("transport", ["http-json", "http-binary", "grpc"])
def test_every_datatype_round_trips(http, grpc, repository, transport) -> None:
    feeds = _typed_inputs()
    if transport == "grpc":
        result = grpc_infer(grpc, "identity_types", feeds)
    else:
        result = http_infer(
            http, "identity_types", feeds, transport == "http-binary", outputs=[f"out_{t}" for t in TYPES]
        )
    as_text = np.vectorize(lambda b: b.decode(), otypes=[object])
    expected = reference(
        repository, "identity_types", {k: as_text(v) if v.dtype == object else v for k, v in feeds.items()}
    )
    for name in TYPES:
        got = result.as_numpy(f"out_{name}")
        if name == "BYTES":
            assert [x.decode() if isinstance(x, bytes) else x for x in got.reshape(-1)] == list(
                expected[f"out_{name}"].reshape(-1)
            )
        else:
            np.testing.assert_array_equal(got, expected[f"out_{name}"])
            assert got.dtype == np.dtype(TYPES[name])


def test_batched_requests_are_merged(server, repository) -> None:
    before_exec = server.metric("nv_inference_exec_count", "mlp")
    before_count = server.metric("nv_inference_count", "mlp")
    rng = np.random.default_rng(3)
    data = rng.standard_normal((64, 1, 256), dtype=np.float32)
    expected = reference(repository, "mlp", {"input": data.reshape(64, 256)})["output"]

    def one(i: int) -> np.ndarray:
        client = grpcclient.InferenceServerClient(server.grpc_url)
        try:
            return grpc_infer(client, "mlp", {"input": data[i]}).as_numpy("output")
        finally:
            client.close()

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(one, range(64)))
    np.testing.assert_allclose(np.concatenate(results), expected, rtol=1e-5, atol=1e-5)
    executions = server.metric("nv_inference_exec_count", "mlp") - before_exec
    inferences = server.metric("nv_inference_count", "mlp") - before_count
    assert inferences == 64
    assert executions < inferences, f"{executions} executions for {inferences} inferences: nothing was batched"


def test_statistics(http, grpc) -> None:
    http_infer(http, "simple", {"INPUT0": np.ones((1, 16), np.float32), "INPUT1": np.ones((1, 16), np.float32)}, True)
    stats = http.get_inference_statistics("simple")["model_stats"][0]
    assert stats["name"] == "simple" and stats["inference_stats"]["success"]["count"] >= 1
    assert grpc.get_inference_statistics("simple").model_stats[0].execution_count >= 1
    assert {s["name"] for s in http.get_inference_statistics()["model_stats"]} >= {"simple", "mlp"}


def test_metrics_have_triton_names_and_histogram(server) -> None:
    text = server.metrics_text()
    for name in (
        "nv_inference_request_success", "nv_inference_request_failure", "nv_inference_count",
        "nv_inference_exec_count", "nv_inference_request_duration_us", "nv_inference_queue_duration_us",
        "nv_inference_compute_input_duration_us", "nv_inference_compute_infer_duration_us",
        "nv_inference_compute_output_duration_us", "nv_inference_pending_request_count",
    ):  # fmt: skip
        assert f"# TYPE {name} " in text
    assert 'modelserve_inference_request_duration_seconds_bucket{model="simple",version="1",le="+Inf"}' in text


def test_errors_are_counted_as_failures(http, server) -> None:
    before = server.metric("nv_inference_request_failure", "simple")
    with pytest.raises(InferenceServerException):
        http_infer(
            http, "simple", {"INPUT0": np.ones((1, 16), np.float64), "INPUT1": np.ones((1, 16), np.float64)}, True
        )
    assert server.metric("nv_inference_request_failure", "simple") == before + 1
