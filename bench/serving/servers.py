"""The servers under test: starting them, their CPU and memory, their success counts, and which gRPC
front ends this modelserve offers."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil

from bench.serving.cells import MODELS
from modelserve.launcher import free_port

CACHE_ARGS = ["--cache-config=local,size=67108864"]


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


def cached_repository(repo: Path) -> Path:
    """A copy of the repository whose models enable Triton's response cache."""
    cached = repo.parent / "cached"
    shutil.copytree(repo, cached)
    for model in MODELS:
        (cached / model / "config.pbtxt").write_text("response_cache { enable: true }\n")
    return cached


def grpc_frontends() -> tuple[list[str], str | None]:
    """`--grpc-frontend`'s choices and default, read from `modelserve --help`; ([], None) without the flag.

    The default is what the help text says it is (`default: X` / `default X` in the flag's paragraph),
    else the first choice.
    """
    text = subprocess.run(
        [sys.executable, "-m", "modelserve.cli", "--help"], capture_output=True, text=True, check=False
    ).stdout
    match = re.search(r"--grpc-frontend[ =]\{([^}]*)\}", text)
    if match is None:
        return [], None
    choices = [c.strip() for c in match.group(1).split(",") if c.strip()]
    paragraph = text[match.end() :].split("\n  -", 1)[0]
    said = re.search(r"default[:=]?\s*\W?(\w+)", " ".join(paragraph.split()), re.IGNORECASE)
    default = said.group(1) if said and said.group(1) in choices else (choices[0] if choices else None)
    return choices, default


def success_count(http_address: str, model: str) -> int:
    """The statistics extension's inference_stats.success.count for a model (summed over its versions;
    with --workers, over the workers)."""
    url = f"http://{http_address}/v2/models/{model}/stats"
    with urllib.request.urlopen(url, timeout=10) as response:
        answer = json.loads(response.read())
    return sum(v["inference_stats"]["success"]["count"] for v in answer["model_stats"])
