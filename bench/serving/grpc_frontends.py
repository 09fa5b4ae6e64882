"""Experiment: the same data plane behind grpc.aio (modelserve's front end) and grpclib.

grpclib is gRPC in pure Python over h2 on the asyncio loop itself: no C-core completion queue and
no poller thread between a call and the loop. It is not a dependency of modelserve; install it
aside and point PYTHONPATH at it:

    .venv/bin/python -m pip install --target /tmp/grpclib grpclib
    PYTHONPATH=/tmp/grpclib .venv/bin/python -m bench.serving.grpc_frontends [--seconds 3] [--rounds 2]

Each front end runs in its own process (ModelInfer only, both models, the benchmark's batching
and thread settings); the benchmark's grpc.aio client drives both alternately at concurrency 16.
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

KINDS = ("grpc.aio", "grpclib")


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
    dp.started = True
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
                body, headers = request_bodies(model)["modelserve-grpc"]
                for kind, (process, port) in servers.items():
                    ps = psutil.Process(process.pid)
                    cpu0 = sum(ps.cpu_times()[:2])
                    latencies, errors, elapsed = await drive(
                        "modelserve-grpc", f"127.0.0.1:{port}", model, body, headers, 16, seconds, 0.0
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
