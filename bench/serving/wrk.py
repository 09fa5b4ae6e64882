"""True cache misses from a C client: wrk (HTTP/1.1, closed loop per connection) with a Lua script that
writes a counter into the last 8 bytes of the input tensor of every request, as `cells.unique_body` does
(little-endian uint64), so no two requests of a run, or of any two runs, carry the same input.

wrk has no warm-up option and takes whole seconds: a warm-up run (its own counter range) precedes the
measured one, and durations are rounded to whole seconds (at least 1). Its `done` hook writes the
request and error counts and the whole latency histogram (µs, count) to a file.
"""

from __future__ import annotations

import itertools
import shutil
import subprocess
from pathlib import Path

from bench.serving.cells import Measurement, url_path
from bench.serving.child import ChildRun, run_child

_RUNS = itertools.count(1)  # each run's counters start at run << 40: unique across runs and rounds

_SCRIPT = """
wrk.method = "POST"
@HEADERS@
local file = assert(io.open(@BODY@, "rb"))
local body = file:read("*a")
file:close()
local prefix = body:sub(1, #body - 8)
local char, concat = string.char, table.concat
local counter = 0
local threads = 0

function setup(thread)
  thread:set("thread_index", threads)
  threads = threads + 1
end

function request()
  counter = counter + 1
  local n = @BASE@ + (thread_index or 0) * 4294967296 + counter
  local bytes = {}
  for i = 1, 8 do
    local b = n % 256
    bytes[i] = char(b)
    n = (n - b) / 256
  end
  return wrk.format(nil, nil, nil, prefix .. concat(bytes))
end

function done(summary, latency, requests)
  local out = assert(io.open(@RESULT@, "w"))
  local e = summary.errors
  out:write(string.format("%d %d %d %d %d %d %d\\n", summary.requests, summary.duration,
    e.connect, e.read, e.write, e.status, e.timeout))
  for i = 1, #latency do
    local value, count = latency(i)
    out:write(string.format("%d %d\\n", value, count))
  end
  out:close()
end
"""


def available() -> bool:
    return shutil.which("wrk") is not None


def version() -> str:
    out = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False)
    text = (out.stdout + out.stderr).strip()
    return " ".join(text.splitlines()[0].split()[:3]) if text else "wrk"


def _lua_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


class Wrk:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)

    def _script(self, body_path: Path, headers: dict[str, str], result: Path) -> Path:
        lines = "\n".join(f"wrk.headers[{_lua_string(k)}] = {_lua_string(v)}" for k, v in headers.items())
        text = (
            _SCRIPT.replace("@BODY@", _lua_string(str(body_path)))
            .replace("@RESULT@", _lua_string(str(result)))
            .replace("@BASE@", str(next(_RUNS) << 40))
            .replace("@HEADERS@", lines)
        )
        path = self.workdir / "unique.lua"
        path.write_text(text)
        return path

    async def _run(
        self, url: str, body_path: Path, headers: dict[str, str], concurrency: int, seconds: int
    ) -> tuple[ChildRun, list[str]]:
        result = self.workdir / "wrk.result"
        result.unlink(missing_ok=True)
        script = self._script(body_path, headers, result)
        argv = ["wrk", "-t1", f"-c{concurrency}", f"-d{seconds}s", "--timeout", "10s", "-s", str(script), url]
        run = await run_child(argv, self.workdir / "wrk.out", timeout=seconds + 60)
        if run.returncode != 0 or not result.exists():
            raise RuntimeError(f"wrk failed ({run.returncode}) on {url}: {run.output[-2000:]}")
        return run, result.read_text().splitlines()

    async def measure(self, target: str, address: str, model: str, body: bytes, headers: dict[str, str],
                      concurrency: int, seconds: float, warmup: float) -> Measurement:  # fmt: skip
        if target.endswith("-grpc"):
            raise ValueError("wrk speaks HTTP/1.1 only")
        url = f"http://{address}{url_path(target, model)}"
        body_path = self.workdir / "unique-body.bin"
        body_path.write_bytes(body)
        if warmup > 0:
            await self._run(url, body_path, headers, concurrency, max(1, round(warmup)))
        run, lines = await self._run(url, body_path, headers, concurrency, max(1, round(seconds)))
        requests, duration_us, connect, read, write, status, timeout = (int(x) for x in lines[0].split())
        latencies: list[float] = []
        for line in lines[1:]:
            value, count = (int(x) for x in line.split())
            latencies += [value / 1000] * count
        return Measurement(
            client="wrk",
            ok=requests - status,
            errors=status + connect + read + write + timeout,
            elapsed_s=duration_us / 1e6,
            latencies_ms=latencies,
            client_cpu_s=run.cpu_s,
            client_wall_s=run.wall_s,
            detail=f"errors: connect {connect}, read {read}, write {write}, status {status}, timeout {timeout}"
            if status + connect + read + write + timeout
            else "",
        )
