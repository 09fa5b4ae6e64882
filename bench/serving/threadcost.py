"""Where a transport's server time goes: CPU and context switches per request, per server thread.

    python -m bench.serving.threadcost [--model mlp] [--seconds 3] [--rounds 2]

Starts one modelserve (the benchmark's flags), drives it with bench/serving's closed-loop client at
concurrency 16 over HTTP JSON and gRPC alternately, and reads, around each run, every server
thread's CPU time (psutil) and context switches (/proc/<pid>/task/<tid>/status), and the
statistics extension's inference and execution counts (rows per model execution).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
import urllib.request
from pathlib import Path

import psutil

from bench.serving.cells import MODELSERVE_ARGS, request_bodies
from bench.serving.pyclient import drive
from modelserve import examples
from modelserve.launcher import ServingProcess


def _switches(pid: int) -> dict[int, int]:
    counts: dict[int, int] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            lines = (task / "status").read_text().splitlines()
        except OSError:
            continue
        counts[int(task.name)] = sum(int(line.split()[1]) for line in lines if "ctxt_switches" in line)
    return counts


def _cpu(process: psutil.Process) -> dict[int, float]:
    return {t.id: t.user_time + t.system_time for t in process.threads()}


def _counts(url: str, model: str) -> tuple[int, int]:
    with urllib.request.urlopen(f"http://{url}/v2/models/{model}/stats") as answer:
        stats = json.load(answer)["model_stats"][0]
    return int(stats["inference_count"]), int(stats["execution_count"])


def _name(pid: int, tid: int) -> str:
    try:
        comm = Path(f"/proc/{pid}/task/{tid}/comm").read_text().strip()
    except OSError:
        comm = "?"
    return f"loop ({comm})" if tid == pid else comm


async def measure(model: str, seconds: float, rounds: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        server = ServingProcess(examples.write_repository(Path(tmp) / "repo", [model]), args=MODELSERVE_ARGS).start()
        process, pid = psutil.Process(server.process.pid), server.process.pid
        bodies = request_bodies(model)
        try:
            for _ in range(rounds):
                for target, address in (
                    ("modelserve-http-json", server.http_url),
                    ("modelserve-grpc", server.grpc_url),
                ):
                    body, headers = bodies[target]
                    inferences, executions = _counts(server.http_url, model)
                    cpu0, sw0, wall0 = _cpu(process), _switches(pid), time.perf_counter()
                    latencies, errors, elapsed = await drive(target, address, model, body, headers, 16, seconds, 0.0)
                    cpu1, sw1, wall1 = _cpu(process), _switches(pid), time.perf_counter()
                    inferences1, executions1 = _counts(server.http_url, model)
                    n = max(inferences1 - inferences, 1)
                    cpu = sum(cpu1.values()) - sum(cpu0.get(t, 0.0) for t in cpu1)
                    switches = sum(sw1.values()) - sum(sw0.get(t, 0) for t in sw1)
                    print(
                        f"{target}: {len(latencies) / elapsed:.0f} req/s, CPU {cpu / n * 1000:.3f} ms/request"
                        f" ({100 * cpu / (wall1 - wall0):.0f} % of a core), {switches / n:.1f} switches/request,"
                        f" {n / max(executions1 - executions, 1):.2f} rows per execution, {errors} errors"
                    )
                    threads = sorted(
                        ((cpu1[t] - cpu0.get(t, 0.0)) / n * 1000, (sw1.get(t, 0) - sw0.get(t, 0)) / n, _name(pid, t))
                        for t in cpu1
                    )
                    for ms, sw, name in reversed(threads[-8:]):
                        if ms > 0.002 or sw > 0.05:
                            print(f"    {name:<18} {ms:.3f} ms  {sw:.2f} switches")
        finally:
            server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="mlp", choices=["mlp", "cnn"])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    asyncio.run(measure(args.model, args.seconds, args.rounds))


if __name__ == "__main__":
    main()
