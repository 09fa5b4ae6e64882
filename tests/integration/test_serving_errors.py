"""Bad input gets a clear 4xx / gRPC status, and the server stays healthy afterwards."""

from __future__ import annotations

import json
from collections.abc import Iterator

import grpc as grpclib
import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tritonclient.utils import InferenceServerException

from modelserve import examples
from modelserve.launcher import ServingProcess

MAX_BODY = 1 << 20


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServingProcess]:
    repo = examples.write_repository(tmp_path_factory.mktemp("repo") / "models", ["simple", "mlp"])
    proc = ServingProcess(repo, args=[f"--http-max-body-bytes={MAX_BODY}"]).start()
    yield proc
    assert proc.stop() == 0


@pytest.fixture(scope="module")
def client(server: ServingProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=f"http://{server.http_url}", timeout=10) as c:
        yield c


def simple_request(**changes: object) -> dict[str, object]:
    request: dict[str, object] = {
        "inputs": [
            {"name": "INPUT0", "datatype": "FP32", "shape": [1, 16], "data": list(range(16))},
            {"name": "INPUT1", "datatype": "FP32", "shape": [1, 16], "data": list(range(16))},
        ]
    }
    request.update(changes)
    return request


def with_input(index: int, **changes: object) -> dict[str, object]:
    request = simple_request()
    request["inputs"][index] = {**request["inputs"][index], **changes}  # type: ignore[index]
    return request


BAD_HTTP = [
    ("unknown model", "/v2/models/nope/infer", simple_request(), 404, "unknown model 'nope'"),
    ("unknown version", "/v2/models/simple/versions/9/infer", simple_request(), 404, "unknown version 9"),
    ("bad version", "/v2/models/simple/versions/x/infer", simple_request(), 400, "positive integer"),
    ("wrong tensor name", "/v2/models/simple/infer", with_input(0, name="IN0"), 400, "unexpected input 'IN0'"),
    (
        "wrong shape",
        "/v2/models/simple/infer",
        with_input(0, shape=[1, 15], data=list(range(15))),
        400,
        "shape [1, 15]",
    ),
    ("wrong datatype", "/v2/models/simple/infer", with_input(0, datatype="INT32"), 400, "datatype INT32"),
    ("unknown datatype", "/v2/models/simple/infer", with_input(0, datatype="FP8"), 400, "unknown datatype 'FP8'"),
    ("data length", "/v2/models/simple/infer", with_input(0, data=list(range(15))), 400, "needs 16 elements, got 15"),
    ("non-numeric data", "/v2/models/simple/infer", with_input(0, data=["a"] * 16), 400, "must be numbers"),
    (
        "missing input",
        "/v2/models/simple/infer",
        {"inputs": simple_request()["inputs"][:1]},
        400,
        "missing input 'INPUT1'",
    ),  # type: ignore[index]
    ("batch too large", "/v2/models/simple/infer", with_input(0, shape=[9, 16], data=[0.0] * 144), 400, "batch size 9"),
    (
        "unknown output",
        "/v2/models/simple/infer",
        simple_request(outputs=[{"name": "OUT9"}]),
        400,
        "unknown output 'OUT9'",
    ),
    ("inputs not a list", "/v2/models/simple/infer", {"inputs": {}}, 400, "'inputs' must be a list"),
    ("unknown route", "/v2/nothing", {}, 404, "no route"),
]


@pytest.mark.parametrize(("path", "body", "status", "message"), [c[1:] for c in BAD_HTTP], ids=[c[0] for c in BAD_HTTP])
def test_bad_http_requests(client: httpx.Client, path: str, body: object, status: int, message: str) -> None:
    response = client.post(path, json=body)
    assert response.status_code == status, response.text
    assert message in response.json()["error"]
    assert client.get("/v2/health/ready").status_code == 200


def test_malformed_json(client: httpx.Client) -> None:
    response = client.post("/v2/models/simple/infer", content=b'{"inputs": [')
    assert response.status_code == 400 and "malformed JSON" in response.json()["error"]


def test_binary_data_length_mismatch(client: httpx.Client) -> None:
    header = json.dumps(
        {"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, 16], "parameters": {"binary_data_size": 60}},
                    {"name": "INPUT1", "datatype": "FP32", "shape": [1, 16], "data": list(range(16))}]}
    ).encode()  # fmt: skip
    response = client.post(
        "/v2/models/simple/infer",
        content=header + b"\0" * 60,
        headers={"Inference-Header-Content-Length": str(len(header))},
    )
    assert response.status_code == 400 and "needs 64 bytes of data, got 60" in response.json()["error"]


def test_body_over_limit(client: httpx.Client) -> None:
    response = client.post("/v2/models/simple/infer", content=b" " * (MAX_BODY + 1))
    assert response.status_code == 413 and "limit" in response.json()["error"]
    assert client.get("/v2/health/live").status_code == 200


def test_grpc_errors_map_to_status_codes(server: ServingProcess) -> None:
    client = grpcclient.InferenceServerClient(server.grpc_url)
    good = grpcclient.InferInput("INPUT0", [1, 16], "FP32")
    good.set_data_from_numpy(np.zeros((1, 16), np.float32))
    other = grpcclient.InferInput("INPUT1", [1, 16], "FP32")
    other.set_data_from_numpy(np.zeros((1, 16), np.float32))
    with pytest.raises(InferenceServerException) as info:
        client.infer("nope", [good, other])
    assert info.value.status() == "StatusCode.NOT_FOUND"
    wrong = grpcclient.InferInput("INPUT1", [1, 16], "FP64")
    wrong.set_data_from_numpy(np.zeros((1, 16), np.float64))
    with pytest.raises(InferenceServerException) as info:
        client.infer("simple", [good, wrong])
    assert info.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert "datatype FP64" in info.value.message()
    assert client.is_server_ready()
    client.close()


def test_malformed_protobuf(server: ServingProcess) -> None:
    with grpclib.insecure_channel(server.grpc_url) as channel:
        call = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
        with pytest.raises(grpclib.RpcError) as info:
            call(b"\xff\xff\xff\xff not a protobuf", timeout=5)
        assert info.value.code() == grpclib.StatusCode.INVALID_ARGUMENT
        assert "malformed ModelInferRequest" in info.value.details()
    assert server.http_get("/v2/health/ready") == 200


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)
tensor = st.fixed_dictionaries(
    {},
    optional={
        "name": st.sampled_from(["INPUT0", "INPUT1", "x"]) | json_values,
        "datatype": st.sampled_from(["FP32", "INT8", "BYTES", "BOOL", "??"]) | json_values,
        "shape": st.lists(st.integers(-2, 40), max_size=3) | json_values,
        "data": st.lists(st.floats(allow_nan=False, allow_infinity=False, width=32), max_size=40) | json_values,
        "parameters": st.fixed_dictionaries({"binary_data_size": st.integers(-5, 100)}) | json_values,
    },
)
requests = st.fixed_dictionaries(
    {}, optional={"inputs": st.lists(tensor, max_size=3) | json_values, "outputs": json_values, "id": json_values}
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(body=requests, raw=st.binary(max_size=64), use_raw=st.booleans())
def test_generated_malformed_requests_never_break_the_server(
    client: httpx.Client, body: object, raw: bytes, use_raw: bool
) -> None:
    if use_raw:
        response = client.post("/v2/models/simple/infer", content=raw, headers={"Inference-Header-Content-Length": "3"})
    else:
        response = client.post("/v2/models/simple/infer", json=body)
    assert response.status_code in (200, 400, 404), response.text
    if response.status_code != 200:
        assert response.json()["error"]
    assert client.get("/v2/health/ready").status_code == 200
