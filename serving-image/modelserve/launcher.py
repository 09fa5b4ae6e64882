"""Run a real `modelserve` as a child process on free loopback ports (tests, demo, benchmarks)."""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class ServingProcess:
    repository: Path
    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    log_path: Path | None = None
    http_port: int = 0  # 0: a free port, picked here (and picked again should another process take it first)
    grpc_port: int = 0
    metrics_port: int = 0
    process: subprocess.Popen[bytes] | None = None
    https_ca: Path | None = None  # the server speaks HTTPS with a certificate signed by this CA

    def __post_init__(self) -> None:
        self.ports_picked = not (self.http_port or self.grpc_port or self.metrics_port)
        self.http_port = self.http_port or free_port()
        self.grpc_port = self.grpc_port or free_port()
        self.metrics_port = self.metrics_port or free_port()

    def _pick_ports(self) -> None:
        self.http_port, self.grpc_port, self.metrics_port = free_port(), free_port(), free_port()

    @property
    def http_url(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def start(self, wait_ready: bool = True, timeout: float = 60.0) -> ServingProcess:
        """Start and wait until ready (or live). A free port is free only until something binds it:
        when another process took one of the picked ports first, pick new ones and start again."""
        for attempt in range(3):
            try:
                return self._start_once(wait_ready, timeout)
            except RuntimeError as exc:
                if not (self.ports_picked and "address already in use" in str(exc)) or attempt == 2:
                    raise
                self._pick_ports()
        raise AssertionError("unreachable")

    def _start_once(self, wait_ready: bool, timeout: float) -> ServingProcess:
        log = (self.log_path or self.repository.parent / f"modelserve-{self.http_port}.log").open("wb")
        command = [
            sys.executable, "-m", "modelserve.cli",
            f"--model-repository={self.repository}",
            "--http-address=127.0.0.1", "--grpc-address=127.0.0.1",
            f"--http-port={self.http_port}", f"--grpc-port={self.grpc_port}", f"--metrics-port={self.metrics_port}",
            "--intra-op-threads=1", "--workers=1",
            *self.args,
        ]  # fmt: skip
        self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **self.env})
        deadline = time.monotonic() + timeout
        path = "/v2/health/ready" if wait_ready else "/v2/health/live"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"modelserve exited with {self.process.returncode}: {self.log_text()}")
            if self.http_get(path) == 200:
                return self
            time.sleep(0.1)
        raise TimeoutError(f"modelserve not {'ready' if wait_ready else 'live'} in {timeout}s: {self.log_text()}")

    def http_get(self, path: str) -> int:
        scheme, context = "http", None
        if self.https_ca is not None:
            scheme, context = "https", ssl.create_default_context(cafile=str(self.https_ca))
        try:
            with urllib.request.urlopen(f"{scheme}://{self.http_url}{path}", timeout=2, context=context) as response:
                return response.status
        except urllib.error.HTTPError as exc:
            return exc.code
        except OSError:
            return 0

    def metrics_text(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as response:
            return response.read().decode()

    def metric(self, name: str, model: str, version: str = "1") -> float:
        prefix = f'{name}{{model="{model}",version="{version}"}} '
        for line in self.metrics_text().splitlines():
            if line.startswith(prefix):
                return float(line[len(prefix) :])
        raise KeyError(prefix)

    def log_text(self) -> str:
        path = self.log_path or self.repository.parent / f"modelserve-{self.http_port}.log"
        return path.read_text() if path.exists() else ""

    def stop(self, timeout: float = 30.0) -> int:
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else 0
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()
