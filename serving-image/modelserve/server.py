"""Server lifecycle: HTTP, gRPC and metrics in one event loop; graceful shutdown on SIGTERM.

Order: listeners come up first (liveness answers while models load), then the models
load, then readiness turns true. On SIGTERM or SIGINT readiness turns false, new
inference requests get 503 / UNAVAILABLE, in-flight ones finish (up to
--exit-timeout-secs), and the process exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import time
from collections.abc import Generator
from dataclasses import dataclass, field

import uvicorn

from modelserve import grpc as grpc_api
from modelserve import httplimits
from modelserve.dataplane import DataPlane
from modelserve.faults import FaultInjector
from modelserve.repository import Repository, RepositorySettings
from modelserve.rest import MetricsApp, RestApp
from modelserve.restrictions import Restrictions

log = logging.getLogger("modelserve")


@dataclass(frozen=True)
class ServerOptions:
    http_address: str = "0.0.0.0"
    http_port: int = 8000
    grpc_address: str = "0.0.0.0"
    grpc_port: int = 8001
    metrics_port: int = 8002
    exit_timeout_secs: float = 30.0
    max_body_bytes: int = 64 * 1024 * 1024
    max_head_bytes: int = httplimits.DEFAULT_MAX_HEAD_BYTES
    max_headers: int = httplimits.DEFAULT_MAX_HEADERS
    head_timeout_secs: float = httplimits.DEFAULT_HEAD_TIMEOUT
    http_restrictions: Restrictions = field(default_factory=Restrictions)
    grpc_restrictions: Restrictions = field(default_factory=Restrictions)


class _EmbeddedUvicorn(uvicorn.Server):
    """A uvicorn server that leaves signal handling to us."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def _http_server(app: object, host: str, port: int, options: ServerOptions) -> _EmbeddedUvicorn:
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        loop="none",
        http=httplimits.bounded_protocol(options.max_head_bytes, options.max_headers, options.head_timeout_secs),
        lifespan="off",
        access_log=False,
        log_level="warning",
        timeout_graceful_shutdown=5,
        backlog=2048,
    )
    return _EmbeddedUvicorn(config)


async def _wait_started(server: _EmbeddedUvicorn, task: asyncio.Task[None], what: str) -> None:
    while not server.started:
        if task.done():
            task.result()
            raise OSError(f"{what} server stopped during start-up")
        await asyncio.sleep(0.01)


async def serve(options: ServerOptions, settings: RepositorySettings, faults: FaultInjector) -> int:
    repository = Repository(settings)
    repository.scan()  # fail fast on a missing repository
    dataplane = DataPlane(repository, faults)
    if faults.active:
        log.warning("fault injection is ON: failure ratio %s, latency %s ms", faults.failure_ratio, faults.latency_ms)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    rest_app = RestApp(dataplane, options.max_body_bytes, options.http_restrictions)
    http = _http_server(rest_app, options.http_address, options.http_port, options)
    metrics = _http_server(MetricsApp(dataplane), options.http_address, options.metrics_port, options)
    grpc_server = grpc_api.create_server(
        dataplane, f"{options.grpc_address}:{options.grpc_port}", options.max_body_bytes, options.grpc_restrictions
    )
    http_task = asyncio.create_task(http.serve())
    metrics_task = asyncio.create_task(metrics.serve())
    await grpc_server.start()
    await _wait_started(http, http_task, "HTTP")
    await _wait_started(metrics, metrics_task, "metrics")
    log.info("listening: HTTP %s, gRPC %s, metrics %s", options.http_port, options.grpc_port, options.metrics_port)

    await repository.load_startup_models()
    dataplane.started = True
    log.info("server is %s", "ready" if dataplane.ready() else "up but not ready (a model failed to load)")

    await stop.wait()
    log.info("shutting down: draining in-flight requests for up to %ss", options.exit_timeout_secs)
    started = time.monotonic()
    drained = await dataplane.drain(options.exit_timeout_secs)
    if not drained:
        log.warning("exit timeout reached with %d request(s) still in flight", dataplane.inflight)
    remaining = max(0.0, options.exit_timeout_secs - (time.monotonic() - started))
    await grpc_server.stop(grace=min(remaining, 5.0))
    http.should_exit = True
    metrics.should_exit = True
    await asyncio.gather(http_task, metrics_task, return_exceptions=True)
    await repository.close()
    log.info("stopped")
    return 0


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def configure_logging(verbose: int, fmt: str) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(
        JsonFormatter() if fmt == "json" else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose > 0 else logging.INFO)
