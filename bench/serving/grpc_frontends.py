"""gRPC front ends side by side on the same data plane: modelserve's on-loop front end (`loop`, the
default, modelserve.grpcloop), grpc.aio (`grpcio`, `--grpc-frontend=grpcio`), and the REST app
(HTTP JSON under uvicorn + httptools) for reference.

Each front end runs in its own process (both models, batching 32 / 2 ms, 2 ORT threads, uvloop as
modelserve runs it); the clients drive them in turn, ModelInfer at concurrency 16, interleaved
rounds. Two clients: nghttp2's `h2load` (C; 16 connections, one request in flight on each) and the
benchmark's Python client (bench.serving.pyclient: aiohttp, or grpc.aio over one channel with 16
streams; its own CPU per request is shown too: it shares the cores). Time it under the shared lock,
others benchmark on this machine too:

    flock /tmp/bench.lock .venv/bin/python -m bench.serving.grpc_frontends [--seconds 4] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
import psutil

from bench.serving import h2load
from bench.serving.cells import request_bodies
from bench.serving.pyclient import drive
from modelserve import config as cfg
from modelserve import examples
from modelserve.launcher import free_port
from modelserve.proto import grpc_service_pb2 as pb
from modelserve.repository import Repository, RepositorySettings
from modelserve.runtime import RuntimeSettings

KINDS = ("http-json", "grpcio", "loop")
MODELS = ("mlp", "cnn")
CONCURRENCY = 16
STATS_PATH = "/inference.GRPCInferenceService/ModelStatistics"


async def serve(kind: str, port: int) -> None:
    """One front end over a fresh data plane, until killed."""
    from modelserve.dataplane import DataPlane

    root = examples.write_repository(Path(tempfile.mkdtemp()) / "repo", list(MODELS))
    settings = RepositorySettings(
        root=root,
        startup_models=MODELS,
        overrides=cfg.Overrides(max_batch_size=32, max_queue_delay_us=2000),
        runtime=RuntimeSettings(intra_op_threads=2),
    )
    repository = Repository(settings)
    await repository.load_startup_models()
    dp = DataPlane(repository)
    dp.lifecycle.started = True
    if kind == "http-json":
        import uvicorn

        from modelserve.rest import RestApp

        config = uvicorn.Config(RestApp(dp), host="127.0.0.1", port=port, loop="none", http="httptools",
                                log_level="warning", access_log=False)  # fmt: skip
        await uvicorn.Server(config).serve()
    elif kind == "grpcio":
        from modelserve import grpc as front

        server = front.create_server(dp, f"127.0.0.1:{port}", 64 << 20)
        await server.start()
        await server.wait_for_termination()
    else:
        from modelserve.grpcloop import GrpcLoopServer

        loop_server = GrpcLoopServer(dp, "127.0.0.1", port, 64 << 20)
        await loop_server.start()
        await asyncio.Event().wait()


def grpc_successes(port: int, model: str) -> int:
    """The server's inference success count for `model` (statistics extension, over gRPC)."""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.unary_unary(STATS_PATH, response_deserializer=pb.ModelStatisticsResponse.FromString)
        stats = call(pb.ModelStatisticsRequest(name=model).SerializeToString(), timeout=10)
    return sum(s.inference_stats.success.count for s in stats.model_stats)


def _target(kind: str) -> str:
    return "modelserve-http-json" if kind == "http-json" else "modelserve-grpc"


async def run_h2load(driver: h2load.H2load, kind: str, port: int, model: str, seconds: float) -> tuple[float, int]:
    """req/s and errors of one h2load run (1 s warm-up). gRPC answers carry their status in trailers, which
    h2load does not read: errors there are the 2xx answers the server's success count did not see."""
    body, headers = request_bodies(model)[_target(kind)]

    async def successes() -> int:
        return await asyncio.to_thread(grpc_successes, port, model)

    count = None if kind == "http-json" else successes
    result = await driver.measure(
        _target(kind), f"127.0.0.1:{port}", model, body, headers, CONCURRENCY, seconds, 1.0, count
    )
    return result.rps, result.errors


async def python_client(kind: str, port: int, model: str, seconds: float) -> tuple[float, int, float]:
    """req/s, errors, and this process's CPU per request (the client's, all its threads, warm-up included)."""
    target = _target(kind)
    body, headers = request_bodies(model)[target]
    me = psutil.Process()
    cpu0, t0 = sum(me.cpu_times()[:2]), time.perf_counter()
    latencies, errors, elapsed = await drive(
        target, f"127.0.0.1:{port}", model, body, headers, CONCURRENCY, seconds, 1.0
    )
    rate = len(latencies) / elapsed
    client_cpu = (sum(me.cpu_times()[:2]) - cpu0) / max(1.0, rate * (time.perf_counter() - t0)) * 1000
    return rate, errors, client_cpu


async def compare(seconds: float, rounds: int, clients: list[str]) -> None:
    servers: dict[str, tuple[subprocess.Popen[bytes], int]] = {}
    for kind in KINDS:
        port = free_port()
        command = [sys.executable, "-m", "bench.serving.grpc_frontends", "--serve", kind, "--port", str(port)]
        servers[kind] = (subprocess.Popen(command), port)
    time.sleep(10)  # both models loaded in every process
    workdir = Path(tempfile.mkdtemp())
    driver = h2load.H2load(workdir)
    print(f"load average at the start: {' '.join(f'{x:.1f}' for x in psutil.getloadavg())}", flush=True)
    results: dict[tuple[str, str, str], list[str]] = {}
    try:
        for round_ in range(rounds):
            for client in clients:
                for model in MODELS:
                    for kind, (process, port) in servers.items():
                        ps = psutil.Process(process.pid)
                        cpu0 = sum(ps.cpu_times()[:2])
                        t0 = time.perf_counter()
                        client_note = ""
                        if client == "h2load":
                            rate, errors = await run_h2load(driver, kind, port, model, seconds)
                        else:
                            rate, errors, client_cpu = await python_client(kind, port, model, seconds)
                            client_note = f" (client ~{client_cpu:.2f} ms)"
                        cpu = sum(ps.cpu_times()[:2]) - cpu0
                        per_request = cpu / max(1.0, rate * (time.perf_counter() - t0)) * 1000
                        line = f"{rate:,.0f} req/s, ~{per_request:.2f} ms CPU/req{client_note}, {errors} errors"
                        results.setdefault((client, model, kind), []).append(line)
                        print(f"round {round_ + 1} {client} {model} {kind}: {line}", flush=True)
    finally:
        for process, _ in servers.values():
            process.terminate()
            process.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"load average at the end: {' '.join(f'{x:.1f}' for x in psutil.getloadavg())}")
    print("\n| client | model | front end | per round |\n| --- | --- | --- | --- |")
    for (client, model, kind), lines in results.items():
        print(f"| {client} | {model} | {kind} | {'; '.join(lines)} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=4.0, help="measured seconds per cell (after 1 s warm-up)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--client", choices=["h2load", "python", "both"], default="both")
    parser.add_argument("--serve", choices=KINDS, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        import uvloop

        uvloop.run(serve(args.serve, args.port))
        return
    if args.client != "python" and not h2load.available():
        raise SystemExit("h2load not found (Debian: nghttp2-client); use --client python")
    clients = ["h2load", "python"] if args.client == "both" else [args.client]
    asyncio.run(compare(args.seconds, args.rounds, clients))


if __name__ == "__main__":
    main()
