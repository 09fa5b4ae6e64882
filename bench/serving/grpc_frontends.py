"""Experiment: the same data plane behind modelserve's REST app, grpc.aio (modelserve's gRPC front
end), grpclib, and a hand-written HTTP/2 framing on the loop, all on the stock asyncio loop.

grpclib is gRPC in pure Python over h2 on the asyncio loop itself: no C-core completion queue and
no poller thread between a call and the loop; `h2-on-loop` is the same idea with the HTTP/2
framing written here for the one shape a unary gRPC call has (hpack decodes the headers). Neither
grpclib nor hpack is a dependency of modelserve; install them aside and point PYTHONPATH at them:

    .venv/bin/python -m pip install --target /tmp/grpclib grpclib
    PYTHONPATH=/tmp/grpclib .venv/bin/python -m bench.serving.grpc_frontends [--seconds 3] [--rounds 2]

Each front end runs in its own process (ModelInfer only, both models, the benchmark's batching
and thread settings); the benchmark's grpc.aio client drives them in turn at concurrency 16.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

from bench.serving.run import drive, request_bodies
from modelserve import config as cfg
from modelserve import examples
from modelserve import grpc as front
from modelserve.dataplane import DataPlane
from modelserve.launcher import free_port
from modelserve.repository import Repository, RepositorySettings
from modelserve.runtime import RuntimeSettings

KINDS = ("http-json", "grpc.aio", "grpclib", "h2-on-loop")


def _literal(name: bytes, value: bytes) -> bytes:
    """HPACK literal header field without indexing, new name, no Huffman: needs no table state."""
    assert len(name) < 127 and len(value) < 127
    return b"\x00" + bytes([len(name)]) + name + bytes([len(value)]) + value


def _frame(kind: int, flags: int, stream: int, payload: bytes) -> bytes:
    return len(payload).to_bytes(3, "big") + bytes([kind, flags]) + stream.to_bytes(4, "big") + payload


RESPONSE_HEADERS = b"\x88" + _literal(b"content-type", b"application/grpc")  # 0x88: ":status: 200"
TRAILERS_OK = _literal(b"grpc-status", b"0")
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
BIG_WINDOW = (1 << 30) - 1


class OnLoopGrpc(asyncio.Protocol):
    """A minimal gRPC-over-HTTP/2 server for unary ModelInfer, framing written by hand on the loop.

    An experiment, not a front end: no TLS, no CONTINUATION, no outbound flow control (answers are
    small), no auth or streaming; just enough to measure what the framing costs without threads.
    """

    def __init__(self, dp: DataPlane) -> None:
        from hpack import Decoder

        self.dp = dp
        self.decoder = Decoder()
        self.buffer = bytearray()
        self.preface = False
        self.streams: dict[int, tuple[dict[bytes, bytes], bytearray]] = {}
        self.consumed = 0

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        settings = (4).to_bytes(2, "big") + BIG_WINDOW.to_bytes(4, "big")  # SETTINGS_INITIAL_WINDOW_SIZE
        update = _frame(8, 0, 0, (BIG_WINDOW - 65535).to_bytes(4, "big"))
        transport.write(_frame(4, 0, 0, settings) + update)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if not self.preface:
            if len(self.buffer) < len(PREFACE):
                return
            del self.buffer[: len(PREFACE)]
            self.preface = True
        view = self.buffer
        pos = 0
        while len(view) - pos >= 9:
            length = int.from_bytes(view[pos : pos + 3], "big")
            if len(view) - pos - 9 < length:
                break
            kind, flags = view[pos + 3], view[pos + 4]
            stream = int.from_bytes(view[pos + 5 : pos + 9], "big") & 0x7FFFFFFF
            payload = bytes(view[pos + 9 : pos + 9 + length])
            pos += 9 + length
            self.frame(kind, flags, stream, payload)
        del self.buffer[:pos]

    def frame(self, kind: int, flags: int, stream: int, payload: bytes) -> None:
        if kind == 0:  # DATA
            if flags & 0x8:
                payload = payload[1 : len(payload) - payload[0]]
            self.streams[stream][1].extend(payload)
            self.consumed += len(payload)
            if self.consumed > BIG_WINDOW // 2:
                self.transport.write(_frame(8, 0, 0, self.consumed.to_bytes(4, "big")))
                self.consumed = 0
        elif kind == 1:  # HEADERS
            if flags & 0x8:
                payload = payload[1 : len(payload) - payload[0]]
            if flags & 0x20:
                payload = payload[5:]
            self.streams[stream] = (dict(self.decoder.decode(payload, raw=True)), bytearray())
        elif kind == 4 and not flags & 1:  # SETTINGS: acknowledge
            self.transport.write(_frame(4, 1, 0, b""))
        elif kind == 6 and not flags & 1:  # PING: answer
            self.transport.write(_frame(6, 1, 0, payload))
        elif kind == 3:  # RST_STREAM
            self.streams.pop(stream, None)
        if kind in (0, 1) and flags & 1 and stream in self.streams:  # END_STREAM: the request is whole
            headers, body = self.streams.pop(stream)
            asyncio.get_running_loop().create_task(self.answer(stream, headers, bytes(body)))

    async def answer(self, stream: int, headers: dict[bytes, bytes], body: bytes) -> None:
        try:
            if headers.get(b":path") != f"/{front.SERVICE}/ModelInfer".encode():
                raise NotFoundError("only ModelInfer")
            request = await front.parse_infer_request(body[5:], self.dp.admit)
            message = front.encode_infer_response(await self.dp.infer(request)).SerializeToString()
            data = b"\x00" + len(message).to_bytes(4, "big") + message
            trailers = TRAILERS_OK
        except Exception as exc:  # an experiment: every failure is one status
            data, trailers = b"", _literal(b"grpc-status", b"13") + _literal(b"grpc-message", str(exc)[:100].encode())
        self.transport.write(
            _frame(1, 4, stream, RESPONSE_HEADERS)
            + (_frame(0, 0, stream, data) if data else b"")
            + _frame(1, 5, stream, trailers)
        )


class NotFoundError(Exception):
    pass


async def serve(kind: str, port: int) -> None:
    root = examples.write_repository(Path(tempfile.mkdtemp()) / "repo", ["mlp", "cnn"])
    settings = RepositorySettings(
        root=root,
        startup_models=("mlp", "cnn"),
        overrides=cfg.Overrides(max_batch_size=32, max_queue_delay_us=2000),
        runtime=RuntimeSettings(intra_op_threads=2),
    )
    repository = Repository(settings)
    await repository.load_startup_models()
    dp = DataPlane(repository)
    dp.lifecycle.started = True
    if kind == "http-json":  # modelserve's REST app under uvicorn + httptools, for reference
        import uvicorn

        from modelserve.rest import RestApp

        config = uvicorn.Config(RestApp(dp), host="127.0.0.1", port=port, loop="none", http="httptools",
                                log_level="warning", access_log=False)  # fmt: skip
        await uvicorn.Server(config).serve()
        return
    if kind == "h2-on-loop":
        loop = asyncio.get_running_loop()
        listener = await loop.create_server(lambda: OnLoopGrpc(dp), "127.0.0.1", port)
        await listener.serve_forever()
        return
    if kind == "grpc.aio":
        server = front.create_server(dp, f"127.0.0.1:{port}", 64 << 20)
        await server.start()
        await server.wait_for_termination()
        return
    from grpclib.const import Cardinality, Handler
    from grpclib.encoding.base import CodecBase
    from grpclib.server import Server

    class RawCodec(CodecBase):  # the handler parses and encodes itself, as modelserve's does
        __content_subtype__ = "proto"

        def encode(self, message: Any, message_type: Any) -> bytes:
            return message.SerializeToString()

        def decode(self, data: bytes, message_type: Any) -> bytes:
            return data

    async def infer(stream: Any) -> None:
        request = await front.parse_infer_request(await stream.recv_message(), dp.admit)
        await stream.send_message(front.encode_infer_response(await dp.infer(request)))

    class Service:
        def __mapping__(self) -> dict[str, Handler]:
            return {f"/{front.SERVICE}/ModelInfer": Handler(infer, Cardinality.UNARY_UNARY, bytes, bytes)}

    grpclib_server = Server([Service()], codec=RawCodec())
    await grpclib_server.start("127.0.0.1", port)
    await grpclib_server.wait_closed()


async def compare(seconds: float, rounds: int) -> None:
    servers: dict[str, tuple[subprocess.Popen[bytes], int]] = {}
    for kind in KINDS:
        port = free_port()
        command = [sys.executable, "-m", "bench.serving.grpc_frontends", "--serve", kind, "--port", str(port)]
        servers[kind] = (subprocess.Popen(command, env=dict(os.environ)), port)
    time.sleep(8)  # both models loaded
    try:
        for _ in range(rounds):
            for model in ("mlp", "cnn"):
                for kind, (process, port) in servers.items():
                    target = "modelserve-http-json" if kind == "http-json" else "modelserve-grpc"
                    body, headers = request_bodies(model)[target]
                    ps = psutil.Process(process.pid)
                    cpu0 = sum(ps.cpu_times()[:2])
                    latencies, errors, elapsed = await drive(
                        target, f"127.0.0.1:{port}", model, body, headers, 16, seconds, 0.0
                    )
                    cpu = sum(ps.cpu_times()[:2]) - cpu0
                    print(
                        f"{model} {kind}: {len(latencies) / elapsed:.0f} req/s,"
                        f" server CPU {cpu / max(len(latencies), 1) * 1000:.3f} ms/request, {errors} errors",
                        flush=True,
                    )
    finally:
        for process, _ in servers.values():
            process.terminate()
            process.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--serve", choices=KINDS, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(serve(args.serve, args.port))
    else:
        asyncio.run(compare(args.seconds, args.rounds))


if __name__ == "__main__":
    main()
