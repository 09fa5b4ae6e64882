"""Run a load-generator binary as a child process and read the CPU it used (its own rusage, every thread)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass
class ChildRun:
    returncode: int
    output: str  # stdout and stderr together
    cpu_s: float  # user + system, from wait4's rusage
    wall_s: float


async def run_child(argv: list[str], output: Path, timeout: float) -> ChildRun:
    """Run `argv` to completion without blocking the event loop; killed after `timeout` seconds.

    The child is reaped with os.wait4, whose rusage is exactly the CPU the child (all its threads) used:
    the load generator's cost, reported next to the server's.
    """
    with output.open("wb") as sink:
        started = time.perf_counter()
        process = subprocess.Popen(argv, stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    deadline = started + timeout
    killed = False
    while True:
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        if pid == process.pid:
            break
        if not killed and time.perf_counter() > deadline:
            os.kill(process.pid, signal.SIGKILL)
            killed = True
        await asyncio.sleep(0.02)
    wall = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait again
    text = output.read_text(errors="replace")
    if killed:
        text += f"\n[killed after {timeout:.0f} s]"
    return ChildRun(process.returncode, text, usage.ru_utime + usage.ru_stime, wall)
