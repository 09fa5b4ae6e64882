"""modelserve's gRPC front end on the event loop: `inference.GRPCInferenceService` without grpc.aio's threads.

HTTP/2 is `h2connection`, gRPC's framing `grpcwire`; this module routes each call's path to
`InferenceServicer` (modelserve.grpc: the same handlers, access checks and error mapping as
the grpc.aio front end) and runs the server: listening (plain, TLS or mutual TLS with ALPN
`h2`, or a socket shared by `--workers` through SO_REUSEPORT), the connection cap, and the
drain: GOAWAY to every connection, in-flight calls answered, then close.

Selected with `--grpc-frontend=loop` (the default); `--grpc-frontend=grpcio` keeps grpc.aio.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

from modelserve import grpcwire as wire
from modelserve import h2frames
from modelserve.auth import TokenAuth
from modelserve.dataplane import DataPlane
from modelserve.errors import (
    DeadlineExceeded,
    ServeError,
    Unimplemented,
    UnsupportedMediaType,
    clip,
    to_serve_error,
)
from modelserve.grpc import SERVICE, InferenceServicer, stream_refusal, unary_handlers
from modelserve.h2connection import H2Connection
from modelserve.h2stream import H2Stream, StreamLimits, StreamReset
from modelserve.restrictions import Restrictions
from modelserve.tls import TlsFiles

log = logging.getLogger(__name__)

UnaryHandler = Callable[[bytes, Any], Awaitable[Any]]


def status_code(error: ServeError) -> int:
    """The numeric gRPC status of the one error mapping (errors.ServeError.grpc_code)."""
    return int(error.grpc_code.value[0])


class GrpcLoopServer:
    """A gRPC server whose HTTP/2 runs on the asyncio loop; start(), goaway(), stop(grace) as grpc.aio's."""

    def __init__(
        self,
        dataplane: DataPlane,
        host: str,
        port: int,
        max_message_bytes: int,
        restrictions: Restrictions | None = None,
        *,
        auth: TokenAuth | None = None,
        tls: TlsFiles | None = None,
        max_connections: int = 0,
        sock: socket.socket | None = None,
        limits: StreamLimits | None = None,
    ) -> None:
        self.restrictions = restrictions or Restrictions()
        self.auth = auth
        self.servicer = InferenceServicer(dataplane, self.restrictions, auth)
        prefix = f"/{SERVICE}/".encode()
        self.unary: dict[bytes, UnaryHandler] = {
            prefix + name.encode(): handler
            for name, handler in unary_handlers(self.servicer, self.restrictions, auth).items()
        }
        self.stream_path = prefix + b"ModelStreamInfer"
        self.host, self.port = host, port
        self.max_message_bytes = max_message_bytes
        self.tls = tls
        self.max_connections = max_connections
        self.sock = sock
        self.limits = limits or StreamLimits(buffer_cap=max_message_bytes + 5)
        self.connections: dict[H2Connection, None] = {}  # oldest first
        self.server: asyncio.AbstractServer | None = None
        self.all_closed = asyncio.Event()
        self.all_closed.set()

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        context = self.tls.grpc_ssl_context() if self.tls else None
        if self.sock is not None:
            self.server = await loop.create_server(self._protocol, sock=self.sock, ssl=context, backlog=2048)
        else:
            self.server = await loop.create_server(
                self._protocol, self.host, self.port, ssl=context, backlog=2048, reuse_address=True
            )
        self.port = self.server.sockets[0].getsockname()[1]

    def _protocol(self) -> H2Connection:
        return H2Connection(self, self.limits)

    # --- connections (h2connection.StreamApp) ---

    def connection_made(self, connection: H2Connection) -> None:
        if self.max_connections > 0 and len(self.connections) >= self.max_connections:
            idle = next((c for c in self.connections if c.idle), None)
            if idle is None:
                connection.write(h2frames.goaway_frame(0, h2frames.ENHANCE_YOUR_CALM, b"too many connections"))
                connection.close()
                return
            idle.write(h2frames.goaway_frame(idle.highest_id, h2frames.NO_ERROR, b"connection limit"))
            idle.close()
            self.connections.pop(idle, None)
        self.connections[connection] = None
        self.all_closed.clear()

    def connection_lost(self, connection: H2Connection) -> None:
        self.connections.pop(connection, None)
        if not self.connections:
            self.all_closed.set()

    def open_stream(self, connection: H2Connection, stream: H2Stream) -> None:
        stream.task = connection.loop.create_task(self._call(connection, stream))

    # --- calls ---

    async def _call(self, connection: H2Connection, stream: H2Stream) -> None:
        """One call from its request headers to its trailers; whatever happens, the connection goes on."""
        try:
            head = self._refusal(stream)
            if head is not None:
                connection.send_headers(stream, head, end_stream=True)
                return
            call = wire.CallHeaders.parse(stream)
            if call.timeout is None:
                await self._route(connection, stream, call)
            else:
                try:
                    async with asyncio.timeout(call.timeout):
                        await self._route(connection, stream, call)
                except TimeoutError:
                    raise DeadlineExceeded(f"deadline of {call.timeout:g}s exceeded") from None
        except StreamReset:
            return
        except Exception as exc:  # ServeError, or a bug that costs this call only (to_serve_error logs it)
            error = to_serve_error(exc)
            self._fail(connection, stream, error)

    @staticmethod
    def _fail(connection: H2Connection, stream: H2Stream, error: ServeError) -> None:
        """The error as trailers after a response head already sent, else as a trailers-only answer."""
        code = status_code(error)
        if stream.head_sent:
            connection.send_trailers(stream, wire.trailers(code, error.message))
        else:
            unsupported = isinstance(error, Unimplemented) and "grpc-encoding" in error.message
            connection.send_headers(
                stream, wire.trailers_only(code, error.message, accept_encoding=unsupported), end_stream=True
            )

    def _refusal(self, stream: H2Stream) -> bytes | None:
        """A trailers-only answer for what is not a gRPC call here: wrong method, content type or path."""
        http_status, error = 200, None
        if stream.method != b"POST":
            http_status, error = 405, Unimplemented(f"HTTP method {clip(stream.method)}: gRPC calls are POST")
        elif not (stream.header(b"content-type") or b"").startswith(b"application/grpc"):
            http_status, error = 415, UnsupportedMediaType("content-type is not application/grpc")
        elif stream.path not in self.unary and stream.path != self.stream_path:
            error = Unimplemented(f"unknown method {clip(stream.path)}")
        if error is None:
            return None
        return wire.trailers_only(status_code(error), error.message, http_status=http_status)

    async def _route(self, connection: H2Connection, stream: H2Stream, call: wire.CallHeaders) -> None:
        handler = self.unary.get(stream.path)
        if handler is None:
            await self._stream(connection, stream, call)
            return
        raw = await wire.read_unary(stream, self.max_message_bytes, call.encoding)
        answer = await handler(raw, wire.CallContext(stream.headers))
        del raw
        if isinstance(answer, ServeError):
            self._fail(connection, stream, answer)
            return
        body = wire.message(answer.SerializeToString(), call.respond_encoding)
        connection.respond(stream, wire.response_head(call.respond_encoding), body, wire.TRAILERS_OK)

    async def _stream(self, connection: H2Connection, stream: H2Stream, call: wire.CallHeaders) -> None:
        """ModelStreamInfer: the servicer's replies as they come, each waiting for the peer's window."""
        context = wire.CallContext(stream.headers)
        refused = stream_refusal(self.restrictions, self.auth, context)
        if refused is not None:
            raise refused
        connection.send_headers(stream, wire.response_head(call.respond_encoding))
        incoming = wire.read_messages(stream, self.max_message_bytes, call.encoding)
        async for reply in self.servicer.ModelStreamInfer(incoming, context):
            connection.send_data(stream, wire.message(reply, call.respond_encoding))
            await stream.drained()
        connection.send_trailers(stream, wire.TRAILERS_OK)

    # --- shutdown ---

    def goaway(self) -> None:
        """GOAWAY to every open connection (their calls finish; clients reconnect); new ones are still served."""
        for connection in list(self.connections):
            connection.start_goaway()

    async def stop(self, grace: float | None = None) -> None:
        """Stop listening, GOAWAY every connection, let in-flight calls finish for `grace` s, then close the rest."""
        if self.server is not None:
            self.server.close()
        self.goaway()
        started = time.monotonic()
        if grace:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.all_closed.wait(), grace)
        for connection in list(self.connections):
            connection.abort()
        if self.connections:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.all_closed.wait(), 1.0)
        log.debug("gRPC front end stopped after %.2fs", time.monotonic() - started)
