"""The C load generator: nghttp2's h2load, closed loop (`-m 1`: one request in flight per connection).

HTTP/1.1 cells: `h2load --h1 -c C -m 1 -t 1 -D SECONDS --warm-up-time=W -d BODY -H ...`.
gRPC cells: the same over h2c (prior knowledge) to `/inference.GRPCInferenceService/ModelInfer` with
`content-type: application/grpc` and `te: trailers`, the body a 5-byte gRPC prefix + the serialized
ModelInferRequest. C connections carry one stream each (so `--workers` spreads them over the workers;
the Python client multiplexes all its streams over one channel).

h2load's `--log-file` has one line per request of the measured period (start µs, status, elapsed µs):
latency percentiles come from it. HTTP errors are h2load's failed requests (non-2xx and stream or
connection errors). gRPC answers carry their status in trailers, which h2load does not read: a gRPC
cell's warm-up is its own h2load run, and the measured run's 2xx answers are checked against how far
the server's success count moved (statistics extension); any shortfall counts as errors.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import struct
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path

from bench.serving.cells import Measurement, url_path
from bench.serving.child import ChildRun, run_child

_REQUESTS = re.compile(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed")
_STATUS = re.compile(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx")


def available() -> bool:
    return shutil.which("h2load") is not None


def version() -> str:
    out = subprocess.run(["h2load", "--version"], capture_output=True, text=True, check=False).stdout
    return out.strip().splitlines()[0] if out.strip() else "h2load"


def grpc_message(serialized: bytes) -> bytes:
    """A gRPC length-prefixed message: not compressed, 4-byte big-endian length, the bytes."""
    return b"\x00" + struct.pack(">I", len(serialized)) + serialized


def _ms(seconds: float) -> str:
    return f"{max(1, round(seconds * 1000))}ms"


class BodyFiles:
    """Each request body written to a file once, for `h2load -d`."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self._paths: dict[bytes, Path] = {}

    def path(self, body: bytes) -> Path:
        if body not in self._paths:
            path = self.directory / f"body-{len(self._paths)}.bin"
            path.write_bytes(body)
            self._paths[body] = path
        return self._paths[body]


def parse_log(path: Path) -> tuple[list[float], int]:
    """Latencies (ms) of the successful answers, and how many answers were not.

    Status 0: the answer's status line came during the warm-up and the rest in the measured period;
    h2load then takes the status as a success without recording it (nor counting it under "status
    codes"), so it counts as one here too. Status -1: a failed stream.
    """
    latencies, bad = [], 0
    for line in path.read_text().splitlines():
        fields = line.split("\t")
        if len(fields) < 3:
            continue
        status = int(fields[1])
        if status == 0 or 200 <= status < 300:
            latencies.append(int(fields[2]) / 1000)
        else:
            bad += 1
    return latencies, bad


async def settled(count: Callable[[], Awaitable[int]], interval: float = 0.25, tries: int = 12) -> int:
    """A count read until two reads `interval` apart agree: with --workers, each worker publishes its
    statistics up to 0.1 s late, and calls in flight when h2load stopped still complete."""
    last = await count()
    for _ in range(tries):
        await asyncio.sleep(interval)
        now = await count()
        if now == last:
            return now
        last = now
    return last


class H2load:
    """Drives one cell per call; `success_count(model)` reads a gRPC server's success count."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.bodies = BodyFiles(workdir / "bodies")

    def _argv(self, grpc: bool, url: str, body: bytes, headers: dict[str, str], concurrency: int) -> list[str]:
        if grpc:
            body = grpc_message(body)
            headers = {"content-type": "application/grpc", "te": "trailers"}
        argv = ["h2load", "-c", str(concurrency), "-m", "1", "-t", "1", "-d", str(self.bodies.path(body))]
        for name, value in headers.items():
            argv += ["-H", f"{name}: {value}"]
        return argv if grpc else [*argv, "--h1"]

    async def _run(self, argv: list[str], seconds: float) -> ChildRun:
        return await run_child(argv, self.workdir / "h2load.out", timeout=seconds + 60)

    async def measure(self, target: str, address: str, model: str, body: bytes, headers: dict[str, str],
                      concurrency: int, seconds: float, warmup: float,
                      success_count: Callable[[], Awaitable[int]] | None = None) -> Measurement:  # fmt: skip
        grpc = target.endswith("-grpc")
        url = f"http://{address}{url_path(target, model)}"
        argv = self._argv(grpc, url, body, headers, concurrency)
        log = self.workdir / "h2load.log"
        log.unlink(missing_ok=True)
        if grpc:
            if warmup > 0:
                await self._run([*argv, "-D", _ms(warmup), url], warmup)
            before = await settled(success_count) if success_count else None
            run = await self._run([*argv, "-D", _ms(seconds), f"--log-file={log}", url], seconds)
        else:
            before = None
            timing = ["-D", _ms(seconds)] + (["--warm-up-time", _ms(warmup)] if warmup > 0 else [])
            run = await self._run([*argv, *timing, f"--log-file={log}", url], seconds + warmup)
        requests, statuses = _REQUESTS.search(run.output), _STATUS.search(run.output)
        if run.returncode != 0 or requests is None or statuses is None or not log.exists():
            raise RuntimeError(f"h2load failed ({run.returncode}) on {target} {model}: {run.output[-2000:]}")
        latencies, failed_in_log = parse_log(log)
        # failed: non-2xx answers plus stream and connection errors, in the measured period
        errors = max(int(requests.group(5)), failed_in_log)
        ok, hidden = len(latencies), 0
        if before is not None and success_count is not None:
            moved = await settled(success_count) - before
            hidden = max(0, ok - moved)  # gRPC errors answered with HTTP 200 (grpc-status in the trailers)
            ok -= hidden  # (their latencies stay in: h2load cannot tell which answers they were)
            errors += hidden
        return Measurement(
            client="h2load",
            ok=ok,
            errors=errors,
            elapsed_s=seconds,
            latencies_ms=latencies,
            client_cpu_s=run.cpu_s,
            client_wall_s=run.wall_s,
            detail=f"{requests.group(0)}; {statuses.group(0)}; {failed_in_log} failed in the log; {hidden} gRPC errors"
            if errors
            else "",
        )
