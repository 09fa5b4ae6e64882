"""Lossless shutdown as Kubernetes needs it: not ready at once, serve through endpoint propagation, drain, exit.

Kubernetes sends SIGTERM and removes the pod from the Service's endpoints at the same
time; kube-proxy, ingress controllers and clients' connection pools learn of it a few
seconds later, and established keep-alive connections keep reaching the pod after that.
So on SIGTERM:

1. readiness turns false at once (`/v2/health/ready` 503, gRPC `ServerReady` false);
2. for `--shutdown-delay-secs` everything is still served: every HTTP answer carries
   `Connection: close` (the client's next request opens a new connection, which the updated
   endpoints send elsewhere) and every gRPC connection gets a GOAWAY: with the on-loop front
   end (modelserve.grpcloop) each connection gets it directly, in two steps as gRPC servers
   send it (GOAWAY and PING, then GOAWAY naming the last stream taken), its calls finish and
   clients reconnect, to another pod or, until endpoints have propagated, to this one; with
   `--grpc-frontend=grpcio` the port is handed to a fresh grpc.aio server sharing it through
   SO_REUSEPORT while the old one stops with a grace period (grpc-core may cancel a call per
   connection at that hand-over: grpc/grpc#41785);
3. then the listeners stop accepting, idle connections are closed and in-flight requests
   finish, for at most `--exit-timeout-secs`;
4. the process exits 0.

A second SIGTERM or SIGINT cuts the delay short. The operator renders the delay and the exit
timeout so that their sum stays inside the pod's `terminationGracePeriodSeconds`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import grpc
import uvicorn

from modelserve.dataplane import DataPlane
from modelserve.grpcloop import GrpcLoopServer
from modelserve.rest import RestApp

log = logging.getLogger("modelserve")


@dataclass
class Listeners:
    rest: RestApp
    http: uvicorn.Server
    http_task: asyncio.Task[None]
    metrics: uvicorn.Server
    metrics_task: asyncio.Task[None]
    grpc: grpc.aio.Server | GrpcLoopServer
    new_grpc: Callable[[], grpc.aio.Server | GrpcLoopServer]


async def _goaway(listeners: Listeners, grace: float) -> asyncio.Task[None] | None:
    """GOAWAY to every gRPC connection; grpc.aio: hand the port to a fresh server, the old one finishes its calls."""
    if isinstance(listeners.grpc, GrpcLoopServer):
        listeners.grpc.goaway()
        return None
    try:
        successor = listeners.new_grpc()
        await successor.start()
    except Exception as exc:  # no SO_REUSEPORT: keep the old server, without GOAWAY
        log.warning("cannot start a second gRPC server for GOAWAY (%s); gRPC connections stay open", exc)
        return None
    retired, listeners.grpc = listeners.grpc, successor
    return asyncio.create_task(retired.stop(grace=grace))


async def shut_down(
    dataplane: DataPlane, listeners: Listeners, delay: float, exit_timeout: float, hurry: asyncio.Event
) -> bool:
    """Run the sequence above; True when every in-flight request finished within the exit timeout."""
    dataplane.lifecycle.terminating = True
    listeners.rest.closing = True
    retired: list[asyncio.Task[None]] = []
    if delay > 0:
        log.info("shutting down: not ready; serving for %gs while endpoints propagate", delay)
        task = await _goaway(listeners, grace=delay + exit_timeout)
        if task is not None:
            retired.append(task)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(hurry.wait(), delay)
    log.info("draining in-flight requests for up to %gs", exit_timeout)
    started = time.monotonic()
    listeners.http.should_exit = True  # stop accepting, close idle connections, wait for the busy ones
    await asyncio.gather(listeners.grpc.stop(grace=exit_timeout), *retired, listeners.http_task, return_exceptions=True)
    remaining = max(0.0, exit_timeout - (time.monotonic() - started))
    drained = await dataplane.lifecycle.drain(remaining)
    if not drained:
        log.warning("exit timeout reached with %d request(s) still in flight", dataplane.lifecycle.inflight)
    listeners.metrics.should_exit = True
    await asyncio.gather(listeners.metrics_task, return_exceptions=True)
    return drained
