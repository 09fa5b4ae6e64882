"""Server lifecycle: HTTP, gRPC and metrics in one event loop; lossless shutdown on SIGTERM.

Order: listeners come up first (liveness answers while models load), then the models
load, then readiness turns true. On SIGTERM or SIGINT modelserve.shutdown runs: not ready
at once, serving for --shutdown-delay-secs while endpoints propagate, then draining
in-flight requests for up to --exit-timeout-secs, then exit 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import resource
import signal
import socket
from collections.abc import Generator
from dataclasses import dataclass, field

import grpc
import uvicorn

from modelserve import contract, httplimits
from modelserve import grpc as grpc_api
from modelserve.auth import TokenAuth
from modelserve.cache import ResponseCache
from modelserve.dataplane import DataPlane
from modelserve.faults import FaultInjector
from modelserve.grpcloop import GrpcLoopServer
from modelserve.repository import Repository, RepositorySettings
from modelserve.rest import MetricsApp, RestApp
from modelserve.restrictions import Restrictions
from modelserve.shutdown import Listeners, shut_down
from modelserve.tls import TlsFiles
from modelserve.workerstate import WorkerState

log = logging.getLogger("modelserve")

DESCRIPTOR_RESERVE = 256  # descriptors kept for models, files, gRPC and metrics beyond the HTTP connection cap


@dataclass(frozen=True)
class ServerOptions:
    http_address: str = "0.0.0.0"
    http_port: int = contract.HTTP_PORT
    grpc_address: str = "0.0.0.0"
    grpc_port: int = contract.GRPC_PORT
    metrics_port: int = contract.METRICS_PORT
    exit_timeout_secs: float = 30.0
    shutdown_delay_secs: float = 0.0
    max_body_bytes: int = contract.DEFAULT_MAX_BODY_BYTES
    max_head_bytes: int = httplimits.DEFAULT_MAX_HEAD_BYTES
    max_headers: int = httplimits.DEFAULT_MAX_HEADERS
    head_timeout_secs: float = httplimits.DEFAULT_HEAD_TIMEOUT
    body_timeout_secs: float = 60.0
    max_connections: int = httplimits.DEFAULT_MAX_CONNECTIONS
    http_restrictions: Restrictions = field(default_factory=Restrictions)
    grpc_restrictions: Restrictions = field(default_factory=Restrictions)
    auth: TokenAuth | None = None
    http_tls: TlsFiles | None = None
    grpc_tls: TlsFiles | None = None
    response_cache_bytes: int = 0  # --cache-config local,size=BYTES
    grpc_frontend: str = "loop"  # --grpc-frontend: "loop" (modelserve.grpcloop) or "grpcio" (grpc.aio)


class _EmbeddedUvicorn(uvicorn.Server):
    """A uvicorn server that leaves signal handling to us."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def raise_descriptor_limit() -> int:
    """Raise the soft descriptor limit to the hard one (as Go's runtime does); the soft limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def connection_cap(requested: int) -> int:
    """The HTTP connection cap, lowered to leave descriptors for everything else."""
    soft = raise_descriptor_limit()
    allowed = max(16, (soft - DESCRIPTOR_RESERVE) // 2)  # HTTP and gRPC connections, each capped
    if soft != resource.RLIM_INFINITY and requested > allowed:
        log.warning("--http-max-connections=%d lowered to %d for a descriptor limit of %d", requested, allowed, soft)
        return allowed
    return requested


def _http_server(
    app: object, host: str, port: int, options: ServerOptions, cap: int, tls: TlsFiles | None = None
) -> _EmbeddedUvicorn:
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        loop="none",
        http=httplimits.bounded_protocol(options.max_head_bytes, options.max_headers, options.head_timeout_secs, cap),
        lifespan="off",
        access_log=False,
        log_level="warning",
        timeout_graceful_shutdown=max(1, math.ceil(options.exit_timeout_secs)),
        backlog=2048,
        **(tls.uvicorn_settings() if tls else {}),
    )
    return _EmbeddedUvicorn(config)


def reuse_port_socket(host: str, port: int) -> socket.socket:
    """A listening address several worker processes share (SO_REUSEPORT: the kernel spreads connections)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


async def _wait_started(server: _EmbeddedUvicorn, task: asyncio.Task[None], what: str) -> None:
    while not server.started:
        if task.done():
            task.result()
            raise OSError(f"{what} server stopped during start-up")
        await asyncio.sleep(0.01)


async def serve(options: ServerOptions, settings: RepositorySettings, faults: FaultInjector) -> int:
    repository = Repository(settings)
    repository.scan()  # fail fast on a missing repository
    cache = ResponseCache(options.response_cache_bytes) if options.response_cache_bytes > 0 else None
    dataplane = DataPlane(repository, faults, cache)
    workers = dataplane.workers = WorkerState.from_env()  # one of --workers N processes
    if faults.active:
        log.warning("fault injection is ON: failure ratio %s, latency %s ms", faults.failure_ratio, faults.latency_ms)

    stop, hurry = asyncio.Event(), asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal() -> None:
        (hurry if stop.is_set() else stop).set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)

    cap = connection_cap(options.max_connections)
    rest_app = RestApp(
        dataplane, options.max_body_bytes, options.http_restrictions, options.auth, options.body_timeout_secs
    )
    http = _http_server(rest_app, options.http_address, options.http_port, options, cap, options.http_tls)
    metrics = _http_server(MetricsApp(dataplane), options.http_address, options.metrics_port, options, 64)

    shared = workers is not None

    def new_grpc() -> grpc.aio.Server | GrpcLoopServer:
        if options.grpc_frontend == "loop":
            return GrpcLoopServer(
                dataplane,
                options.grpc_address,
                options.grpc_port,
                options.max_body_bytes,
                options.grpc_restrictions,
                auth=options.auth,
                tls=options.grpc_tls,
                max_connections=cap,
                sock=reuse_port_socket(options.grpc_address, options.grpc_port) if shared else None,
            )
        return grpc_api.create_server(
            dataplane,
            f"{options.grpc_address}:{options.grpc_port}",
            options.max_body_bytes,
            options.grpc_restrictions,
            auth=options.auth,
            tls=options.grpc_tls,
            max_connections=cap,
        )

    grpc_server = new_grpc()
    http_sockets = [reuse_port_socket(options.http_address, options.http_port)] if shared else None
    metrics_sockets = [reuse_port_socket(options.http_address, options.metrics_port)] if shared else None
    http_task = asyncio.create_task(http.serve(sockets=http_sockets))
    metrics_task = asyncio.create_task(metrics.serve(sockets=metrics_sockets))
    await grpc_server.start()
    await _wait_started(http, http_task, "HTTP")
    await _wait_started(metrics, metrics_task, "metrics")
    log.info("listening: HTTP %s, gRPC %s, metrics %s", options.http_port, options.grpc_port, options.metrics_port)

    await repository.load_startup_models()
    dataplane.lifecycle.started = True
    log.info("server is %s", "ready" if dataplane.ready_here() else "up but not ready (a model failed to load)")
    flusher = None
    if workers is not None:
        workers.set_ready(dataplane.ready_here())
        flusher = asyncio.create_task(workers.flush_forever(dataplane.own_stats_series))

    await stop.wait()
    if workers is not None:
        workers.set_ready(False)  # every worker reports not ready from now on
    listeners = Listeners(rest_app, http, http_task, metrics, metrics_task, grpc_server, new_grpc)
    await shut_down(dataplane, listeners, options.shutdown_delay_secs, options.exit_timeout_secs, hurry)
    if workers is not None and flusher is not None:
        flusher.cancel()
        workers.flush(dataplane.own_stats_series())
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
