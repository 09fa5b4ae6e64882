"""The serving benchmark's markdown report: the ceiling, one row per cell (which client drove it and what
that client cost), and the goal lines, each a ratio of cells measured in the same run."""

from __future__ import annotations

import os
import platform
import statistics
import sys
from collections.abc import Iterable

import onnxruntime as ort

from bench.serving.cells import MODELS, MODELSERVE_ARGS, Cell, pct


def _median(values: Iterable[float]) -> float:
    values = list(values)
    return statistics.median(values) if values else float("nan")


def table(cells: Iterable[Cell]) -> list[str]:
    lines = [
        "| model | server | conc. | client | req/s | min-max | p50 ms | p99 ms | server CPU % | client CPU % "
        "| errors |",
        "| --- | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for cell in cells:
        if not cell.rps:
            continue
        lines.append(
            f"| {cell.model} | {cell.target} | {cell.concurrency} | {cell.client} | "
            f"{statistics.median(cell.rps):.0f} | "
            f"{min(cell.rps):.0f}-{max(cell.rps):.0f} | {pct(cell.latencies_ms, 50):.2f} | "
            f"{pct(cell.latencies_ms, 99):.2f} | {_median(cell.cpu_percent):.0f} | "
            f"{_median(cell.client_cpu_percent):.0f} | {cell.errors} |"
        )
    return lines


class Goals:
    """Goal lines from whichever cells this run measured: a line whose cells are missing is left out."""

    def __init__(self, cells: dict[str, Cell]) -> None:
        self.cells = cells
        self.lines: list[str] = []

    def rps(self, model: str, target: str, conc: int = 16) -> float | None:
        cell = self.cells.get(f"{model}/{target}/c{conc}")
        return statistics.median(cell.rps) if cell and cell.rps else None

    def p50(self, model: str, target: str) -> float | None:
        cell = self.cells.get(f"{model}/{target}/c1")
        return pct(cell.latencies_ms, 50) if cell and cell.latencies_ms else None

    def ratio(self, text: str, a: float | None, b: float | None, goal: str = "") -> None:
        if a is None or b is None or b == 0:
            return
        self.lines.append(f"- {text}: {a / b:.2f}x" + (f" (goal {goal})" if goal else ""))


def goal_lines(
    cells: dict[str, Cell], memory: dict[str, float], frontends: list[str], default_frontend: str | None
) -> list[str]:
    g = Goals(cells)
    grpc_name = f"grpc ({default_frontend} front end)" if default_frontend else "grpc"
    for model, goal in (("cnn", 2.0), ("mlp", 1.0)):
        json_rps = g.rps(model, "modelserve-http-json")
        g.ratio(f"{model}, concurrency 16, HTTP JSON vs naive", json_rps, g.rps(model, "naive"), f">= {goal:g}x")
        binary_goal = ">= 2x" if model == "cnn" else "> 1x"
        g.ratio(
            f"{model}, concurrency 16, http-binary vs HTTP JSON",
            g.rps(model, "modelserve-http-binary"),
            json_rps,
            binary_goal,
        )
        g.ratio(
            f"{model}, concurrency 16, {grpc_name} vs HTTP JSON", g.rps(model, "modelserve-grpc"), json_rps, ">= 1x"
        )
        for frontend in frontends:
            g.ratio(
                f"{model}, concurrency 16, grpc ({frontend} front end) vs HTTP JSON",
                g.rps(model, f"modelserve-{frontend}-grpc"),
                json_rps,
            )
        g.ratio(
            f"{model}, concurrency 1, p50 HTTP JSON vs naive",
            g.p50(model, "modelserve-http-json"),
            g.p50(model, "naive"),
            "<= 1.2x",
        )
    g.ratio(
        "mlp, concurrency 16, HTTP JSON, 2 workers vs 1",
        g.rps("mlp", "modelserve-w2-http-json"),
        g.rps("mlp", "modelserve-http-json"),
        ">= 1.4x",
    )
    g.ratio(
        "cnn, concurrency 16, HTTP JSON, 2 workers vs 1",
        g.rps("cnn", "modelserve-w2-http-json"),
        g.rps("cnn", "modelserve-http-json"),
    )
    for model in MODELS:
        g.ratio(
            f"{model}, concurrency 16, HTTP binary, 2 workers vs 1",
            g.rps(model, "modelserve-w2-http-binary"),
            g.rps(model, "modelserve-http-binary"),
        )
        g.ratio(
            f"{model}, concurrency 16, {grpc_name}, 2 workers vs 1",
            g.rps(model, "modelserve-w2-grpc"),
            g.rps(model, "modelserve-grpc"),
        )
        g.ratio(
            f"{model}, concurrency 16, 2 workers, {grpc_name} vs HTTP JSON",
            g.rps(model, "modelserve-w2-grpc"),
            g.rps(model, "modelserve-w2-http-json"),
        )
    hits = g.rps("cnn", "modelserve-cached-http-binary")
    g.ratio(
        "cnn, concurrency 16, HTTP binary, cache hits vs no cache",
        hits,
        g.rps("cnn", "modelserve-http-binary"),
        ">= 3x",
    )
    g.ratio(
        "cnn, concurrency 16, HTTP binary, cache hits vs true misses (a unique input each)",
        hits,
        g.rps("cnn", "modelserve-cached-miss-http-binary"),
    )
    if "workers_idle_rss_mib_per_worker" in memory:
        g.lines.append(
            f"- memory per worker (2 workers, largest worker): {memory['workers_idle_rss_mib_per_worker']:.0f} MiB"
            f" idle, {memory['workers_peak_rss_mib_per_worker']:.0f} MiB peak"
        )
    if "modelserve_idle_rss_mib" in memory and "naive_idle_rss_mib" in memory:
        g.lines.append(
            f"- resident memory with both models loaded: modelserve {memory['modelserve_idle_rss_mib']:.0f} MiB "
            f"idle, {memory['modelserve_peak_rss_mib']:.0f} MiB peak (goal < 200 MiB); naive server "
            f"{memory['naive_idle_rss_mib']:.0f} / {memory['naive_peak_rss_mib']:.0f} MiB"
        )
    return g.lines


def report(
    cells: dict[str, Cell],
    ceiling_rows: list[dict],
    memory: dict[str, float],
    rounds: int,
    duration: float,
    clients: dict[str, str],
    frontends: list[str],
    default_frontend: str | None,
) -> str:
    """`clients`: each load generator used -> what it is (version, how it was driven)."""
    lines = [
        f"Command: `python -m bench.serving.run {' '.join(sys.argv[1:])}`",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
        f"onnxruntime {ort.__version__}; modelserve flags `{' '.join(MODELSERVE_ARGS)}` "
        "(`-w2`: plus `--workers=2 --intra-op-threads=0`, the server sizing ORT threads as cores // workers)"
        + (f"; gRPC front ends: {', '.join([default_frontend or '', *frontends])} (default first)" if frontends else "")
        + ".",
        "",
        "Load generators (client CPU: the load generator's own CPU over its run, % of one core):",
        "",
        *(f"- {name}: {what}" for name, what in clients.items()),
    ]
    if ceiling_rows:
        lines += [
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
        f"Servers, {rounds} interleaved rounds of {duration:g} s each (req/s: median, min-max over rounds; "
        "latency pooled over rounds; CPU: median over rounds, server processes and client, % of one core):",
        "",
        *table(cells.values()),
        "",
        "Goals (ratios within this run):",
        "",
        *goal_lines(cells, memory, frontends, default_frontend),
    ]
    return "\n".join(lines)
