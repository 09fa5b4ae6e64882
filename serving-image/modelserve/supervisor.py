"""`--workers N`: N server processes on the same ports (SO_REUSEPORT), supervised by this one.

Each worker is a whole modelserve (HTTP, gRPC, metrics, its own copy of the models and its own
batching); the kernel spreads new connections over them. Readiness, statistics and metrics
are answered for all workers by any of them (modelserve.workerstate). This process only:

- starts the workers, each with `--intra-op-threads` = cores // N unless set (so workers x
  ORT threads do not oversubscribe the cores);
- replaces a worker that dies (its readiness byte is cleared at once, so the server reports
  not ready until the replacement has loaded its models); a worker that fails before ever
  becoming ready (a port in use, a bad flag) stops them all, exit 1;
- forwards SIGTERM / SIGINT to every worker, each of which shuts down losslessly
  (modelserve.shutdown), and exits 0 when they all did.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from modelserve import workerstate

log = logging.getLogger("modelserve")

POLL_SECONDS = 0.2
RESTART_BACKOFF_SECONDS = 1.0


def available_cores() -> int:
    """CPUs this process may use: its affinity, capped by the cgroup v2 CPU limit (rounded up)."""
    count = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    with contextlib.suppress(OSError, ValueError):
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            count = min(count, math.ceil(int(quota) / int(period)))
    return max(1, count)


def ort_threads(requested: int, workers: int, cores: int) -> int:
    """Intra-op threads per worker: as requested, or the cores shared out (at least 1)."""
    return requested if requested > 0 else max(1, cores // workers)


class Supervisor:
    def __init__(self, argv: Sequence[str], count: int, intra_op_threads: int) -> None:
        self.count = count
        self.argv = [*argv, "--workers=1", f"--intra-op-threads={intra_op_threads}"]
        self.directory = Path(tempfile.mkdtemp(prefix="modelserve-workers-"))
        self.workers: list[subprocess.Popen[bytes] | None] = [None] * count
        self.started_at = [0.0] * count
        self.stopping = False

    def _spawn(self, index: int) -> None:
        env = {
            **os.environ,
            workerstate.ENV_DIR: str(self.directory),
            workerstate.ENV_INDEX: str(index),
            workerstate.ENV_COUNT: str(self.count),
        }
        self.workers[index] = subprocess.Popen([sys.executable, "-m", "modelserve.cli", *self.argv], env=env)
        self.started_at[index] = time.monotonic()

    def _signal(self, signum: int, frame: FrameType | None) -> None:
        self.stopping = True
        for proc in self.workers:
            if proc is not None and proc.poll() is None:
                proc.send_signal(signum)

    def _ever_ready(self, index: int) -> bool:
        return (self.directory / f"stats-{index}.json").exists()  # written once the worker serves

    def run(self) -> int:
        workerstate.create(self.directory, self.count)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._signal)
        try:
            for index in range(self.count):
                self._spawn(index)
            log.info("supervising %d workers (pids %s)", self.count, [p.pid for p in self.workers if p])
            return self._watch()
        finally:
            for proc in self.workers:
                if proc is not None and proc.poll() is None:
                    proc.kill()
                    proc.wait()
            shutil.rmtree(self.directory, ignore_errors=True)

    def _watch(self) -> int:
        while True:
            alive = 0
            for index, proc in enumerate(self.workers):
                if proc is None or proc.poll() is None:
                    alive += 1
                    continue
                workerstate.mark(self.directory, index, False)
                if self.stopping:
                    continue
                if not self._ever_ready(index):
                    log.error("worker %d exited with %d before serving; stopping", index, proc.returncode)
                    self._signal(signal.SIGTERM, None)
                    self._wait_all()
                    return proc.returncode if proc.returncode > 0 else 1
                log.warning("worker %d (pid %d) exited with %d; replacing it", index, proc.pid, proc.returncode)
                time.sleep(max(0.0, RESTART_BACKOFF_SECONDS - (time.monotonic() - self.started_at[index])))
                self._spawn(index)
                alive += 1
            if self.stopping and alive == 0:
                codes = [p.returncode for p in self.workers if p is not None]
                return 0 if all(code == 0 for code in codes) else 1
            time.sleep(POLL_SECONDS)

    def _wait_all(self) -> None:
        for proc in self.workers:
            if proc is not None:
                proc.wait()


def run(argv: Sequence[str], count: int, intra_op_threads: int) -> int:
    threads = ort_threads(intra_op_threads, count, available_cores())
    return Supervisor(argv, count, threads).run()
