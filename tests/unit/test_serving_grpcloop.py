"""The on-loop gRPC front end (modelserve.grpcloop) in this process, driven by a raw HTTP/2 client (the
`h2` package) where grpc clients cannot be made to misbehave, and by grpc.aio where they can.

What HTTP/2 and gRPC ask of a server: flow control both ways, CONTINUATION, padding, PRIORITY,
RST_STREAM, GOAWAY on protocol errors and on drain, grpc-timeout, grpc-encoding, trailers-only
errors, TLS with ALPN h2, the connection cap.
"""

from __future__ import annotations

import asyncio
import gzip
import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import h2.config
import h2.connection
import h2.events
import h2.settings
import numpy as np
import pytest
from hpack import Decoder

from modelserve import examples
from modelserve import h2frames as f
from modelserve.dataplane import DataPlane
from modelserve.faults import FaultInjector
from modelserve.grpcloop import GrpcLoopServer
from modelserve.proto import grpc_service_pb2 as pb
from modelserve.repository import Repository, RepositorySettings
from modelserve.tls import TlsFiles

pytestmark = pytest.mark.timeout(60)

SERVICE = "/inference.GRPCInferenceService/"
WIDE = """
max_batch_size: 0
input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ -1, 16 ] }, { name: "INPUT1" data_type: TYPE_FP32 dims: [ -1, 16 ] } ]
output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ -1, 16 ] }, { name: "OUTPUT1" data_type: TYPE_FP32 dims: [ -1, 16 ] } ]
"""
SAFETY = 20.0  # seconds a read may wait before the test fails as hung (never an assertion on time)


async def make_dataplane(root: Path, faults: FaultInjector | None = None) -> DataPlane:
    repository = Repository(RepositorySettings(root=root, startup_models=("simple", "wide")))
    await repository.load_startup_models()
    dp = DataPlane(repository, faults or FaultInjector())
    dp.lifecycle.started = True
    return dp


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = examples.write_repository(tmp_path / "repo", ["simple"])
    examples.write_model(root, "wide", examples.simple(), config=WIDE)
    return root


@pytest.fixture
async def server(repo: Path) -> AsyncIterator[GrpcLoopServer]:
    dp = await make_dataplane(repo)
    srv = GrpcLoopServer(dp, "127.0.0.1", 0, 1 << 20)
    await srv.start()
    yield srv
    await srv.stop(1.0)
    await dp.repository.close()


@pytest.fixture
async def slow_server(repo: Path) -> AsyncIterator[GrpcLoopServer]:
    """Every inference takes 3 s (fault injection): calls stay in flight while the test acts."""
    dp = await make_dataplane(repo, FaultInjector(latency_ms=3000))
    srv = GrpcLoopServer(dp, "127.0.0.1", 0, 1 << 20)
    await srv.start()
    yield srv
    await srv.stop(0.1)
    await dp.repository.close()


def infer_request(model: str = "simple", rows: int = 1) -> bytes:
    msg = pb.ModelInferRequest(model_name=model, id="r")
    for name, value in (("INPUT0", 1.0), ("INPUT1", 2.0)):
        msg.inputs.add(name=name, datatype="FP32", shape=[rows, 16])
        msg.raw_input_contents.append(np.full((rows, 16), value, np.float32).tobytes())
    return msg.SerializeToString()


def framed(message: bytes) -> bytes:
    return b"\x00" + len(message).to_bytes(4, "big") + message


def request_headers(method: str, **extra: str) -> list[tuple[str, str]]:
    return [
        (":method", "POST"), (":scheme", "http"), (":path", SERVICE + method), (":authority", "test"),
        ("content-type", "application/grpc"), ("te", "trailers"), *extra.items(),
    ]  # fmt: skip


@dataclass
class Answer:
    headers: dict[bytes, bytes] = field(default_factory=dict)
    body: bytearray = field(default_factory=bytearray)
    trailers: dict[bytes, bytes] = field(default_factory=dict)
    reset: int | None = None
    ended: bool = False

    @property
    def status(self) -> int:
        fields = self.trailers or self.headers
        return int(fields[b"grpc-status"])

    def messages(self) -> list[bytes]:
        out, pos = [], 0
        while pos < len(self.body):
            length = int.from_bytes(self.body[pos + 1 : pos + 5], "big")
            out.append(bytes(self.body[pos + 5 : pos + 5 + length]))
            pos += 5 + length
        return out


class RawClient:
    """An HTTP/2 client from the `h2` package over an asyncio connection; windows are given back by hand."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, window: int) -> None:
        self.reader, self.writer = reader, writer
        config = h2.config.H2Configuration(client_side=True, header_encoding=None)
        self.conn = h2.connection.H2Connection(config)
        self.conn.local_settings = h2.settings.Settings(
            client=True, initial_values={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: window}
        )
        self.conn.initiate_connection()
        self.flush()
        self.answers: dict[int, Answer] = {}
        self.terminated: h2.events.ConnectionTerminated | None = None
        self.closed = False
        self.on_data: Callable[[h2.events.DataReceived], None] = self.give_back

    @classmethod
    async def open(cls, port: int, window: int = 65_535, ssl_context: ssl.SSLContext | None = None) -> RawClient:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ssl_context)
        client = cls(reader, writer, window)
        while client.conn.remote_settings.initial_window_size == 65_535:  # the server's SETTINGS and windows
            await client.pump()
        return client

    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            self.writer.write(data)

    def give_back(self, event: h2.events.DataReceived) -> None:
        if event.flow_controlled_length and not self.closed:
            self.conn.increment_flow_control_window(event.flow_controlled_length)
            if event.stream_id in self.conn.streams and not self.conn.streams[event.stream_id].closed:
                self.conn.increment_flow_control_window(event.flow_controlled_length, event.stream_id)

    def send(self, method: str, body: bytes, end: bool = True, **headers: str) -> int:
        stream_id = self.conn.get_next_available_stream_id()
        self.conn.send_headers(stream_id, request_headers(method, **headers))
        step = self.conn.max_outbound_frame_size
        for start in range(0, len(body), step):
            self.conn.send_data(stream_id, body[start : start + step], end_stream=end and start + step >= len(body))
        if not body and end:
            self.conn.end_stream(stream_id)
        self.flush()
        self.answers[stream_id] = Answer()
        return stream_id

    async def pump(self) -> None:
        """Read once and handle what arrived."""
        data = await asyncio.wait_for(self.reader.read(1 << 16), SAFETY)
        if not data:
            self.closed = True
            return
        for event in self.conn.receive_data(data):
            answer = self.answers.get(getattr(event, "stream_id", 0) or 0)
            if isinstance(event, h2.events.ResponseReceived) and answer:
                answer.headers = dict(event.headers)
            elif isinstance(event, h2.events.TrailersReceived) and answer:
                answer.trailers = dict(event.headers)
            elif isinstance(event, h2.events.DataReceived):
                if answer:
                    answer.body += event.data
                self.on_data(event)
            elif isinstance(event, h2.events.StreamEnded) and answer:
                answer.ended = True
            elif isinstance(event, h2.events.StreamReset) and answer:
                answer.reset = event.error_code
            elif isinstance(event, h2.events.ConnectionTerminated):
                self.terminated = event
        self.flush()

    async def answer(self, stream_id: int) -> Answer:
        answer = self.answers[stream_id]
        while not (answer.ended or answer.reset is not None or self.closed):
            await self.pump()
        return answer

    async def until_closed(self) -> None:
        while not self.closed:
            await self.pump()

    def close(self) -> None:
        self.writer.close()


def outputs(answer: Answer) -> pb.ModelInferResponse:
    (message,) = answer.messages()
    return pb.ModelInferResponse.FromString(message)


async def test_a_large_answer_waits_for_a_small_window(server: GrpcLoopServer) -> None:
    """2,048 rows x 16 FP32 x 2 outputs (256 KiB) to a client with 1 KiB stream windows and the
    default 64 KiB connection window, given back one DATA frame at a time: never more in flight."""
    client = await RawClient.open(server.port, window=1024)
    in_flight = {"connection": 0, "stream": 0}
    received: list[int] = []

    def count(event: h2.events.DataReceived) -> None:
        in_flight["connection"] += event.flow_controlled_length
        in_flight["stream"] += event.flow_controlled_length
        assert in_flight["stream"] <= 1024 and in_flight["connection"] <= 65_535, in_flight
        received.append(event.flow_controlled_length)
        client.give_back(event)
        in_flight["connection"] = in_flight["stream"] = 0

    client.on_data = count
    stream_id = client.send("ModelInfer", framed(infer_request("wide", rows=2048)))
    answer = await client.answer(stream_id)
    assert answer.status == 0 and len(received) >= 256
    reply = outputs(answer)
    assert np.frombuffer(reply.raw_output_contents[0], np.float32).tolist() == [3.0] * 2048 * 16
    # then a connection window the answer outgrows (the stream's is opened wide): given back once spent
    client.on_data = lambda event: None
    big = client.send("ModelInfer", framed(infer_request("wide", rows=2048)))
    client.conn.increment_flow_control_window(1 << 20, big)
    client.flush()
    spent = 0
    answer = client.answers[big]
    while not answer.ended:
        before = len(answer.body)
        await client.pump()
        spent += len(answer.body) - before
        assert spent <= 65_535
        if spent == 65_535:  # the server has stopped: open both windows wide
            client.conn.increment_flow_control_window(1 << 20)
            client.conn.increment_flow_control_window(1 << 20, big)
            client.flush()
            spent = -(1 << 30)
    assert outputs(answer).raw_output_contents[1] == np.full((2048, 16), -1.0, np.float32).tobytes()
    client.close()


async def test_headers_in_continuation_frames_padding_and_priority(server: GrpcLoopServer) -> None:
    client = await RawClient.open(server.port)
    # 40 KB of metadata: h2 sends HEADERS + CONTINUATION frames at the server's 16 KiB frame size
    stream_id = client.conn.get_next_available_stream_id()
    headers = request_headers("ModelInfer", **{"x-big": "v" * 40_000})
    client.conn.send_headers(stream_id, headers)
    client.conn.prioritize(stream_id, weight=10)  # a PRIORITY frame, ignored
    client.conn.send_data(stream_id, framed(infer_request()), end_stream=True, pad_length=100)
    client.flush()
    client.answers[stream_id] = Answer()
    answer = await client.answer(stream_id)
    assert answer.status == 0 and outputs(answer).id == "r"
    client.close()


async def test_rst_stream_cancels_the_call(slow_server: GrpcLoopServer) -> None:
    client = await RawClient.open(slow_server.port)
    stream_id = client.send("ModelInfer", framed(infer_request()))
    while not any(c.streams for c in slow_server.connections):
        await asyncio.sleep(0.01)
    (connection,) = slow_server.connections
    task = connection.streams[stream_id].task
    assert task is not None and not task.done()
    client.conn.reset_stream(stream_id, f.CANCEL)
    client.flush()
    await asyncio.wait_for(asyncio.wait([task]), SAFETY)
    assert task.cancelled() and stream_id not in connection.streams
    other = client.send("ServerLive", framed(pb.ServerLiveRequest().SerializeToString()))
    answer = await client.answer(other)  # the connection goes on
    assert answer.status == 0 and pb.ServerLiveResponse.FromString(answer.messages()[0]).live
    client.close()


async def test_grpc_timeout_is_deadline_exceeded(slow_server: GrpcLoopServer) -> None:
    client = await RawClient.open(slow_server.port)
    stream_id = client.send("ModelInfer", framed(infer_request()), **{"grpc-timeout": "50m"})
    answer = await client.answer(stream_id)
    assert answer.status == grpc.StatusCode.DEADLINE_EXCEEDED.value[0]
    assert b"deadline" in (answer.trailers or answer.headers)[b"grpc-message"]
    client.close()


async def test_a_stream_call_past_its_deadline_gets_the_status_in_trailers_after_its_head(
    slow_server: GrpcLoopServer,
) -> None:
    client = await RawClient.open(slow_server.port)
    stream_id = client.send("ModelStreamInfer", framed(infer_request()), **{"grpc-timeout": "50m"})
    answer = await client.answer(stream_id)
    assert answer.trailers and b"grpc-status" not in answer.headers, answer
    assert answer.status == grpc.StatusCode.DEADLINE_EXCEEDED.value[0]
    client.close()


async def test_gzip_both_ways(server: GrpcLoopServer) -> None:
    client = await RawClient.open(server.port)
    packed = gzip.compress(infer_request())
    body = b"\x01" + len(packed).to_bytes(4, "big") + packed
    stream_id = client.send("ModelInfer", body, **{"grpc-encoding": "gzip", "grpc-accept-encoding": "identity,gzip"})
    answer = await client.answer(stream_id)
    assert answer.status == 0 and answer.headers[b"grpc-encoding"] == b"gzip" and answer.body[0] == 1
    reply = pb.ModelInferResponse.FromString(gzip.decompress(answer.messages()[0]))
    assert np.frombuffer(reply.raw_output_contents[0], np.float32).tolist() == [3.0] * 16
    client.close()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}", compression=grpc.Compression.Gzip) as channel:
        infer = channel.unary_unary(SERVICE + "ModelInfer", response_deserializer=pb.ModelInferResponse.FromString)
        assert (await infer(infer_request(), timeout=SAFETY)).id == "r"


@pytest.mark.parametrize(
    ("method", "headers", "body", "status", "fragment"),
    [
        ("ModelInfer", {"grpc-encoding": "br"}, framed(b""), 12, b"grpc-encoding br"),
        ("NoSuchMethod", {}, framed(b""), 12, b"unknown method"),
        ("ModelInfer", {}, b"\x00\x10\x00\x00\x00", 8, b"larger than the limit"),
        ("ModelInfer", {}, b"\x01" + framed(b"")[1:], 3, b"without grpc-encoding"),
        ("ModelInfer", {}, b"\x00\x00\x00", 3, b"5-byte prefix"),
        ("ModelInfer", {}, framed(b"\xff\xff"), 3, b"malformed ModelInferRequest"),
        ("ServerLive", {}, framed(b"") + framed(b""), 3, b"more than one"),
        ("ModelInfer", {"grpc-timeout": "soon"}, framed(b""), 3, b"malformed grpc-timeout"),
    ],
)
async def test_refused_calls_get_trailers_only_and_the_connection_goes_on(
    server: GrpcLoopServer, method: str, headers: dict[str, str], body: bytes, status: int, fragment: bytes
) -> None:
    client = await RawClient.open(server.port)
    answer = await client.answer(client.send(method, body, **headers))
    assert not answer.trailers and answer.status == status, answer
    assert fragment in answer.headers[b"grpc-message"]
    if "grpc-encoding" in headers:
        assert answer.headers[b"grpc-accept-encoding"] == b"identity,deflate,gzip"
    live = await client.answer(client.send("ServerLive", framed(b"")))
    assert live.status == 0
    client.close()


async def test_wrong_content_type_is_http_415(server: GrpcLoopServer) -> None:
    client = await RawClient.open(server.port)
    stream_id = client.conn.get_next_available_stream_id()
    headers = [
        h if h[0] != "content-type" else ("content-type", "application/json") for h in request_headers("ModelInfer")
    ]
    client.conn.send_headers(stream_id, headers, end_stream=True)
    client.flush()
    client.answers[stream_id] = Answer()
    answer = await client.answer(stream_id)
    assert answer.headers[b":status"] == b"415" and answer.status == grpc.StatusCode.UNIMPLEMENTED.value[0]
    client.close()


PREFACE_AND_SETTINGS = f.PREFACE + f.settings_frame({})
HEADERS_BLOCK = b"\x83\x86\x04\x0d/x/ServerLive"  # :method POST, :scheme http, :path


@pytest.mark.parametrize(
    ("garbage", "code"),
    [
        (f.frame(f.DATA, 0, 0, b"x"), f.PROTOCOL_ERROR),
        (b"\x00\x40\x01" + bytes((f.DATA, 0)) + b"\0\0\0\1", f.FRAME_SIZE_ERROR),  # 16 KiB + 1
        (f.frame(f.HEADERS, f.END_HEADERS, 2, HEADERS_BLOCK), f.PROTOCOL_ERROR),
        (f.frame(f.CONTINUATION, f.END_HEADERS, 1, HEADERS_BLOCK), f.PROTOCOL_ERROR),
        (f.frame(f.HEADERS, 0, 1, HEADERS_BLOCK) + f.frame(f.PING, 0, 0, b"12345678"), f.PROTOCOL_ERROR),
        (f.frame(f.HEADERS, f.END_HEADERS, 1, b"\xff\xff\xff\xff\xff"), f.COMPRESSION_ERROR),
        (f.window_update_frame(0, f.MAX_WINDOW), f.FLOW_CONTROL_ERROR),
        (f.frame(f.SETTINGS, 0, 0, b"\0\0\0"), f.FRAME_SIZE_ERROR),
        (f.frame(f.PING, 0, 0, b"short"), f.FRAME_SIZE_ERROR),
        (f.frame(f.PUSH_PROMISE, 0, 1, b"\0\0\0\2"), f.PROTOCOL_ERROR),
        (f.rst_stream_frame(99, 0), f.PROTOCOL_ERROR),
        (f.frame(f.DATA, f.PADDED, 1, b"\x09abc"), f.PROTOCOL_ERROR),
        (
            f.frame(f.HEADERS, f.END_HEADERS | f.END_STREAM, 3, HEADERS_BLOCK)
            + f.frame(f.HEADERS, f.END_HEADERS, 1, b""),
            f.STREAM_CLOSED,
        ),
    ],
)
async def test_protocol_errors_are_goaway_and_other_connections_go_on(
    server: GrpcLoopServer, garbage: bytes, code: int
) -> None:
    bystander = await RawClient.open(server.port)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(PREFACE_AND_SETTINGS + garbage)
    received = await asyncio.wait_for(reader.read(), SAFETY)  # until the server closes
    writer.close()
    frames, pos = [], 0
    while pos + 9 <= len(received):
        length = int.from_bytes(received[pos : pos + 3], "big")
        frames.append((received[pos + 3], received[pos + 9 : pos + 9 + length]))
        pos += 9 + length
    goaways = [payload for kind, payload in frames if kind == f.GOAWAY]
    assert goaways and f.parse_goaway(goaways[-1])[1] == code, frames
    live = await bystander.answer(bystander.send("ServerLive", framed(b"")))
    assert live.status == 0
    bystander.close()


async def test_not_http2_is_closed(server: GrpcLoopServer) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    received = await asyncio.wait_for(reader.read(), SAFETY)
    writer.close()
    assert received[3] == f.SETTINGS and f.GOAWAY in {received[i + 3] for i in range(0, len(received) - 9)}


async def test_ping_and_settings_are_acknowledged_and_peer_settings_honoured(server: GrpcLoopServer) -> None:
    client = await RawClient.open(server.port)
    client.conn.update_settings({h2.settings.SettingCodes.HEADER_TABLE_SIZE: 0})
    client.conn.ping(b"abcdefgh")
    client.flush()
    acks: list[h2.events.Event] = []
    while len(acks) < 2:
        data = await asyncio.wait_for(client.reader.read(1 << 16), SAFETY)
        acks += [
            e for e in client.conn.receive_data(data)
            if isinstance(e, h2.events.PingAckReceived | h2.events.SettingsAcknowledged)
        ]  # fmt: skip
        client.flush()
    assert any(isinstance(e, h2.events.PingAckReceived) and e.ping_data == b"abcdefgh" for e in acks)
    answer = await client.answer(client.send("ServerLive", framed(b"")))  # h2 checks the table size update
    assert answer.status == 0
    client.close()


async def read_until_closed(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> list[tuple[int, int, int, bytes]]:
    """Every frame the server sends until it closes (a raw reader: h2's client state machine stops at GOAWAY);
    its PINGs are acknowledged."""
    frames: list[tuple[int, int, int, bytes]] = []
    buffer = b""
    while chunk := await asyncio.wait_for(reader.read(1 << 16), SAFETY):
        buffer += chunk
        while len(buffer) >= 9 and len(buffer) >= 9 + int.from_bytes(buffer[:3], "big"):
            length = int.from_bytes(buffer[:3], "big")
            kind, flags, stream_id = buffer[3], buffer[4], int.from_bytes(buffer[5:9], "big")
            frames.append((kind, flags, stream_id, buffer[9 : 9 + length]))
            if kind == f.PING and not flags & f.ACK:
                writer.write(f.ping_frame(buffer[9 : 9 + length], ack=True))
            buffer = buffer[9 + length :]
    return frames


async def test_drain_answers_in_flight_calls_then_goaway(slow_server: GrpcLoopServer) -> None:
    """stop(): GOAWAY(2^31-1) and a PING, then once acknowledged GOAWAY(last stream); the call in flight is answered."""
    client = await RawClient.open(slow_server.port)
    stream_id = client.send("ModelInfer", framed(infer_request()))
    while not any(c.streams for c in slow_server.connections):
        await asyncio.sleep(0.01)
    stopping = asyncio.create_task(slow_server.stop(grace=SAFETY))
    frames = await read_until_closed(client.reader, client.writer)
    await stopping
    goaways = [f.parse_goaway(payload) for kind, _, _, payload in frames if kind == f.GOAWAY]
    assert goaways == [(f.MAX_WINDOW, f.NO_ERROR), (stream_id, f.NO_ERROR)]
    decoder = Decoder()
    blocks = [decoder.decode(p, raw=True) for kind, _, sid, p in frames if kind == f.HEADERS and sid == stream_id]
    assert [(b"grpc-status", b"0")] in blocks  # the trailers, after headers and the answer's DATA
    body = b"".join(p for kind, _, sid, p in frames if kind == f.DATA and sid == stream_id)
    assert pb.ModelInferResponse.FromString(body[5:]).id == "r"
    assert not slow_server.connections
    client.close()


async def test_stream_infer_over_grpc_aio(server: GrpcLoopServer) -> None:
    bad = pb.ModelInferRequest(model_name="absent").SerializeToString()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stream = channel.stream_stream(
            SERVICE + "ModelStreamInfer", response_deserializer=pb.ModelStreamInferResponse.FromString
        )
        replies = [r async for r in stream(iter([infer_request(), bad, infer_request("wide", rows=4096)]))]
    assert replies[0].infer_response.id == "r" and "absent" in replies[1].error_message
    assert len(replies[2].infer_response.raw_output_contents[0]) == 4096 * 16 * 4


async def test_connection_cap_closes_the_oldest_idle_connection(repo: Path) -> None:
    dp = await make_dataplane(repo)
    srv = GrpcLoopServer(dp, "127.0.0.1", 0, 1 << 20, max_connections=2)
    await srv.start()
    first = await RawClient.open(srv.port)
    assert (await first.answer(first.send("ServerLive", framed(b"")))).status == 0
    second = await RawClient.open(srv.port)
    assert (await second.answer(second.send("ServerLive", framed(b"")))).status == 0
    third = await RawClient.open(srv.port)
    assert (await third.answer(third.send("ServerLive", framed(b"")))).status == 0
    await first.until_closed()
    assert first.terminated is not None and len(srv.connections) == 2
    for client in (second, third):
        client.close()
    await srv.stop(1.0)
    await dp.repository.close()


async def test_tls_with_alpn_h2(repo: Path, tmp_path: Path) -> None:
    from tests.integration.test_serving_auth_tls import write_pki

    pki = write_pki(tmp_path)
    dp = await make_dataplane(repo)
    tls = TlsFiles(pki["server.crt"], pki["server.key"], pki["ca.crt"], mutual=True)
    srv = GrpcLoopServer(dp, "127.0.0.1", 0, 1 << 20, tls=tls)
    await srv.start()
    context = ssl.create_default_context(cafile=str(pki["ca.crt"]))
    context.load_cert_chain(str(pki["client.crt"]), str(pki["client.key"]))
    context.set_alpn_protocols(["h2"])
    client = await RawClient.open(srv.port, ssl_context=context)
    assert client.writer.get_extra_info("ssl_object").selected_alpn_protocol() == "h2"
    assert (await client.answer(client.send("ServerLive", framed(b"")))).status == 0
    client.close()
    credentials = grpc.ssl_channel_credentials(
        pki["ca.crt"].read_bytes(), pki["client.key"].read_bytes(), pki["client.crt"].read_bytes()
    )
    async with grpc.aio.secure_channel(f"127.0.0.1:{srv.port}", credentials) as channel:
        infer = channel.unary_unary(SERVICE + "ModelInfer", response_deserializer=pb.ModelInferResponse.FromString)
        assert (await infer(infer_request(), timeout=SAFETY)).id == "r"
    async with grpc.aio.secure_channel(
        f"127.0.0.1:{srv.port}", grpc.ssl_channel_credentials(pki["ca.crt"].read_bytes())
    ) as channel:
        live = channel.unary_unary(SERVICE + "ServerLive")
        with pytest.raises(grpc.aio.AioRpcError) as refused:  # mutual TLS: no client certificate, no call
            await live(b"", timeout=SAFETY)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    await srv.stop(1.0)
    await dp.repository.close()


async def test_a_client_goaway_lets_its_open_calls_finish_then_closes(slow_server: GrpcLoopServer) -> None:
    client = await RawClient.open(slow_server.port)
    stream_id = client.send("ModelInfer", framed(infer_request()))
    client.writer.write(f.goaway_frame(0, f.NO_ERROR))  # the client opens nothing more
    frames = await read_until_closed(client.reader, client.writer)
    body = b"".join(p for kind, _, sid, p in frames if kind == f.DATA and sid == stream_id)
    assert pb.ModelInferResponse.FromString(body[5:]).id == "r"
    assert any(kind == f.HEADERS and flags & f.END_STREAM and sid == stream_id for kind, flags, sid, _ in frames)
    client.close()
