"""Serving benchmark: in-process ONNX Runtime, the naive server, and modelserve (HTTP JSON,
HTTP binary, gRPC) on the MLP and the CNN, at concurrency 1 and 16, in interleaved rounds;
plus, at concurrency 16, modelserve with `--workers 2` (HTTP JSON, gRPC) and with the response
cache on (`--cache-config`, the models' configs enabling it): `-cached` sends one body (every request
after the first hits), `-cached-miss` a unique input each time (every request misses).

    python -m bench.serving.run [--rounds 3] [--duration 5] [--out bench/results/serving.json]

Prints a markdown report (paste into docs/benchmarks.md) and writes the raw figures.
The load generator runs in this process (uvloop, pre-serialized bodies); each server
is its own process, measured with psutil (CPU seconds / wall time, peak RSS).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import platform
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path

import aiohttp
import grpc
import numpy as np
import onnxruntime as ort
import orjson
import psutil

from modelserve import examples
from modelserve.launcher import ServingProcess, free_port
from modelserve.proto import grpc_service_pb2 as pb

MODELS = {"mlp": (256,), "cnn": (3, 64, 64)}
MODELSERVE_ARGS = os.environ.get(
    "BENCH_MODELSERVE_ARGS", "--max-batch-size=32 --max-queue-delay-us=2000 --intra-op-threads=2"
).split()


@dataclass
class Cell:
    model: str
    target: str  # naive | modelserve[-w2|-cached]-(http-json|http-binary|grpc)
    concurrency: int
    rps: list[float] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)
    cpu_percent: list[float] = field(default_factory=list)
    errors: int = 0

    @property
    def key(self) -> str:
        return f"{self.model}/{self.target}/c{self.concurrency}"


def ceiling(repo: Path, seconds: float) -> list[dict[str, float | int | str]]:
    """In-process onnxruntime, no server: the upper bound."""
    rows = []
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


def request_bodies(model: str) -> dict[str, tuple[bytes, dict[str, str]]]:
    shape = [1, *MODELS[model]]
    data = np.random.default_rng(1).standard_normal(shape, dtype=np.float32)
    v2_json = {
        "inputs": [{"name": "input", "shape": shape, "datatype": "FP32", "data": data.reshape(-1).tolist()}],
        "outputs": [{"name": "output", "parameters": {"binary_data": False}}],
    }
    header = orjson.dumps(
        {
            "inputs": [
                {"name": "input", "shape": shape, "datatype": "FP32", "parameters": {"binary_data_size": data.nbytes}}
            ],
            "outputs": [{"name": "output", "parameters": {"binary_data": True}}],
        }
    )
    grpc_request = pb.ModelInferRequest(model_name=model)
    grpc_request.inputs.add(name="input", datatype="FP32", shape=shape)
    grpc_request.raw_input_contents.append(data.tobytes())
    return {
        "naive": (orjson.dumps({"inputs": data.tolist()}), {"content-type": "application/json"}),
        "modelserve-http-json": (orjson.dumps(v2_json), {"content-type": "application/json"}),
        "modelserve-http-binary": (
            header + data.tobytes(),
            {"content-type": "application/octet-stream", "Inference-Header-Content-Length": str(len(header))},
        ),
        "modelserve-grpc": (grpc_request.SerializeToString(), {}),
    }


UNIQUE = itertools.count()


def unique_body(body: bytes) -> bytes:
    """The body with its last 8 bytes (inside the input tensor) made unique: a true cache miss."""
    buf = bytearray(body)
    struct.pack_into("<Q", buf, len(buf) - 8, next(UNIQUE))
    return bytes(buf)


async def _http_worker(session, url, body, headers, stop_at, record, unique=False) -> int:
    errors = 0
    while time.perf_counter() < stop_at:
        t0 = time.perf_counter()
        async with session.post(url, data=unique_body(body) if unique else body, headers=headers) as response:
            await response.read()
            ok = response.status == 200
        record(time.perf_counter() - t0) if ok else None
        errors += not ok
    return errors


async def _grpc_worker(call, body, stop_at, record) -> int:
    errors = 0
    while time.perf_counter() < stop_at:
        t0 = time.perf_counter()
        try:
            await call(body)
        except grpc.aio.AioRpcError:
            errors += 1
            continue
        record(time.perf_counter() - t0)
    return errors


async def drive(target: str, address: str, model: str, body: bytes, headers: dict[str, str], concurrency: int,
                seconds: float, warmup: float) -> tuple[list[float], int, float]:  # fmt: skip
    """Closed-loop load: `concurrency` workers, each sending its next request on a response."""
    latencies: list[float] = []
    recording = False

    def record(seconds_taken: float) -> None:
        if recording:
            latencies.append(seconds_taken)

    start = time.perf_counter()
    stop_at = start + warmup + seconds
    if target.endswith("-grpc"):
        async with grpc.aio.insecure_channel(address) as channel:
            call = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
            tasks = [asyncio.create_task(_grpc_worker(call, body, stop_at, record)) for _ in range(concurrency)]
            await asyncio.sleep(warmup)
            recording = True
            t_rec = time.perf_counter()
            errors = sum(await asyncio.gather(*tasks))
    else:
        path = f"/predict/{model}" if target == "naive" else f"/v2/models/{model}/infer"
        connector = aiohttp.TCPConnector(limit=concurrency)
        async with aiohttp.ClientSession(connector=connector) as session:
            tasks = [
                asyncio.create_task(
                    _http_worker(session, f"http://{address}{path}", body, headers, stop_at, record, "-miss" in target)
                )
                for _ in range(concurrency)
            ]
            await asyncio.sleep(warmup)
            recording = True
            t_rec = time.perf_counter()
            errors = sum(await asyncio.gather(*tasks))
    return latencies, errors, time.perf_counter() - t_rec


class Sampler:
    """Server CPU seconds and peak RSS (per process: the largest worker's) over one measurement."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.peak_rss = self._rss()

    def _processes(self) -> list[psutil.Process]:
        children = self.process.children()
        return children or [self.process]  # --workers: the workers, not the supervisor

    def _rss(self) -> int:
        return max(p.memory_info().rss for p in self._processes())

    def cpu(self) -> float:
        return sum(sum(p.cpu_times()[:2]) for p in self._processes())

    async def watch(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self.peak_rss = max(self.peak_rss, self._rss())
            await asyncio.sleep(0.2)


def start_naive(repo: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.serving.naive_server", f"--model-repository={repo}", f"--port={port}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1)
            return process, f"127.0.0.1:{port}"
        except OSError:
            time.sleep(0.2)
    raise TimeoutError("naive server did not start")


async def measure(cells: dict[str, Cell], repo: Path, rounds: int, seconds: float, warmup: float) -> dict[str, float]:
    naive, naive_address = start_naive(repo)
    servers = {
        "modelserve": ServingProcess(repo, args=MODELSERVE_ARGS).start(),
        "modelserve-w2": ServingProcess(repo, args=[*MODELSERVE_ARGS, "--workers=2"]).start(),
        "modelserve-cached": ServingProcess(cached_repository(repo), args=[*MODELSERVE_ARGS, *CACHE_ARGS]).start(),
    }
    addresses = {"naive": naive_address}
    for name, server in servers.items():
        addresses |= {f"{name}-http-json": server.http_url, f"{name}-http-binary": server.http_url}
        addresses[f"{name}-grpc"] = server.grpc_url
    samplers = {"naive": Sampler(naive.pid)} | {name: Sampler(s.process.pid) for name, s in servers.items()}
    idle_rss = {name: s.peak_rss for name, s in samplers.items()}
    bodies = {model: request_bodies(model) for model in MODELS}
    try:
        for round_index in range(rounds):
            for cell in cells.values():
                address = addresses[cell.target.replace("-miss", "")]
                sampler = samplers[server_of(cell.target)]
                body, headers = bodies[cell.model][transport(cell.target)]
                stop = asyncio.Event()
                watcher = asyncio.create_task(sampler.watch(stop))
                cpu_before, wall_before = sampler.cpu(), time.perf_counter()
                latencies, errors, elapsed = await drive(
                    cell.target, address, cell.model, body, headers, cell.concurrency, seconds, warmup
                )
                cpu_used = sampler.cpu() - cpu_before
                wall = time.perf_counter() - wall_before
                stop.set()
                await watcher
                cell.rps.append(len(latencies) / elapsed)
                cell.latencies_ms.extend(x * 1000 for x in latencies)
                cell.cpu_percent.append(100 * cpu_used / wall)
                cell.errors += errors
                print(f"round {round_index + 1}/{rounds} {cell.key}: {cell.rps[-1]:.0f} req/s", file=sys.stderr)
    finally:
        naive.terminate()
        naive.wait(10)
        for server in servers.values():
            server.stop()
    return {
        "naive_idle_rss_mib": idle_rss["naive"] / 2**20,
        "modelserve_idle_rss_mib": idle_rss["modelserve"] / 2**20,
        "naive_peak_rss_mib": samplers["naive"].peak_rss / 2**20,
        "modelserve_peak_rss_mib": samplers["modelserve"].peak_rss / 2**20,
        "workers_idle_rss_mib_per_worker": idle_rss["modelserve-w2"] / 2**20,
        "workers_peak_rss_mib_per_worker": samplers["modelserve-w2"].peak_rss / 2**20,
    }


CACHE_ARGS = ["--cache-config=local,size=67108864"]


def cached_repository(repo: Path) -> Path:
    """A copy of the repository whose models enable Triton's response cache."""
    cached = repo.parent / "cached"
    shutil.copytree(repo, cached)
    for model in MODELS:
        (cached / model / "config.pbtxt").write_text("response_cache { enable: true }\n")
    return cached


def server_of(target: str) -> str:
    target = target.replace("-miss", "")
    for suffix in ("-http-json", "-http-binary", "-grpc"):
        target = target.removesuffix(suffix)
    return target


def transport(target: str) -> str:
    """The request body a target sends: modelserve-w2-grpc sends what modelserve-grpc does."""
    for variant in ("-w2", "-cached", "-miss"):
        target = target.replace(variant, "")
    return target


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def report(cells: dict[str, Cell], ceiling_rows: list[dict], memory: dict[str, float], args: argparse.Namespace) -> str:
    lines = [
        f"Command: `python -m bench.serving.run --rounds {args.rounds} --duration {args.duration}`",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
        f"onnxruntime {ort.__version__}; modelserve flags `{' '.join(MODELSERVE_ARGS)}`.",
        "",
        "In-process onnxruntime (the ceiling):",
        "",
        "| model | batch | inferences/s | p50 per call (ms) |",
        "| --- | ---: | ---: | ---: |",
    ]
    lines += [
        f"| {r['model']} | {r['batch']} | {r['inferences_per_s']:.0f} | {r['p50_ms']:.2f} |" for r in ceiling_rows
    ]
    lines += [
        "",
        f"Servers, {args.rounds} interleaved rounds of {args.duration:g} s each (req/s: median, min-max over rounds; "
        "latency pooled over rounds; CPU: server process, % of one core):",
        "",
        "| model | server | conc. | req/s | min-max | p50 ms | p99 ms | server CPU % | errors |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for cell in cells.values():
        lines.append(
            f"| {cell.model} | {cell.target} | {cell.concurrency} | {statistics.median(cell.rps):.0f} | "
            f"{min(cell.rps):.0f}-{max(cell.rps):.0f} | {pct(cell.latencies_ms, 50):.2f} | "
            f"{pct(cell.latencies_ms, 99):.2f} | {statistics.median(cell.cpu_percent):.0f} | {cell.errors} |"
        )

    def rps(model: str, target: str, conc: int) -> float:
        return statistics.median(cells[f"{model}/{target}/c{conc}"].rps)

    def p50(model: str, target: str) -> float:
        return pct(cells[f"{model}/{target}/c1"].latencies_ms, 50)

    lines += ["", "Goals (ratios within this run):", ""]
    for model, goal in (("cnn", 2.0), ("mlp", 1.0)):
        ratio = rps(model, "modelserve-http-json", 16) / rps(model, "naive", 16)
        lines.append(f"- {model}, concurrency 16, HTTP JSON vs naive: {ratio:.2f}x (goal >= {goal:g}x)")
        for transport in ("http-binary", "grpc"):
            gain = rps(model, f"modelserve-{transport}", 16) / rps(model, "modelserve-http-json", 16)
            lines.append(f"- {model}, concurrency 16, {transport} vs HTTP JSON: {gain:.2f}x (goal > 1x)")
        latency = p50(model, "modelserve-http-json") / p50(model, "naive")
        lines.append(f"- {model}, concurrency 1, p50 HTTP JSON vs naive: {latency:.2f}x (goal <= 1.2x)")
    workers = rps("mlp", "modelserve-w2-http-json", 16) / rps("mlp", "modelserve-http-json", 16)
    lines.append(f"- mlp, concurrency 16, HTTP JSON, 2 workers vs 1: {workers:.2f}x (goal >= 1.4x)")
    for model in MODELS:
        gain = rps(model, "modelserve-w2-grpc", 16) / rps(model, "modelserve-w2-http-json", 16)
        lines.append(f"- {model}, concurrency 16, 2 workers, grpc vs HTTP JSON: {gain:.2f}x")
    cached = rps("cnn", "modelserve-cached-http-binary", 16) / rps("cnn", "modelserve-http-binary", 16)
    lines.append(f"- cnn, concurrency 16, HTTP binary, cache hits vs no cache: {cached:.2f}x (goal >= 3x)")
    missed = rps("cnn", "modelserve-cached-http-binary", 16) / rps("cnn", "modelserve-cached-miss-http-binary", 16)
    lines.append(f"- cnn, concurrency 16, HTTP binary, cache hits vs true misses (a unique input each): {missed:.2f}x")
    lines.append(
        f"- memory per worker (2 workers, largest worker): {memory['workers_idle_rss_mib_per_worker']:.0f} MiB"
        f" idle, {memory['workers_peak_rss_mib_per_worker']:.0f} MiB peak"
    )
    lines.append(
        f"- resident memory with both models loaded: modelserve {memory['modelserve_idle_rss_mib']:.0f} MiB idle, "
        f"{memory['modelserve_peak_rss_mib']:.0f} MiB peak (goal < 200 MiB); naive server "
        f"{memory['naive_idle_rss_mib']:.0f} / {memory['naive_peak_rss_mib']:.0f} MiB"
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds measured per cell and round")
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--out", type=Path, default=Path("bench/results/serving.json"))
    parser.add_argument("--only", default="", help="run only cells whose key (model/target/cN) contains this")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        repo = examples.write_repository(Path(tmp) / "models", list(MODELS))
        ceiling_rows = ceiling(repo, seconds=2.0)
        cells = {
            c.key: c
            for model in MODELS
            for conc in (1, 16)
            for c in [
                Cell(model, t, conc)
                for t in ("naive", "modelserve-http-json", "modelserve-http-binary", "modelserve-grpc")
            ]
            if args.only in c.key
        } | {
            c.key: c
            for model in MODELS
            for c in [
                Cell(model, "modelserve-w2-http-json", 16),
                Cell(model, "modelserve-w2-grpc", 16),
                Cell(model, "modelserve-cached-http-binary", 16),
                Cell(model, "modelserve-cached-miss-http-binary", 16),
            ]
            if args.only in c.key
        }
        try:
            import uvloop

            memory = uvloop.run(measure(cells, repo, args.rounds, args.duration, args.warmup))
        except ImportError:
            memory = asyncio.run(measure(cells, repo, args.rounds, args.duration, args.warmup))
    text = (
        report(cells, ceiling_rows, memory, args)
        if not args.only
        else "\n".join(
            f"{c.key}: {statistics.median(c.rps):.0f} req/s, p50 {pct(c.latencies_ms, 50):.2f} ms"
            for c in cells.values()
        )
    )
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    summary = {
        "ceiling": ceiling_rows,
        "memory": memory,
        "cells": [
            {**{k: v for k, v in asdict(c).items() if k != "latencies_ms"},
             "p50_ms": pct(c.latencies_ms, 50), "p99_ms": pct(c.latencies_ms, 99)}
            for c in cells.values()
        ],
    }  # fmt: skip
    args.out.write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
