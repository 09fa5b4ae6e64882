"""Operator benchmark: time from creating N ModelDeployments to all of them reconciled.

    python -m bench.operator.run [--counts 1 100 1000] [--timeout 300]

The real operator runs as its own process (`modeldeploy run`, so its memory is its own)
against kmock's Kubernetes emulator served from this process. "Reconciled" means: the
Deployment and Service exist, and status has a Ready and a Progressing condition with
observedGeneration equal to the object's generation. Peak RSS of the operator process
is sampled every 200 ms.

kmock keeps every request it served and routes each new one by scanning that history,
so its cost grows with the square of the requests. The benchmark makes no assertions on
history, so it swaps that private list (`_requests`) for a deque holding the last few
dozen requests, to measure the operator rather than the emulator.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import kmock
import psutil

from tests.integration.operator_env import MD_PATH, MD_RESOURCE, declare_resources, model_deployment

HISTORY_KEPT = 8  # more than can be in flight at once: a request must find itself in it


MD_KEY = kmock.resource(MD_RESOURCE)
CHILD_KEYS = (kmock.resource("apps/v1/deployments"), kmock.resource("v1/services"))


def reconciled(emulator: kmock.KubernetesEmulator, ns: str, name: str) -> bool:
    try:
        st = emulator.objects[MD_KEY, ns, name].raw.get("status", {})
        if st.get("observedGeneration") != 1:
            return False
        kinds = {c["type"] for c in st.get("conditions", []) if c.get("observedGeneration") == 1}
        if not {"Ready", "Progressing"} <= kinds:
            return False
        return all(not emulator.objects[key, ns, name].deleted for key in CHILD_KEYS)
    except KeyError:
        return False


async def one_run(count: int, timeout: float) -> dict[str, float]:
    async with kmock.KubernetesEmulator() as emulator, kmock.Server(emulator):
        declare_resources(emulator)
        emulator._requests = collections.deque(maxlen=HISTORY_KEPT)
        with tempfile.TemporaryDirectory() as tmp:
            kubeconfig = Path(tmp) / "kubeconfig"
            kubeconfig.write_text(json.dumps({
                "apiVersion": "v1", "kind": "Config", "current-context": "bench",
                "clusters": [{"name": "bench", "cluster": {"server": str(emulator.url).rstrip("/")}}],
                "contexts": [{"name": "bench", "context": {"cluster": "bench", "user": "bench"}}],
                "users": [{"name": "bench", "user": {"token": "bench"}}],
            }))  # fmt: skip
            env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
            operator = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "modeldeploy.cli", "run", "--metrics-port=0", "--liveness=",
                "--resync-seconds=3600", env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
            )  # fmt: skip
            process = psutil.Process(operator.pid)
            peak = 0
            try:
                await asyncio.sleep(3)  # the operator starts and lists the (empty) resources
                idle_rss = process.memory_info().rss
                cpu = process.cpu_times()
                cpu_before = cpu.user + cpu.system
                times = os.times()
                emulator_before = times.user + times.system
                started = time.perf_counter()
                names = [(f"ns{i % 10}", f"md-{i}") for i in range(count)]
                for start in range(0, count, 20):
                    await asyncio.gather(
                        *(emulator.post(MD_PATH.format(ns=ns), json=model_deployment(name, ns, replicas=2))
                          for ns, name in names[start : start + 20])
                    )  # fmt: skip
                created = time.perf_counter() - started
                pending = set(names)
                deadline = started + timeout
                while pending and time.perf_counter() < deadline:
                    peak = max(peak, process.memory_info().rss)
                    pending = {key for key in pending if not reconciled(emulator, *key)}
                    await asyncio.sleep(0.2)
                elapsed = time.perf_counter() - started
                peak = max(peak, process.memory_info().rss)
                cpu = process.cpu_times()
                operator_cpu = cpu.user + cpu.system - cpu_before
                times = os.times()
                emulator_cpu = times.user + times.system - emulator_before
            finally:
                operator.terminate()
                await operator.wait()
    return {
        "count": count,
        "created_s": round(created, 2),
        "all_reconciled_s": round(elapsed, 2) if not pending else float("nan"),
        "unfinished": len(pending),
        "operator_cpu_s": round(operator_cpu, 1),
        "emulator_cpu_s": round(emulator_cpu, 1),
        "idle_rss_mib": round(idle_rss / 2**20, 1),
        "peak_rss_mib": round(peak / 2**20, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--counts", type=int, nargs="+", default=[1, 100, 1000])
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--out", type=Path, default=Path("bench/results/operator.json"))
    args = parser.parse_args()
    rows = [asyncio.run(one_run(count, args.timeout)) for count in args.counts]
    print(f"Command: `python -m bench.operator.run --counts {' '.join(map(str, args.counts))}`\n")
    columns = [
        ("ModelDeployments", "count"),
        ("created in (s)", "created_s"),
        ("all reconciled after (s)", "all_reconciled_s"),
        ("unfinished", "unfinished"),
        ("operator CPU (s)", "operator_cpu_s"),
        ("emulator CPU (s)", "emulator_cpu_s"),
        ("operator RSS idle (MiB)", "idle_rss_mib"),
        ("operator RSS peak (MiB)", "peak_rss_mib"),
    ]
    print("| " + " | ".join(title for title, _ in columns) + " |")
    print("|" + " ---: |" * len(columns))
    for row in rows:
        print("| " + " | ".join(str(row[key]) for _, key in columns) + " |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
