"""Hypothesis-generated hostile requests over HTTP and gRPC against one real modelserve.

Every answer to a client fault is 4xx / a non-INTERNAL gRPC code with a one-line message,
no call hangs, and health answers within a second after each one.
"""

from __future__ import annotations

import gzip
import json
import time
import zlib
from collections.abc import Iterator

import grpc
import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelserve import examples
from modelserve.launcher import ServingProcess
from modelserve.proto import grpc_service_pb2 as pb

MAX_BODY = 256 * 1024
SERVER_FAULTS = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.DEADLINE_EXCEEDED}
DATATYPES = ["FP32", "FP16", "INT8", "UINT64", "INT64", "BYTES", "BOOL", "", "fp32", "X" * 300]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServingProcess]:
    repo = examples.write_repository(tmp_path_factory.mktemp("repo") / "models", ["simple"])
    proc = ServingProcess(repo, args=[f"--http-max-body-bytes={MAX_BODY}", "--model-control-mode=explicit"]).start()
    yield proc
    assert proc.stop() == 0


@pytest.fixture(scope="module")
def client(server: ServingProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=f"http://{server.http_url}", timeout=5) as c:
        yield c


names = st.sampled_from(["INPUT0", "INPUT1", "simple", "..", "../x", "%2e%2e", ""]) | st.text(max_size=30)
dims = st.sampled_from([0, 1, 16, 2**31, 2**62, 2**63 - 1]) | st.integers(0, 40)
shapes = st.lists(dims, max_size=4) | st.lists(st.just(1), min_size=60, max_size=70)
deep = st.integers(1, 3000).map(lambda n: json.loads("[" * min(n, 1000) + "]" * min(n, 1000)))
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**64), 2**64) | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=12,
)
tensors = st.fixed_dictionaries(
    {"name": names, "datatype": st.sampled_from(DATATYPES), "shape": shapes},
    optional={
        "data": st.lists(st.floats(allow_nan=False, width=32), max_size=20) | json_values | deep,
        "parameters": st.fixed_dictionaries({"binary_data_size": st.integers(-1, 64)}),
    },
)
bodies = st.fixed_dictionaries(
    {"inputs": st.lists(tensors, max_size=3)},
    optional={"id": json_values | deep, "outputs": json_values, "parameters": json_values},
)
paths = st.sampled_from(
    [
        "/v2/models/simple/infer",
        "/v2/models/simple/versions/1/infer",
        "/v2/models/simple/versions/99999999999999999999999999/infer",
        "/v2/models/nope/infer",
        "/v2/repository/index",
        "/v2/repository/models/../load",
        "/v2/repository/models/%2e%2e/load",
        "/v2/repository/models/%2Fetc/unload",
        "/v2/models/simple/config",
        "/v2/models/stats",
    ]
)
encodings = st.sampled_from(["", "gzip", "deflate", "br", "gzip, deflate", "identity"])
header_lengths = st.none() | st.sampled_from(["9" * 5000, "-1", "abc", ""]) | st.integers(0, 10**30).map(str)


def encode(raw: bytes, encoding: str, truncate: bool) -> bytes:
    if encoding == "gzip":
        raw = gzip.compress(raw)
    elif encoding == "deflate":
        raw = zlib.compress(raw)
    return raw[: max(1, len(raw) // 2)] if truncate and encoding in ("gzip", "deflate") else raw


def assert_healthy(client: httpx.Client) -> None:
    started = time.monotonic()
    assert client.get("/v2/health/live").status_code == 200
    assert time.monotonic() - started < 1.0


@settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(
    path=paths,
    body=bodies,
    encoding=encodings,
    truncate=st.booleans(),
    header_length=header_lengths,
    tail=st.binary(max_size=64),
)
def test_hostile_http_requests_get_4xx(
    client: httpx.Client, path: str, body: dict[str, object], encoding: str, truncate: bool,
    header_length: str | None, tail: bytes,
) -> None:  # fmt: skip
    raw = json.dumps(body).encode()
    headers = {}
    if header_length is not None:
        headers["Inference-Header-Content-Length"] = header_length
        raw += tail
    if encoding:
        headers["Content-Encoding"] = encoding
    started = time.monotonic()
    response = client.post(path, content=encode(raw, encoding, truncate), headers=headers)
    assert time.monotonic() - started < 5.0
    assert response.status_code < 500, (path, response.status_code, response.text[:300])
    if response.status_code >= 400:
        message = response.json()["error"]
        assert message and "\n" not in message and len(message) <= 1000
    assert_healthy(client)


raw_contents = st.lists(st.binary(max_size=80) | st.sampled_from([b"\0" * 64, b"\xff" * 8]), max_size=3)


@st.composite
def infer_messages(draw: st.DrawFn) -> bytes:
    if draw(st.booleans()) and draw(st.booleans()):
        return draw(st.binary(max_size=100))  # not a protobuf at all (or by chance a valid one)
    message = pb.ModelInferRequest(
        model_name=draw(names), model_version=draw(st.sampled_from(["", "1", "x", "9" * 40]))
    )
    for _ in range(draw(st.integers(0, 3))):
        tensor = message.inputs.add(name=draw(names), datatype=draw(st.sampled_from(DATATYPES)))
        tensor.shape.extend(draw(st.lists(st.integers(-3, 2**63 - 1) | dims, max_size=4) | shapes))
        tensor.contents.fp32_contents.extend(draw(st.lists(st.floats(width=32, allow_nan=False), max_size=20)))
        tensor.contents.bytes_contents.extend(draw(st.lists(st.binary(max_size=4), max_size=5)))
    message.raw_input_contents.extend(draw(raw_contents))
    return message.SerializeToString()


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(messages=st.lists(infer_messages(), min_size=1, max_size=4), repo_name=names)
def test_hostile_grpc_calls_are_never_internal(
    server: ServingProcess, client: httpx.Client, messages: list[bytes], repo_name: str
) -> None:
    with grpc.insecure_channel(server.grpc_url) as channel:
        infer = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
        for raw in messages:
            try:
                infer(raw, timeout=5)
            except grpc.RpcError as exc:
                assert exc.code() not in SERVER_FAULTS, (exc.code(), exc.details())
                assert "\n" not in (exc.details() or "") and len(exc.details() or "") <= 1000
        stream = channel.stream_stream("/inference.GRPCInferenceService/ModelStreamInfer")
        replies = list(stream(iter(messages), timeout=10))
        assert len(replies) == len(messages)  # one answer per message: a bad one never ends the stream
        for reply in map(pb.ModelStreamInferResponse.FromString, replies):
            assert not reply.error_message.startswith("internal error"), reply.error_message
        load = channel.unary_unary("/inference.GRPCInferenceService/RepositoryModelLoad")
        try:
            load(pb.RepositoryModelLoadRequest(model_name=repo_name).SerializeToString(), timeout=10)
        except grpc.RpcError as exc:
            assert exc.code() not in SERVER_FAULTS, (exc.code(), exc.details())
    assert_healthy(client)
