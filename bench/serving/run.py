"""Serving benchmark: in-process ONNX Runtime, the naive server, and modelserve (HTTP JSON,
HTTP binary, gRPC) on the MLP and the CNN, at concurrency 1 and 16, in interleaved rounds;
plus, at concurrency 16, modelserve with `--workers 2` (HTTP JSON, HTTP binary, gRPC), with the
response cache on (`--cache-config`, the models' configs enabling it): `-cached` sends one body (every
request after the first hits), `-cached-miss` a unique input each time (every request misses), and,
where modelserve has `--grpc-frontend`, gRPC on each front end other than the default.

    python -m bench.serving.run [--rounds 3] [--duration 5] [--client h2load|python]
                                [--out bench/results/serving.json] [--only KEY-PART]

Load generators (`--client`): `h2load` (nghttp2's C client; the default where the binary exists) drives
every cell but the true-miss ones, which need a different input per request: those go to wrk with a Lua
script (`--miss-client wrk`, the default where wrk exists) or to the Python client (`--miss-client
python`). `python` is the earlier in-process client (aiohttp / grpc.aio on uvloop) for every cell. Each
row of the report names the client that drove it and that client's own CPU.

Prints a markdown report (paste into docs/benchmarks.md) and writes the raw figures. Each server is its
own process, measured with psutil (CPU seconds / wall time, peak RSS).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np
import onnxruntime as ort

from bench.serving import h2load, wrk
from bench.serving.cells import (
    MODELS,
    MODELSERVE_ARGS,
    Cell,
    Measurement,
    pct,
    request_bodies,
    server_of,
    transport,
)
from bench.serving.pyclient import measure_python
from bench.serving.report import report
from bench.serving.servers import (
    CACHE_ARGS,
    Sampler,
    cached_repository,
    grpc_frontends,
    start_naive,
    success_count,
)
from modelserve import examples
from modelserve.launcher import ServingProcess

try:
    import uvloop
except ImportError:  # the stock loop then
    uvloop = None  # type: ignore[assignment]

Driver = Callable[..., Awaitable[Measurement]]


def ceiling(repo: Path, seconds: float) -> list[dict[str, float | int | str]]:
    """In-process onnxruntime, no server: the upper bound."""
    rows: list[dict[str, float | int | str]] = []
    for model, shape in MODELS.items():
        session = ort.InferenceSession(str(repo / model / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
        for batch in (1, 8, 32):
            data = np.random.default_rng(0).standard_normal((batch, *shape), dtype=np.float32)
            for _ in range(5):
                session.run(None, {"input": data})
            calls, times = 0, []
            end = time.perf_counter() + seconds
            while time.perf_counter() < end:
                t0 = time.perf_counter()
                session.run(None, {"input": data})
                times.append(time.perf_counter() - t0)
                calls += 1
            total = sum(times)
            rows.append(
                {
                    "model": model,
                    "batch": batch,
                    "inferences_per_s": calls * batch / total,
                    "p50_ms": statistics.median(times) * 1000,
                }
            )
    return rows


def all_cells(frontends: list[str], only: str) -> dict[str, Cell]:
    base = ("naive", "modelserve-http-json", "modelserve-http-binary", "modelserve-grpc")
    extra = (
        "modelserve-w2-http-json",
        "modelserve-w2-grpc",
        "modelserve-cached-http-binary",
        "modelserve-cached-miss-http-binary",
        "modelserve-w2-http-binary",
        *(f"modelserve-{frontend}-grpc" for frontend in frontends),
    )
    cells = [Cell(model, target, conc) for model in MODELS for conc in (1, 16) for target in base]
    cells += [Cell(model, target, 16) for model in MODELS for target in extra]
    return {c.key: c for c in cells if only in c.key}


def modelserve_servers(repo: Path, needed: set[str], frontends: list[str]) -> dict[str, ServingProcess]:
    specs = {
        "modelserve": (repo, MODELSERVE_ARGS),
        # ORT threads as the server sizes them for 2 workers (cores // workers), not the single
        # server's explicit 2: 2 workers x 2 spinning intra-op threads oversubscribe 2 cores.
        "modelserve-w2": (repo, [*MODELSERVE_ARGS, "--workers=2", "--intra-op-threads=0"]),
        "modelserve-cached": (None, [*MODELSERVE_ARGS, *CACHE_ARGS]),
    } | {f"modelserve-{f}": (repo, [*MODELSERVE_ARGS, f"--grpc-frontend={f}"]) for f in frontends}
    servers: dict[str, ServingProcess] = {}
    try:
        for name, (repository, args) in specs.items():
            if name in needed:
                servers[name] = ServingProcess(repository or cached_repository(repo), args=args).start()
    except BaseException:
        for server in servers.values():
            server.stop()
        raise
    return servers


class Drivers:
    """Which load generator drives which cell."""

    def __init__(self, client: str, miss_client: str, workdir: Path) -> None:
        self.client, self.miss_client = client, miss_client
        self.h2load = h2load.H2load(workdir / "h2load") if client == "h2load" else None
        self.wrk = wrk.Wrk(workdir / "wrk") if client == "h2load" and miss_client == "wrk" else None

    def name(self, target: str) -> str:
        if self.client == "python":
            return "python"
        return self.miss_client if "-miss" in target else "h2load"

    def describe(self, used: set[str]) -> dict[str, str]:
        described = {
            "h2load": f"{h2load.version()} (C), closed loop, one thread: HTTP/1.1 `h2load --h1 -c C -m 1 -t 1` "
            "with `--warm-up-time`; gRPC over h2c, C connections of one stream each, warm-up a separate run",
            "wrk": f"{wrk.version()} (C), `wrk -t1 -cC` with a Lua script writing a counter into the last 8 bytes "
            "of the input tensor (a true cache miss each request), warm-up a separate run",
            "python": "aiohttp / grpc.aio on uvloop in the benchmark process (gRPC: one channel, C streams); "
            "client CPU: the whole benchmark process",
        }
        return {name: described[name] for name in ("h2load", "wrk", "python") if name in used}

    def driver(self, target: str) -> Driver:
        name = self.name(target)
        if name == "h2load" and self.h2load:
            return self.h2load.measure
        if name == "wrk" and self.wrk:
            return self.wrk.measure
        return measure_python


async def measure(
    cells: dict[str, Cell],
    repo: Path,
    rounds: int,
    seconds: float,
    warmup: float,
    drivers: Drivers,
    frontends: list[str],
) -> dict[str, float]:
    needed = {server_of(cell.target) for cell in cells.values()}
    naive, naive_address = start_naive(repo) if "naive" in needed else (None, "")
    servers: dict[str, ServingProcess] = {}
    try:
        servers = modelserve_servers(repo, needed, frontends)
        addresses = {"naive": naive_address}
        for name, server in servers.items():
            addresses |= {f"{name}-http-json": server.http_url, f"{name}-http-binary": server.http_url}
            addresses[f"{name}-grpc"] = server.grpc_url
        samplers = {name: Sampler(s.process.pid) for name, s in servers.items() if s.process}
        if naive is not None:
            samplers["naive"] = Sampler(naive.pid)
        idle_rss = {name: s.peak_rss for name, s in samplers.items()}
        bodies = {model: request_bodies(model) for model in MODELS}
        for round_index in range(rounds):
            for cell in cells.values():
                detail = await measure_cell(cell, addresses, servers, samplers, bodies, drivers, seconds, warmup)
                print(
                    f"round {round_index + 1}/{rounds} {cell.key} ({cell.client}): {cell.rps[-1]:.0f} req/s, "
                    f"client CPU {cell.client_cpu_percent[-1]:.0f} %" + (f" ({detail})" if detail else ""),
                    file=sys.stderr,
                )
    finally:
        if naive is not None:
            naive.terminate()
            naive.wait(10)
        for server in servers.values():
            server.stop()
    memory: dict[str, float] = {}
    for label, name in (("naive", "naive"), ("modelserve", "modelserve")):
        if name in samplers:
            memory[f"{label}_idle_rss_mib"] = idle_rss[name] / 2**20
            memory[f"{label}_peak_rss_mib"] = samplers[name].peak_rss / 2**20
    if "modelserve-w2" in samplers:
        memory["workers_idle_rss_mib_per_worker"] = idle_rss["modelserve-w2"] / 2**20
        memory["workers_peak_rss_mib_per_worker"] = samplers["modelserve-w2"].peak_rss / 2**20
    return memory


async def measure_cell(
    cell: Cell,
    addresses: dict[str, str],
    servers: dict[str, ServingProcess],
    samplers: dict[str, Sampler],
    bodies: dict[str, dict[str, tuple[bytes, dict[str, str]]]],
    drivers: Drivers,
    seconds: float,
    warmup: float,
) -> str:
    server = server_of(cell.target)
    address = addresses[cell.target.replace("-miss", "")]
    sampler = samplers[server]
    body, headers = bodies[cell.model][transport(cell.target)]
    driver = drivers.driver(cell.target)
    extra: dict[str, Callable[[], Awaitable[int]]] = {}
    if drivers.name(cell.target) == "h2load" and cell.target.endswith("-grpc"):
        http_url = servers[server].http_url

        async def successes() -> int:
            return await asyncio.to_thread(success_count, http_url, cell.model)

        extra["success_count"] = successes
    stop = asyncio.Event()
    watcher = asyncio.create_task(sampler.watch(stop))
    cpu_before, wall_before = sampler.cpu(), time.perf_counter()
    try:
        result = await driver(
            cell.target, address, cell.model, body, headers, cell.concurrency, seconds, warmup, **extra
        )
    finally:
        cpu_used = sampler.cpu() - cpu_before
        wall = time.perf_counter() - wall_before
        stop.set()
        await watcher
    cell.client = result.client
    cell.rps.append(result.rps)
    cell.latencies_ms.extend(result.latencies_ms)
    cell.cpu_percent.append(100 * cpu_used / wall)
    cell.client_cpu_percent.append(result.client_cpu_percent)
    cell.errors += result.errors
    return result.detail


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds measured per cell and round")
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--out", type=Path, default=Path("bench/results/serving.json"))
    parser.add_argument("--only", default="", help="run only cells whose key (model/target/cN) contains this")
    parser.add_argument(
        "--client",
        choices=("h2load", "python"),
        default="h2load" if h2load.available() else "python",
        help="load generator (default: h2load where the binary exists)",
    )
    parser.add_argument(
        "--miss-client",
        choices=("wrk", "python"),
        default="wrk" if wrk.available() else "python",
        help="with --client h2load: who drives the true-miss cells (default: wrk where the binary exists)",
    )
    args = parser.parse_args()
    if args.client == "h2load" and not h2load.available():
        parser.error("--client h2load: no h2load binary (apt-get install nghttp2-client)")
    if args.client == "h2load" and args.miss_client == "wrk" and not wrk.available():
        parser.error("--miss-client wrk: no wrk binary (apt-get install wrk)")
    frontends, default_frontend = grpc_frontends()
    extra_frontends = [f for f in frontends if f != default_frontend]
    cells = all_cells(extra_frontends, args.only)
    with tempfile.TemporaryDirectory() as tmp:
        repo = examples.write_repository(Path(tmp) / "models", list(MODELS))
        ceiling_rows = [] if args.only else ceiling(repo, seconds=2.0)
        drivers = Drivers(args.client, args.miss_client, Path(tmp) / "clients")
        coroutine = measure(cells, repo, args.rounds, args.duration, args.warmup, drivers, extra_frontends)
        memory = uvloop.run(coroutine) if uvloop else asyncio.run(coroutine)
    used = {cell.client for cell in cells.values() if cell.client}
    print(
        report(
            cells,
            ceiling_rows,
            memory,
            args.rounds,
            args.duration,
            drivers.describe(used),
            extra_frontends,
            default_frontend,
        )
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    summary = {
        "command": subprocess.list2cmdline(["python", "-m", "bench.serving.run", *sys.argv[1:]]),
        "ceiling": ceiling_rows,
        "memory": memory,
        "grpc_frontends": {"default": default_frontend, "others": extra_frontends},
        "cells": [
            {
                **{k: v for k, v in asdict(c).items() if k != "latencies_ms"},
                "p50_ms": pct(c.latencies_ms, 50),
                "p99_ms": pct(c.latencies_ms, 99),
            }
            for c in cells.values()
        ],
    }
    args.out.write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
