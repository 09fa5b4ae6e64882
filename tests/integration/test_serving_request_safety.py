"""Hostile requests against a real modelserve: bounded inflation, 4xx for every client fault, one-line messages.

The bombs are built in code: 200 MiB of zeros, deflated to ~200 KiB. The server's peak RSS
(VmHWM in /proc/<pid>/status) must not move by more than a few MiB while it refuses them.
"""

from __future__ import annotations

import gzip
import json
import socket
import threading
import time
import zlib
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest

from modelserve import examples
from modelserve.launcher import ServingProcess
from modelserve.proto import grpc_service_pb2 as pb

MAX_BODY = 1 << 20
BOMB_BYTES = 200 << 20
MIB = 1 << 20
INFER = "/v2/models/simple/infer"
GRPC_INFER = "/inference.GRPCInferenceService/ModelInfer"
GRPC_STREAM = "/inference.GRPCInferenceService/ModelStreamInfer"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServingProcess]:
    repo = examples.write_repository(tmp_path_factory.mktemp("repo") / "models", ["simple"])
    proc = ServingProcess(repo, args=[f"--http-max-body-bytes={MAX_BODY}"]).start()
    yield proc
    assert proc.stop() == 0


@pytest.fixture(scope="module")
def client(server: ServingProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=f"http://{server.http_url}", timeout=20) as c:
        yield c


def vm_kib(server: ServingProcess, field: str) -> int:
    assert server.process is not None
    for line in Path(f"/proc/{server.process.pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise KeyError(field)


@cache
def zeros_compressed(wbits: int, size: int = BOMB_BYTES) -> bytes:
    encoder = zlib.compressobj(9, zlib.DEFLATED, wbits)
    block = b"\0" * MIB
    parts = [encoder.compress(block) for _ in range(size // MIB)]
    return b"".join([*parts, encoder.flush()])


def good_body() -> bytes:
    inputs = [
        {"name": n, "datatype": "FP32", "shape": [1, 16], "data": [float(i) for i in range(16)]}
        for n in ("INPUT0", "INPUT1")
    ]
    return json.dumps({"inputs": inputs, "id": "r1"}).encode()


def assert_one_line_error(response: httpx.Response, status: int, fragment: str = "") -> str:
    assert response.status_code == status, response.text
    message = response.json()["error"]
    assert isinstance(message, str) and message and "\n" not in message
    assert fragment in message, message
    return message


@pytest.mark.parametrize(
    ("encoding", "wbits"),
    [("deflate", zlib.MAX_WBITS), ("deflate", -zlib.MAX_WBITS), ("gzip", 16 + zlib.MAX_WBITS)],
    ids=["deflate-zlib", "deflate-raw", "gzip"],
)
def test_decompression_bomb_is_413_and_memory_stays_flat(
    server: ServingProcess, client: httpx.Client, encoding: str, wbits: int
) -> None:
    bomb = zeros_compressed(wbits)
    assert len(bomb) < MAX_BODY  # the compressed body is within the limit: only inflation can exceed it
    peak_before = vm_kib(server, "VmHWM")
    started = time.monotonic()
    response = client.post(INFER, content=bomb, headers={"Content-Encoding": encoding})
    elapsed = time.monotonic() - started
    assert_one_line_error(response, 413, "inflates past the 1048576 byte limit")
    assert elapsed < 2.0, elapsed
    grown_mib = (vm_kib(server, "VmHWM") - peak_before) / 1024
    assert grown_mib < 16, f"peak RSS grew {grown_mib:.1f} MiB on a {BOMB_BYTES >> 20} MiB bomb"
    assert client.get("/v2/health/ready").status_code == 200


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "GZIP"])
def test_compressed_bodies_within_the_limit_are_served(client: httpx.Client, encoding: str) -> None:
    body = gzip.compress(good_body()) if encoding.lower() == "gzip" else zlib.compress(good_body())
    response = client.post(INFER, content=body, headers={"Content-Encoding": encoding})
    assert response.status_code == 200, response.text
    out = {o["name"]: o["data"] for o in response.json()["outputs"]}
    assert out["OUTPUT0"] == [2.0 * i for i in range(16)]


def test_multi_member_gzip_is_one_body(client: httpx.Client) -> None:
    raw = good_body()
    body = gzip.compress(raw[:10]) + gzip.compress(raw[10:])
    response = client.post(INFER, content=body, headers={"Content-Encoding": "gzip"})
    assert response.status_code == 200, response.text
    assert response.json()["id"] == "r1"


def test_inflated_size_exactly_at_the_limit_is_accepted(client: httpx.Client) -> None:
    body = good_body()
    padded = body + b" " * (MAX_BODY - len(body))  # JSON allows trailing whitespace
    response = client.post(INFER, content=gzip.compress(padded), headers={"Content-Encoding": "gzip"})
    assert response.status_code == 200, response.text
    response = client.post(INFER, content=gzip.compress(padded + b" "), headers={"Content-Encoding": "gzip"})
    assert_one_line_error(response, 413, "limit")


BROKEN = [
    ("truncated gzip", "gzip", gzip.compress(b'{"inputs": []}' * 50)[:-12], "truncated gzip body"),
    ("truncated deflate", "deflate", zlib.compress(b'{"inputs": []}' * 50)[:-6], "truncated deflate body"),
    ("not gzip", "gzip", b"this is not gzip at all", "corrupt gzip body"),
    ("corrupt deflate", "deflate", b"x\x9c\xff\xff\xff\xff garbage", "corrupt deflate body"),
    ("trailing garbage", "deflate", zlib.compress(b"{}") + b"junk", "follow the end of the deflate body"),
    ("empty gzip", "gzip", gzip.compress(b"x")[:5], "truncated gzip body"),
]


@pytest.mark.parametrize(("encoding", "body", "fragment"), [b[1:] for b in BROKEN], ids=[b[0] for b in BROKEN])
def test_broken_compressed_bodies_are_400(client: httpx.Client, encoding: str, body: bytes, fragment: str) -> None:
    response = client.post(INFER, content=body, headers={"Content-Encoding": encoding})
    assert_one_line_error(response, 400, fragment)


def test_unknown_content_encoding_is_415(client: httpx.Client) -> None:
    response = client.post(INFER, content=good_body(), headers={"Content-Encoding": "br"})
    assert_one_line_error(response, 415, "'br' is not supported")


def test_grpc_compressed_bomb_is_resource_exhausted(server: ServingProcess) -> None:
    message = pb.ModelInferRequest(model_name="simple")
    message.inputs.add(name="INPUT0", datatype="FP32", shape=[1, 16])
    message.raw_input_contents.append(b"\0" * (64 * MIB))
    raw = message.SerializeToString()
    peak_before = vm_kib(server, "VmHWM")
    with (
        grpc.insecure_channel(server.grpc_url, compression=grpc.Compression.Gzip) as channel,
        pytest.raises(grpc.RpcError) as info,
    ):
        channel.unary_unary(GRPC_INFER)(raw, timeout=30)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, info.value.details()
    grown_mib = (vm_kib(server, "VmHWM") - peak_before) / 1024
    assert grown_mib < 16, f"peak RSS grew {grown_mib:.1f} MiB on a compressed 64 MiB gRPC message"


def raw_http(server: ServingProcess, head: bytes, body: bytes = b"") -> tuple[int, bytes]:
    """One request over a plain socket (httpx would refuse to send the malformed headers)."""
    with socket.create_connection(("127.0.0.1", server.http_port), timeout=10) as sock:
        sock.sendall(head + body)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    status_line = data.split(b"\r\n", 1)[0]
    return int(status_line.split()[1]), data


def test_content_length_of_thousands_of_digits_is_4xx(server: ServingProcess) -> None:
    head = b"POST /v2/models/simple/infer HTTP/1.1\r\nHost: x\r\nContent-Length: " + b"9" * 5000 + b"\r\n\r\n"
    status, _ = raw_http(server, head)
    assert 400 <= status < 500
    assert server.http_get("/v2/health/ready") == 200


@pytest.mark.parametrize("value", [b"9" * 5000, b"1" + b"0" * 30, b"-1", b"12x", "٣".encode(), b"\xff\xfe"])
def test_inference_header_length_malformed_is_4xx(client: httpx.Client, value: bytes) -> None:
    headers = {"Inference-Header-Content-Length": value}
    response = client.post(INFER, content=good_body(), headers=headers)
    assert 400 <= response.status_code < 500, response.text
    assert len(assert_one_line_error(response, response.status_code)) < 300


def with_shape(shape: list[int], data: object = ()) -> dict[str, object]:
    return {"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": shape, "data": list(data)}]}  # type: ignore[call-overload]


SHAPES = [
    ("65 dimensions", with_shape([1] * 65, [0.0]), "65 dimensions; at most 64"),
    ("dimension 2**63-1 with a zero", with_shape([2**63 - 1, 0]), "too large"),
    ("dimensions whose product overflows", with_shape([2**40, 2**40, 0]), "too large"),
    ("dimension 2**64-1", with_shape([2**64 - 1, 0]), ""),
    ("1000 dimensions of 0", with_shape([0] * 1000), "at most 64"),
]


@pytest.mark.parametrize(("body", "fragment"), [s[1:] for s in SHAPES], ids=[s[0] for s in SHAPES])
def test_hostile_shapes_are_400(client: httpx.Client, body: object, fragment: str) -> None:
    message = assert_one_line_error(client.post(INFER, json=body), 400, fragment)
    assert len(message) <= 1000


def test_deeply_nested_id_and_data_are_400(client: httpx.Client) -> None:
    for depth in (900, 1000, 5000):
        nested = "[" * depth + "]" * depth
        body = good_body()[:-1] + b', "id": ' + nested.encode() + b"}"
        assert_one_line_error(client.post(INFER, content=body), 400)
        deep_data = b'{"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, 16], "data": '
        response = client.post(INFER, content=deep_data + nested.encode() + b"}]}")
        assert_one_line_error(response, 400)
    response = client.post(INFER, content=good_body()[:-1] + b', "id": 7}')
    assert response.status_code == 200 and response.json()["id"] == "7"


def test_long_names_are_echoed_clipped_on_one_line(server: ServingProcess, client: httpx.Client) -> None:
    long_name = "n\n" + "x" * 100_000
    message = assert_one_line_error(client.post(f"/v2/models/{'m' * 60_000}/infer", content=good_body()), 404)
    assert len(message) < 300 and "mmm..." in message
    body = {"inputs": [{"name": long_name, "datatype": "FP32", "shape": [1, 16], "data": [0.0] * 16}]}
    message = assert_one_line_error(client.post(INFER, json=body), 400, "unexpected input")
    assert len(message) < 400
    body = {"inputs": [{"name": "INPUT0", "datatype": "Q" * 100_000, "shape": [1], "data": [0]}]}
    assert len(assert_one_line_error(client.post(INFER, json=body), 400, "unknown datatype")) < 400
    with grpc.insecure_channel(server.grpc_url) as channel:
        call = channel.unary_unary(GRPC_INFER)
        with pytest.raises(grpc.RpcError) as info:
            call(pb.ModelInferRequest(model_name="m" * 100_000).SerializeToString(), timeout=10)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    assert len(info.value.details()) < 300


def grpc_request(shape: list[int], raw: bytes, name: str = "INPUT0") -> pb.ModelInferRequest:
    message = pb.ModelInferRequest(model_name="simple", id="s")
    for tensor_name in ("INPUT0", "INPUT1"):
        message.inputs.add(name=name if tensor_name == "INPUT0" else tensor_name, datatype="FP32", shape=shape)
        message.raw_input_contents.append(raw)
    return message


def test_grpc_hostile_shapes_are_invalid_argument(server: ServingProcess) -> None:
    with grpc.insecure_channel(server.grpc_url) as channel:
        call = channel.unary_unary(GRPC_INFER)
        for shape in ([1] * 65, [2**62, 2**62, 0], [2**63 - 1, 0]):
            with pytest.raises(grpc.RpcError) as info:
                call(grpc_request(shape, b"").SerializeToString(), timeout=10)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value.details()
            assert "\n" not in info.value.details()


def test_bad_stream_message_answers_with_error_and_the_stream_goes_on(server: ServingProcess) -> None:
    good = grpc_request([1, 16], np.ones((1, 16), np.float32).tobytes()).SerializeToString()
    messages = [
        b"\xff\xff\xff\xff not a protobuf",
        good,
        grpc_request([1] * 65, b"").SerializeToString(),
        grpc_request([1, 16], b"\0" * 60).SerializeToString(),
        pb.ModelInferRequest(model_name="nope").SerializeToString(),
        good,
    ]
    with grpc.insecure_channel(server.grpc_url) as channel:
        stream = channel.stream_stream(GRPC_STREAM)
        replies = [pb.ModelStreamInferResponse.FromString(r) for r in stream(iter(messages), timeout=20)]
    assert len(replies) == len(messages)
    errors = [r.error_message for r in replies]
    assert "malformed ModelInferRequest" in errors[0]
    assert errors[1] == "" and errors[5] == ""
    assert "at most 64" in errors[2] and "needs 64 bytes of data, got 60" in errors[3] and "unknown model" in errors[4]
    for reply in (replies[1], replies[5]):
        out = np.frombuffer(reply.infer_response.raw_output_contents[0], np.float32)
        assert out.tolist() == [2.0] * 16


def test_health_answers_while_a_large_bytes_body_decodes(tmp_path: Path) -> None:
    """4 Mi zero-length BYTES elements decode on a worker thread (for a model that exists: an unknown one
    is refused before the body is read); health answers meanwhile."""
    repo = examples.write_repository(tmp_path / "models", ["simple"])
    server = ServingProcess(repo, args=[f"--http-max-body-bytes={64 * MIB}"]).start()
    try:
        count = 4 * MIB
        header = json.dumps(
            {"inputs": [{"name": "S", "datatype": "BYTES", "shape": [count], "parameters": {"binary_data_size": 4 * count}}]}
        ).encode()  # fmt: skip
        body = header + b"\0" * (4 * count)
        result: dict[str, object] = {}

        def send() -> None:
            with httpx.Client(timeout=120) as c:
                started = time.monotonic()
                result["response"] = c.post(
                    f"http://{server.http_url}/v2/models/simple/infer",
                    content=body,
                    headers={"Inference-Header-Content-Length": str(len(header))},
                )
                result["seconds"] = time.monotonic() - started

        sender = threading.Thread(target=send)
        sender.start()
        worst = 0.0
        probes = 0
        with httpx.Client(base_url=f"http://{server.http_url}", timeout=5) as health:
            while sender.is_alive():
                started = time.monotonic()
                assert health.get("/v2/health/live").status_code == 200
                worst = max(worst, time.monotonic() - started)
                probes += 1
                time.sleep(0.05)
        sender.join()
        response = result["response"]
        assert isinstance(response, httpx.Response)
        assert response.status_code == 400 and "unexpected input 'S'" in response.text, response.text
        assert probes >= 3, (probes, result["seconds"])
        assert worst < 1.0, f"health took {worst:.2f}s while the body decoded ({result['seconds']:.1f}s)"
    finally:
        assert server.stop() == 0


def test_bytes_count_larger_than_the_data_is_refused_at_once(client: httpx.Client) -> None:
    header = json.dumps(
        {"inputs": [{"name": "S", "datatype": "BYTES", "shape": [2**40], "parameters": {"binary_data_size": 8}}]}
    ).encode()
    started = time.monotonic()
    response = client.post(
        INFER, content=header + b"\0" * 8, headers={"Inference-Header-Content-Length": str(len(header))}
    )
    assert_one_line_error(response, 400, "cannot fit in 8 bytes")
    assert time.monotonic() - started < 1.0


def test_rejected_large_grpc_calls_do_not_keep_their_memory(tmp_path: Path) -> None:
    """20 ModelInfer calls of 60 MiB with raw contents of the wrong size: RSS comes back down."""
    repo = examples.write_repository(tmp_path / "models", ["simple"])
    server = ServingProcess(repo).start()
    try:
        start_rss = vm_kib(server, "VmRSS")
        message = pb.ModelInferRequest(model_name="simple")
        for name in ("INPUT0", "INPUT1"):
            message.inputs.add(name=name, datatype="FP32", shape=[1, 16])
            message.raw_input_contents.append(b"\0" * (30 * MIB))
        raw = message.SerializeToString()
        with grpc.insecure_channel(server.grpc_url) as channel:
            call = channel.unary_unary(GRPC_INFER)
            for _ in range(20):
                with pytest.raises(grpc.RpcError) as info:
                    call(raw, timeout=30)
                assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
                assert "needs 64 bytes of data" in info.value.details()
        time.sleep(2)
        grown_mib = (vm_kib(server, "VmRSS") - start_rss) / 1024
        peak_mib = vm_kib(server, "VmHWM") / 1024
        assert grown_mib < 50, f"RSS still {grown_mib:.0f} MiB above the start after 20 rejected 60 MiB calls"
        assert peak_mib < 1024, f"peak RSS {peak_mib:.0f} MiB"
    finally:
        assert server.stop() == 0
