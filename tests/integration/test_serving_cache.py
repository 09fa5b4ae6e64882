"""Triton's response cache, driven by the real tritonclient over HTTP and gRPC against a real modelserve."""

from __future__ import annotations

import json
from collections.abc import Iterator
from http.client import HTTPConnection
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from modelserve import examples
from modelserve.launcher import ServingProcess

CACHED = "response_cache { enable: true }\n"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServingProcess]:
    root = tmp_path_factory.mktemp("cache") / "models"
    examples.write_model(root, "cnn", examples.cnn(), config=CACHED)
    examples.write_model(root, "simple", examples.simple(), config=CACHED)
    examples.write_model(root, "mlp", examples.mlp())  # no response_cache: never cached
    proc = ServingProcess(root, args=["--cache-config=local,size=1048576", "--max-batch-size=8"]).start()
    yield proc
    assert proc.stop() == 0


@pytest.fixture(scope="module")
def http(server: ServingProcess) -> Iterator[httpclient.InferenceServerClient]:
    client = httpclient.InferenceServerClient(server.http_url)
    yield client
    client.close()


@pytest.fixture(scope="module")
def grpc(server: ServingProcess) -> Iterator[grpcclient.InferenceServerClient]:
    client = grpcclient.InferenceServerClient(server.grpc_url)
    yield client
    client.close()


def http_infer(client: Any, model: str, feeds: dict[str, np.ndarray], binary: bool, outputs: list[str]) -> Any:
    inputs = []
    for name, array in feeds.items():
        item = httpclient.InferInput(name, list(array.shape), "FP32")
        item.set_data_from_numpy(array, binary_data=binary)
        inputs.append(item)
    requested = [httpclient.InferRequestedOutput(o, binary_data=binary) for o in outputs]
    return client.infer(model, inputs, outputs=requested)


def grpc_infer(client: Any, model: str, feeds: dict[str, np.ndarray], outputs: list[str]) -> Any:
    inputs = []
    for name, array in feeds.items():
        item = grpcclient.InferInput(name, list(array.shape), "FP32")
        item.set_data_from_numpy(array)
        inputs.append(item)
    return client.infer(model, inputs, outputs=[grpcclient.InferRequestedOutput(o) for o in outputs])


def stats(http: Any, model: str) -> dict[str, Any]:
    entry = http.get_inference_statistics(model)["model_stats"][0]
    infer = entry["inference_stats"]
    return {
        "hits": infer["cache_hit"]["count"],
        "misses": infer["cache_miss"]["count"],
        "success": infer["success"]["count"],
        "executions": entry["execution_count"],
        "inferences": entry["inference_count"],
    }


def image(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((1, 3, 64, 64), dtype=np.float32)


def test_a_repeated_request_hits_with_identical_bytes_over_http_and_grpc(http, grpc, server) -> None:
    feeds = {"input": image(1)}
    before = stats(http, "cnn")
    first = http_infer(http, "cnn", feeds, True, ["output"]).as_numpy("output")
    answers = [
        http_infer(http, "cnn", feeds, True, ["output"]).as_numpy("output"),
        http_infer(http, "cnn", feeds, False, ["output"]).as_numpy("output"),
        grpc_infer(grpc, "cnn", feeds, ["output"]).as_numpy("output"),
    ]
    for answer in answers:
        assert answer.tobytes() == first.tobytes()
    after = stats(http, "cnn")
    assert after["misses"] - before["misses"] == 1
    assert after["hits"] - before["hits"] == 3
    assert after["success"] - before["success"] == 4
    assert after["executions"] - before["executions"] == 1  # hits never run the model (as Triton counts)
    assert after["inferences"] - before["inferences"] == 1
    assert server.metric("nv_cache_num_hits_per_model", "cnn") == after["hits"]
    assert server.metric("nv_cache_num_misses_per_model", "cnn") == after["misses"]
    assert server.metric("nv_cache_hit_duration_per_model", "cnn") >= 0
    assert server.metric("nv_cache_miss_duration_per_model", "cnn") > 0
    grpc_stats = grpc.get_inference_statistics("cnn", as_json=True)["model_stats"][0]["inference_stats"]
    assert int(grpc_stats["cache_hit"]["count"]) == after["hits"]


def test_different_inputs_miss(http) -> None:
    before = stats(http, "cnn")
    a = http_infer(http, "cnn", {"input": image(2)}, True, ["output"]).as_numpy("output")
    b = http_infer(http, "cnn", {"input": image(3)}, True, ["output"]).as_numpy("output")
    assert not np.array_equal(a, b)
    after = stats(http, "cnn")
    assert (after["hits"] - before["hits"], after["misses"] - before["misses"]) == (0, 2)


def test_a_hit_answers_whichever_outputs_are_requested(http, grpc) -> None:
    x = np.arange(16, dtype=np.float32).reshape(1, 16)
    y = np.ones((1, 16), dtype=np.float32)
    feeds = {"INPUT0": x, "INPUT1": y}
    before = stats(http, "simple")
    add = http_infer(http, "simple", feeds, True, ["OUTPUT0"])
    sub = grpc_infer(grpc, "simple", feeds, ["OUTPUT1"])
    both = http_infer(http, "simple", feeds, False, ["OUTPUT1", "OUTPUT0"])
    np.testing.assert_array_equal(add.as_numpy("OUTPUT0"), x + y)
    np.testing.assert_array_equal(sub.as_numpy("OUTPUT1"), x - y)
    assert sub.as_numpy("OUTPUT0") is None
    np.testing.assert_array_equal(both.as_numpy("OUTPUT0"), x + y)
    np.testing.assert_array_equal(both.as_numpy("OUTPUT1"), x - y)
    after = stats(http, "simple")
    assert (after["hits"] - before["hits"], after["misses"] - before["misses"]) == (2, 1)


def test_a_model_without_response_cache_never_hits(http, grpc, server) -> None:
    feeds = {"input": np.full((1, 256), 0.5, dtype=np.float32)}
    before = stats(http, "mlp")
    answers = [http_infer(http, "mlp", feeds, True, ["output"]).as_numpy("output") for _ in range(3)]
    answers.append(grpc_infer(grpc, "mlp", feeds, ["output"]).as_numpy("output"))
    assert all(np.array_equal(a, answers[0]) for a in answers)
    after = stats(http, "mlp")
    assert after["hits"] == after["misses"] == 0
    assert after["executions"] - before["executions"] == 4
    assert 'nv_cache_num_hits_per_model{model="mlp"' not in server.metrics_text()
    with pytest.raises(KeyError):
        server.metric("nv_cache_num_misses_per_model", "mlp")


def post(server: Any, model: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    """One raw POST to the infer route: status, headers (lower-case names) and the exact answer bytes."""
    connection = HTTPConnection("127.0.0.1", server.http_port, timeout=10)
    try:
        connection.request("POST", f"/v2/models/{model}/infer", body=body, headers=headers)
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


def binary_body(array: np.ndarray, request_id: str = "") -> tuple[bytes, dict[str, str]]:
    header: dict[str, Any] = {
        "inputs": [{"name": "input", "shape": list(array.shape), "datatype": "FP32"}],
        "outputs": [{"name": "output", "parameters": {"binary_data": True}}],
    }
    header["inputs"][0]["parameters"] = {"binary_data_size": array.nbytes}
    if request_id:
        header["id"] = request_id
    raw = json.dumps(header).encode()
    headers = {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(len(raw))}
    return raw + array.tobytes(), headers


def json_body(array: np.ndarray, request_id: str = "") -> tuple[bytes, dict[str, str]]:
    payload: dict[str, Any] = {
        "inputs": [{"name": "input", "shape": list(array.shape), "datatype": "FP32", "data": array.ravel().tolist()}]
    }
    if request_id:
        payload["id"] = request_id
    return json.dumps(payload).encode(), {"Content-Type": "application/json"}


def test_a_byte_identical_request_is_answered_with_the_same_bytes_and_counted_as_a_hit(http, server) -> None:
    array = image(11)
    before = stats(http, "cnn")
    for make in (binary_body, json_body):
        body, headers = make(array, request_id="same")
        answers = [post(server, "cnn", body, headers) for _ in range(4)]
        assert all(status == 200 for status, _, _ in answers)
        assert len({raw for _, _, raw in answers}) == 1
        assert len({tuple(sorted(h.items() - {("date", h["date"])})) for _, h, _ in answers}) == 1
    after = stats(http, "cnn")
    assert after["misses"] - before["misses"] == 1  # the JSON form's first request hit the binary form's result
    assert after["hits"] - before["hits"] == 7
    assert after["success"] - before["success"] == 8
    assert after["executions"] - before["executions"] == 1
    assert server.metric("nv_cache_num_hits_per_model", "cnn") == after["hits"]
    expected = http_infer(http, "cnn", {"input": array}, False, ["output"]).as_numpy("output")
    status, _, raw = post(server, "cnn", *json_body(array, request_id="same"))
    assert status == 200
    assert np.array(json.loads(raw)["outputs"][0]["data"], np.float32).tobytes() == expected.tobytes()
    assert json.loads(raw)["id"] == "same"


def test_the_same_tensors_under_another_id_hit_and_answer_their_own_id(http, server) -> None:
    array = image(12)
    before = stats(http, "cnn")
    answers = {rid: post(server, "cnn", *json_body(array, request_id=rid))[2] for rid in ("a", "b", "a", "c")}
    decoded = {rid: json.loads(raw) for rid, raw in answers.items()}
    assert {rid: d["id"] for rid, d in decoded.items()} == {"a": "a", "b": "b", "c": "c"}
    assert len({orjson_outputs(d) for d in decoded.values()}) == 1
    after = stats(http, "cnn")
    assert (after["hits"] - before["hits"], after["misses"] - before["misses"]) == (3, 1)


def orjson_outputs(answer: dict[str, Any]) -> str:
    return json.dumps(answer["outputs"], sort_keys=True)


def test_a_malformed_request_is_refused_every_time_even_when_repeated(server) -> None:
    body, headers = binary_body(image(13))
    headers["Inference-Header-Content-Length"] = str(int(headers["Inference-Header-Content-Length"]) - 1)
    for _ in range(2):
        status, _, raw = post(server, "cnn", body, headers)
        assert status == 400, raw


def test_a_reload_with_new_weights_never_answers_from_the_old_load(tmp_path) -> None:
    """The same name and version number, other weights: the cached results of the first load must
    not answer for the second (the key holds the load, not only the version number)."""
    root = tmp_path / "models"
    examples.write_model(root, "cnn", examples.cnn(seed=0), config=CACHED)
    proc = ServingProcess(
        root, args=["--cache-config=local,size=1048576", "--model-control-mode=explicit", "--load-model=cnn"]
    ).start()
    client = httpclient.InferenceServerClient(proc.http_url)
    try:
        before = http_infer(client, "cnn", {"input": image(7)}, True, ["output"]).as_numpy("output")
        assert stats(client, "cnn")["misses"] == 1
        examples.write_model(root, "cnn", examples.cnn(seed=1), config=CACHED)  # new weights, version 1 again
        client.load_model("cnn")
        after = http_infer(client, "cnn", {"input": image(7)}, True, ["output"]).as_numpy("output")
        assert not np.array_equal(before, after), "the reloaded model answered with the old load's cached result"
        counts = stats(client, "cnn")
        assert (counts["hits"], counts["misses"]) == (0, 1), counts
    finally:
        client.close()
        assert proc.stop() == 0
