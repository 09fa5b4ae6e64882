"""Both gRPC front ends on a real modelserve: the on-loop one (the default) against garbled HTTP/2,
and `--grpc-frontend=grpcio` (grpc.aio) still serving the real tritonclient."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelserve import examples
from modelserve import h2frames as f
from modelserve.launcher import ServingProcess
from modelserve.proto import grpc_service_pb2 as pb

SAFETY = 20.0  # seconds a socket read may block before the test fails as hung (never an assertion on time)
FUZZ_PING = b"fuzzping"
LIVE_PATH = b"/inference.GRPCInferenceService/ServerLive"
LIVE_BLOCK = (
    b"\x83\x86\x04" + bytes((len(LIVE_PATH),)) + LIVE_PATH + f.hpack_literal(b"content-type", b"application/grpc")
)


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return examples.write_repository(tmp_path_factory.mktemp("repo") / "models", ["simple"])


@pytest.fixture(scope="module")
def server(repo: Path) -> Iterator[ServingProcess]:
    proc = ServingProcess(repo).start()
    yield proc
    assert proc.stop() == 0


def simple_inputs() -> list[grpcclient.InferInput]:
    inputs = []
    for name in ("INPUT0", "INPUT1"):
        item = grpcclient.InferInput(name, [1, 16], "FP32")
        item.set_data_from_numpy(np.full((1, 16), 2, np.float32))
        inputs.append(item)
    return inputs


def frames_of(data: bytes) -> list[tuple[int, int, int, bytes]]:
    out, pos = [], 0
    while pos + 9 <= len(data):
        length = int.from_bytes(data[pos : pos + 3], "big")
        if pos + 9 + length > len(data):
            break
        out.append(
            (
                data[pos + 3],
                data[pos + 4],
                int.from_bytes(data[pos + 5 : pos + 9], "big"),
                data[pos + 9 : pos + 9 + length],
            )
        )
        pos += 9 + length
    return out


def outcome(port: int, payload: bytes) -> str:
    """Send the preface, SETTINGS, `payload` and a PING; 'ping' if the server still answers it, 'goaway' if it
    sent GOAWAY, 'closed' if it closed the connection without one."""
    with socket.create_connection(("127.0.0.1", port), timeout=SAFETY) as sock:
        sock.sendall(f.PREFACE + f.settings_frame({}) + payload + f.ping_frame(FUZZ_PING))
        received = b""
        while True:
            frames = frames_of(received)
            if any(kind == f.GOAWAY for kind, _, _, _ in frames):
                return "goaway"
            if any(kind == f.PING and flags & f.ACK and body == FUZZ_PING for kind, flags, _, body in frames):
                return "ping"
            try:
                chunk = sock.recv(1 << 16)
            except ConnectionResetError:
                return "closed"
            if not chunk:
                return "closed"
            received += chunk


stream_ids = st.sampled_from([0, 1, 1, 1, 2, 3, 5, 7, f.MAX_WINDOW]) | st.integers(0, f.MAX_WINDOW)
frame_kinds = st.sampled_from(range(10)) | st.integers(0, 255)
flag_bytes = st.sampled_from([0, f.END_STREAM, f.ACK, f.END_HEADERS, f.PADDED]) | st.integers(0, 255)


@st.composite
def frames(draw: st.DrawFn) -> bytes:
    kind = draw(frame_kinds)
    real_call = kind == f.HEADERS and draw(st.booleans())  # streams open; DATA, RST_STREAM... land on them
    payload = LIVE_BLOCK if real_call else draw(st.binary(max_size=64))
    return f.frame(kind, draw(flag_bytes), draw(stream_ids), payload)


OPEN_CALL = f.frame(f.HEADERS, f.END_HEADERS, 1, LIVE_BLOCK)  # stream 1 open, its body still to come
garbled = (
    st.lists(frames(), min_size=1, max_size=8).map(b"".join)
    | st.lists(frames(), min_size=1, max_size=8).map(lambda parts: OPEN_CALL + b"".join(parts))
    | st.binary(min_size=1, max_size=200).map(
        lambda raw: raw + b"\0" * (f.DEFAULT_MAX_FRAME_SIZE + 9)  # completes any frame the garbage started
    )
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(payload=garbled)
def test_garbled_http2_gets_goaway_or_a_close_and_other_connections_go_on(
    server: ServingProcess, payload: bytes
) -> None:
    assert outcome(server.grpc_port, payload) in ("ping", "goaway", "closed")
    client = grpcclient.InferenceServerClient(server.grpc_url)
    assert (client.infer("simple", simple_inputs(), client_timeout=SAFETY).as_numpy("OUTPUT0") == 4).all()
    client.close()


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (f.frame(f.DATA, 0, 0, b"x"), "goaway"),
        (f.frame(f.HEADERS, f.END_HEADERS | f.END_STREAM, 1, LIVE_BLOCK), "ping"),
        (f.frame(0x42, 0xFF, 9, b"unknown frame types are ignored"), "ping"),
        (b"\xff" * 50 + b"\0" * (f.DEFAULT_MAX_FRAME_SIZE + 9), "goaway"),
    ],
)
def test_outcomes_of_known_frames(server: ServingProcess, payload: bytes, expected: str) -> None:
    assert outcome(server.grpc_port, payload) == expected


def test_the_grpcio_front_end_still_serves(repo: Path) -> None:
    proc = ServingProcess(repo, args=["--grpc-frontend=grpcio"]).start()
    try:
        client = grpcclient.InferenceServerClient(proc.grpc_url)
        assert client.is_server_ready() and client.get_model_metadata("simple").name == "simple"
        assert (client.infer("simple", simple_inputs()).as_numpy("OUTPUT1") == 0).all()
        client.close()
        with grpc.insecure_channel(proc.grpc_url) as channel:
            stream = channel.stream_stream("/inference.GRPCInferenceService/ModelStreamInfer")
            replies = list(
                stream(iter([pb.ModelInferRequest(model_name="absent").SerializeToString()]), timeout=SAFETY)
            )
        assert "absent" in pb.ModelStreamInferResponse.FromString(replies[0]).error_message
    finally:
        assert proc.stop() == 0
