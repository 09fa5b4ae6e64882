"""Hypothesis-generated hostile requests over HTTP and gRPC against one real modelserve.

Every answer to a client fault is 4xx / a non-INTERNAL gRPC code with a one-line message,
no call hangs, and health answers within a second after each one. A deterministic corpus
then sends over 10,000 hostile HTTP requests and 2,000 gRPC calls (bombs, huge BYTES counts,
wrong-size raw contents, traversal names, deep JSON) while liveness is polled, and checks
peak RSS and that RSS comes back.
"""

from __future__ import annotations

import gzip
import http.client
import json
import random
import struct
import threading
import time
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

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


# --- a deterministic corpus at volume: >= 10,000 HTTP requests and >= 2,000 gRPC calls ---

HTTP_CORPUS_SIZE = 10_400
GRPC_CORPUS_SIZE = 2_200
CLIENTS = 4


def _tensor_json(rng: random.Random) -> dict[str, object]:
    kind = rng.randrange(8)
    shape: object = rng.choice([[1, 16], [0], [2**62, 2**62], [-1, 16], [1] * 70, [2**63], "x", [1.5], []])
    tensor: dict[str, object] = {
        "name": rng.choice(["INPUT0", "INPUT1", "", "../x", "n" * rng.choice([1, 5000])]),
        "datatype": rng.choice(DATATYPES),
        "shape": shape,
    }
    if kind == 0:
        tensor["data"] = [rng.random() for _ in range(rng.randrange(20))]
    elif kind == 1:
        tensor["data"] = json.loads("[" * 900 + "]" * 900)
    elif kind == 2:
        tensor["parameters"] = {"binary_data_size": rng.choice([-1, 0, 4, 2**40, "4", None])}
    elif kind == 3:
        tensor["data"] = rng.choice([None, {"a": 1}, "str", True, [[1, 2], [3]]])
    return tensor


def http_corpus(seed: int = 14) -> list[tuple[str, dict[str, str], bytes]]:
    """(path, headers, body) triples: every kind of client fault the issue names, deterministically."""
    rng = random.Random(seed)
    bombs = {
        "gzip": gzip.compress(b"\0" * (32 << 20)),
        "deflate": zlib.compress(b"\0" * (32 << 20)),
    }
    many_empty_bytes = struct.pack("<I", 0) * (MAX_BODY // 4 - 64)
    corpus: list[tuple[str, dict[str, str], bytes]] = []
    for index in range(HTTP_CORPUS_SIZE):
        path = rng.choice(HTTP_PATHS)
        headers: dict[str, str] = {}
        kind = index % 10
        if kind == 0:  # a decompression bomb
            encoding = rng.choice(["gzip", "deflate"])
            body, headers["Content-Encoding"] = bombs[encoding], encoding
        elif kind == 1:  # truncated or mislabelled compression
            raw = json.dumps({"inputs": [_tensor_json(rng)]}).encode()
            encoding = rng.choice(["gzip", "deflate", "br", "zstd, gzip"])
            body = encode(raw, encoding, truncate=True)
            headers["Content-Encoding"] = encoding
        elif kind == 2:  # a huge count of zero-length BYTES elements in binary data
            count = len(many_empty_bytes) // 4
            header = json.dumps({"inputs": [{"name": "INPUT0", "datatype": "BYTES", "shape": [1, count],
                                             "parameters": {"binary_data_size": len(many_empty_bytes)}}]}).encode()  # fmt: skip
            body = header + many_empty_bytes
            headers["Inference-Header-Content-Length"] = str(len(header))
        elif kind == 3:  # bad header lengths
            body = json.dumps({"inputs": [_tensor_json(rng)]}).encode() + rng.randbytes(rng.randrange(64))
            headers["Inference-Header-Content-Length"] = rng.choice(["9" * 5000, "-1", "abc", "", str(2**70), "10"])
        elif kind == 4:  # not JSON at all
            body = rng.randbytes(rng.randrange(1, 200))
        elif kind == 5:  # deep ids, odd outputs and parameters
            body = json.dumps({"inputs": [_tensor_json(rng)], "id": json.loads("[" * 950 + "]" * 950),
                               "outputs": rng.choice([5, [{"name": 1}], [{"name": "OUTPUT0", "parameters": 3}]]),
                               "parameters": rng.choice([[], "x", {"binary_data_output": "yes"}])}).encode()  # fmt: skip
        else:  # mutated tensors
            body = json.dumps({"inputs": [_tensor_json(rng) for _ in range(rng.randrange(4))]}).encode()
        corpus.append((path, headers, body))
    return corpus


HTTP_PATHS = [
    "/v2/models/simple/infer",
    "/v2/models/simple/versions/1/infer",
    "/v2/models/simple/versions/99999999999999999999999999/infer",
    "/v2/models/nope/infer",
    "/v2/repository/index",
    "/v2/repository/models/../load",
    "/v2/repository/models/%2e%2e/unload",
    "/v2/repository/models/%2Fetc%2Fpasswd/load",
    "/v2/models/" + "n" * 3000 + "/infer",
]


def grpc_corpus(seed: int = 14) -> list[tuple[str, bytes]]:
    """(method, serialized request) pairs, deterministically."""
    rng = random.Random(seed)
    corpus: list[tuple[str, bytes]] = []
    for index in range(GRPC_CORPUS_SIZE):
        kind = index % 8
        if kind == 0:
            corpus.append(("ModelInfer", rng.randbytes(rng.randrange(1, 300))))
            continue
        if kind == 1:
            name = rng.choice(["..", "../simple", "/etc", "%2e%2e", "simple/../../x", "n" * 5000, "simple"])
            method = rng.choice(["RepositoryModelLoad", "RepositoryModelUnload"])
            corpus.append((method, pb.RepositoryModelLoadRequest(model_name=name).SerializeToString()))
            continue
        message = pb.ModelInferRequest(model_name=rng.choice(["simple", "nope", "", "x" * 5000]),
                                       model_version=rng.choice(["", "1", "x", "9" * 40]))  # fmt: skip
        for name in ("INPUT0", "INPUT1")[: rng.randrange(3)]:
            tensor = message.inputs.add(name=name, datatype=rng.choice(DATATYPES))
            tensor.shape.extend(rng.choice([[1, 16], [2**62, 4], [1] * 70, [0], [1, 2**40]]))
            if kind == 2:  # a huge count of empty BYTES elements
                tensor.contents.bytes_contents.extend([b""] * 20_000)
            elif kind == 3:
                tensor.contents.fp32_contents.extend(rng.random() for _ in range(rng.randrange(40)))
        if kind in (4, 5):  # raw contents of the wrong size
            message.raw_input_contents.extend(
                rng.randbytes(rng.choice([0, 3, 63, 65, 200_000])) for _ in message.inputs
            )
        corpus.append(("ModelInfer", message.SerializeToString()))
    return corpus


def rss_kib(pid: int, field: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise KeyError(field)


class HealthWatch(threading.Thread):
    """Polls liveness every 50 ms on its own connection; records the slowest answer and any failure."""

    def __init__(self, server: ServingProcess) -> None:
        super().__init__(daemon=True)
        self.server, self.done, self.slowest, self.failures = server, threading.Event(), 0.0, 0

    def run(self) -> None:
        with httpx.Client(base_url=f"http://{self.server.http_url}", timeout=5) as client:
            while not self.done.is_set():
                started = time.monotonic()
                try:
                    ok = client.get("/v2/health/live").status_code == 200
                except httpx.HTTPError:
                    ok = False
                self.failures += not ok
                self.slowest = max(self.slowest, time.monotonic() - started)
                time.sleep(0.05)


def send_http(server: ServingProcess, chunk: list[tuple[str, dict[str, str], bytes]]) -> list[str]:
    problems: list[str] = []
    conn = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=10)
    for path, headers, body in chunk:
        started = time.monotonic()
        try:
            conn.request("POST", path, body, headers)
            response = conn.getresponse()
            payload = response.read()
        except (OSError, http.client.HTTPException) as exc:
            problems.append(f"{path}: {type(exc).__name__}")
            conn.close()
            continue
        if response.status >= 500 or time.monotonic() - started > 5.0:
            problems.append(f"{path} {headers}: {response.status} {payload[:200]!r}")
        if response.getheader("connection", "").lower() == "close":
            conn.close()
    conn.close()
    return problems


def test_deterministic_corpus_over_http_and_grpc(server: ServingProcess) -> None:
    assert server.process is not None
    pid = server.process.pid
    https, grpcs = http_corpus(), grpc_corpus()
    assert len(https) >= 10_000 and len(grpcs) >= 2_000
    baseline = rss_kib(pid)
    watch = HealthWatch(server)
    watch.start()
    with ThreadPoolExecutor(CLIENTS) as pool:
        problems = [p for ps in pool.map(lambda i: send_http(server, https[i::CLIENTS]), range(CLIENTS)) for p in ps]
    assert not problems, f"{len(problems)} server errors or hangs, e.g. {problems[:5]}"
    with grpc.insecure_channel(server.grpc_url) as channel:
        for method, raw in grpcs:
            call = channel.unary_unary(f"/inference.GRPCInferenceService/{method}")
            try:
                call(raw, timeout=5)
            except grpc.RpcError as exc:
                assert exc.code() not in SERVER_FAULTS, (method, exc.code(), exc.details())
                assert "\n" not in (exc.details() or "") and len(exc.details() or "") <= 1000
    watch.done.set()
    watch.join()
    assert watch.failures == 0 and watch.slowest < 1.0, (watch.failures, watch.slowest)
    assert rss_kib(pid, "VmHWM") < 1 << 20, "peak RSS must stay under 1 GiB"
    deadline = time.monotonic() + 10
    while rss_kib(pid) - baseline > 50 * 1024 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert rss_kib(pid) - baseline <= 50 * 1024, f"RSS {rss_kib(pid) >> 10} MiB from {baseline >> 10} MiB"
