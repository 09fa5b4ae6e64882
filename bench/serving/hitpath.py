"""The HTTP request path and the response-cache hit path, measured with a C load generator (h2load).

    flock /tmp/bench.lock .venv/bin/python -m bench.serving.hitpath [--rounds 3] [--duration 4] \
        [--cells cnn-binary,cnn-binary-hit,cnn-json,cnn-json-hit,mlp-json] [--profile CELL]

Two `modelserve` processes serve the MLP and the CNN (`--max-batch-size=32 --max-queue-delay-us=2000
--intra-op-threads=2`, or BENCH_MODELSERVE_ARGS), both models' configs saying `response_cache { enable:
true }`: one without `--cache-config` (no cache: every request runs the model), one with
`--cache-config=local,size=67108864` (`-hit` cells: the same body every time, so every request after the
first is a cache hit). Bodies are those of bench/serving/cells.py's `request_bodies` (the JSON body asks for
a JSON output, the binary one for a binary output). Each cell is one h2load run (HTTP/1.1, 16 connections,
one request in flight each: `h2load --h1 -c16 -m1 -t1 -D<duration> --warm-up-time=1`); cells are
interleaved over rounds. Printed per cell: req/s median and min-max over rounds, server CPU (% of one
core, psutil; with `--workers N` in BENCH_MODELSERVE_ARGS, the supervisor and its workers together) and
server CPU per request (microseconds).

`--compare DIR` also starts the same two servers from another copy of the code (DIR holds its
`modelserve` package, e.g. `git archive <commit> serving-image | tar -x -C /tmp/old` and DIR =
/tmp/old/serving-image, put first on PYTHONPATH) and interleaves its cells (named `old:<cell>`) with
this tree's: before/after figures from one run, under the same load.

`--profile CELL` instead runs that cell once under py-spy (`.venv/bin/pip install py-spy`) and writes
a flame graph and the top functions to bench/results/hitpath-<cell>.{svg,txt}.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from bench.serving.cells import MODELSERVE_ARGS as SERVER_ARGS
from bench.serving.cells import request_bodies
from bench.serving.servers import CACHE_ARGS
from modelserve import examples
from modelserve.launcher import ServingProcess

CACHED_CONFIG = "response_cache { enable: true }\n"
DEFAULT_CELLS = "cnn-binary,cnn-binary-hit,cnn-json,cnn-json-hit,mlp-json,mlp-json-hit"
FINISHED = re.compile(r"finished in [\d.]+m?s, ([\d.]+) req/s")
REQUESTS = re.compile(r"requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed")


@dataclass
class Cell:
    name: str
    variant: str = ""  # "" for this tree, "old" for --compare's
    rps: list[float] = field(default_factory=list)
    cpu_percent: list[float] = field(default_factory=list)
    cpu_us_per_request: list[float] = field(default_factory=list)
    failed: int = 0

    @property
    def label(self) -> str:
        return f"{self.variant}:{self.name}" if self.variant else self.name

    @property
    def model(self) -> str:
        return self.name.split("-")[0]

    @property
    def form(self) -> str:
        return self.name.split("-")[1]

    @property
    def hit(self) -> bool:
        return self.name.endswith("-hit")


def write_bodies(directory: Path) -> dict[str, tuple[Path, dict[str, str]]]:
    """`<model>-<json|binary>` -> (body file, headers)."""
    out = {}
    for model in ("mlp", "cnn"):
        bodies = request_bodies(model)
        for form, target in (("json", "modelserve-http-json"), ("binary", "modelserve-http-binary")):
            body, headers = bodies[target]
            path = directory / f"{model}-{form}.body"
            path.write_bytes(body)
            out[f"{model}-{form}"] = (path, headers)
    return out


def h2load(url: str, body: Path, headers: dict[str, str], duration: int, requests: int = 0) -> tuple[float, int]:
    """(req/s, failed) of one run: `duration` seconds after a 1 s warm-up, or just `requests` requests."""
    command = ["h2load", "--h1", "-c16", "-m1", "-t1"]
    command += [f"-n{requests}"] if requests else [f"-D{duration}", "--warm-up-time=1"]
    command += ["-d", str(body)]
    for key, value in headers.items():
        command += ["-H", f"{key.lower()}: {value}"]
    result = subprocess.run([*command, url], capture_output=True, text=True, check=True)
    rate = FINISHED.search(result.stdout)
    counts = REQUESTS.search(result.stdout)
    if rate is None or counts is None:
        raise RuntimeError(f"cannot read h2load's output:\n{result.stdout}\n{result.stderr}")
    _, done, succeeded, failed = (int(x) for x in counts.groups())
    return float(rate.group(1)), failed + (done - succeeded)


def server_cpu(procs: list[psutil.Process]) -> float:
    """User + system CPU seconds of the server's processes so far."""
    return sum(sum(p.cpu_times()[:2]) for p in procs)


def measure(cell: Cell, server: ServingProcess, body: Path, headers: dict[str, str], duration: int) -> None:
    url = f"http://{server.http_url}/v2/models/{cell.model}/infer"
    assert server.process is not None
    procs = [psutil.Process(server.process.pid)]
    procs += procs[0].children(recursive=True)  # --workers N: the workers are the supervisor's children
    h2load(url, body, headers, 0, requests=320)  # the hit cells' first (missing) request, connections warm
    cpu0, t0 = server_cpu(procs), time.perf_counter()
    rps, failed = h2load(url, body, headers, duration)
    cpu1, t1 = server_cpu(procs), time.perf_counter()
    cell.rps.append(rps)
    cell.failed += failed
    wall = t1 - t0  # includes h2load's 1 s warm-up, as the CPU does
    cell.cpu_percent.append(100 * (cpu1 - cpu0) / wall)
    cell.cpu_us_per_request.append(1e6 * (cpu1 - cpu0) / max(1.0, rps * wall))


def profile(cell: Cell, server: ServingProcess, body: Path, headers: dict[str, str], duration: int) -> None:
    out = Path("bench/results")
    out.mkdir(parents=True, exist_ok=True)
    url = f"http://{server.http_url}/v2/models/{cell.model}/infer"
    assert server.process is not None
    py_spy = str(Path(sys.executable).parent / "py-spy")
    h2load(url, body, headers, 0, requests=320)
    for fmt, suffix in (("flamegraph", "svg"), ("raw", "txt")):
        target = str(out / f"hitpath-{cell.name}.{suffix}")
        command = [py_spy, "record", "-p", str(server.process.pid), "-r", "250", "-f", fmt, "--nonblocking"]
        spy = subprocess.Popen([*command, "-o", target, "-d", str(duration + 2)], stdout=subprocess.DEVNULL)
        print(f"{cell.name} under py-spy ({fmt}): {h2load(url, body, headers, duration)[0]:.0f} req/s")
        spy.wait()
    print(f"wrote {out}/hitpath-{cell.name}.svg and .txt (collapsed stacks)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=4)
    parser.add_argument("--cells", default=DEFAULT_CELLS)
    parser.add_argument("--profile", default="", help="run this one cell under py-spy instead")
    parser.add_argument("--compare", default="", help="a directory holding another copy of the modelserve package")
    args = parser.parse_args()
    names = (args.profile or args.cells).split(",")
    variants = {"": {}, **({"old": {"PYTHONPATH": args.compare}} if args.compare and not args.profile else {})}
    cells = [Cell(name, variant) for name in names for variant in variants]
    with tempfile.TemporaryDirectory(prefix="hitpath-") as tmp:
        root = Path(tmp) / "models"
        for model in ("mlp", "cnn"):
            examples.write_model(root, model, examples.BUILDERS[model](), config=CACHED_CONFIG)
        bodies = write_bodies(Path(tmp))
        servers: dict[tuple[str, bool], ServingProcess] = {}
        try:
            for variant, env in variants.items():
                for hit in sorted({c.hit for c in cells}):
                    args_ = SERVER_ARGS + (CACHE_ARGS if hit else [])
                    log = Path(tmp) / f"server-{variant}-{hit}.log"
                    servers[variant, hit] = ServingProcess(root, args=args_, env=env, log_path=log).start()
            if args.profile:
                cell = cells[0]
                profile(cell, servers["", cell.hit], *bodies[f"{cell.model}-{cell.form}"], args.duration)
                return
            for _ in range(args.rounds):
                for cell in cells:
                    server = servers[cell.variant, cell.hit]
                    measure(cell, server, *bodies[f"{cell.model}-{cell.form}"], args.duration)
        finally:
            for server in servers.values():
                server.stop()
    print(f"{args.rounds} interleaved rounds of {args.duration:g} s, h2load -c16 -m1; server {' '.join(SERVER_ARGS)}")
    print("| cell | req/s median | min-max | server CPU % | CPU us/request | failed |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for c in cells:
        print(
            f"| {c.label} | {statistics.median(c.rps):.0f} | {min(c.rps):.0f}-{max(c.rps):.0f} "
            f"| {statistics.median(c.cpu_percent):.0f} | {statistics.median(c.cpu_us_per_request):.0f} | {c.failed} |"
        )
    by_label = {c.label: statistics.median(c.rps) for c in cells}
    for variant in variants:
        prefix = f"{variant}:" if variant else ""
        for model, form in (("cnn", "binary"), ("cnn", "json"), ("mlp", "json"), ("mlp", "binary")):
            plain, hit = by_label.get(f"{prefix}{model}-{form}"), by_label.get(f"{prefix}{model}-{form}-hit")
            if plain and hit:
                print(f"- {prefix}{model} {form}: cache hits vs no cache {hit / plain:.2f}x (medians)")
    if args.compare:
        for name in names:
            if name in by_label and f"old:{name}" in by_label:
                print(f"- {name}: this tree vs old {by_label[name] / by_label[f'old:{name}']:.2f}x (medians)")


if __name__ == "__main__":
    main()
