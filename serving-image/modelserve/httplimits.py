"""Bounds on the HTTP request head: its size, its number of fields, and how long it may take to arrive.

uvicorn's httptools protocol accepts heads of any size (a 32 MiB header costs seconds of
CPU) and waits for ever on a client that trickles its head in. This subclass refuses a head
over `max_head_bytes` with 431, more than `max_headers` fields with 431, and closes a
connection whose head is not complete `head_timeout` seconds after it began (408).

It also caps the open connections of one listener (`max_connections`), so that slow or
idle sockets can never use up the process' descriptors: a new connection over the cap
first evicts the oldest connection that is not in the middle of a request (waiting for
or receiving a head, or idle between keep-alive requests); when every connection is busy
the new one gets 503 and is closed.

And it sends each response in one write: uvicorn writes a response's head and its body
separately, two `send` calls and two TCP segments for every answer (on loopback each costs
as much as a cache hit's whole lookup). Each request's transport holds the head back until
the first body write (or the end of the response, for a body-less answer such as HEAD's).
A body that arrives in one piece reaches the application as the very bytes the parser gave
(uvicorn copies every body twice: into a bytearray, and out of it).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from uvicorn.protocols.http.flow_control import HIGH_WATER_LIMIT
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

DEFAULT_MAX_HEAD_BYTES = 64 * 1024
DEFAULT_MAX_HEADERS = 100
DEFAULT_HEAD_TIMEOUT = 10.0
DEFAULT_MAX_CONNECTIONS = 1000

REASONS = {408: b"Request Timeout", 431: b"Request Header Fields Too Large", 503: b"Service Unavailable"}


class ConnectionTracker:
    """The open connections of one listener, oldest first."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.open: dict[BoundedHttpToolsProtocol, None] = {}
        self.evicted = 0
        self.refused = 0

    def admit(self, connection: BoundedHttpToolsProtocol) -> bool:
        """Make room for `connection`; False when every open connection is busy with a request."""
        if len(self.open) >= self.cap:
            victim = next((c for c in self.open if c.idle), None)
            if victim is None:
                self.refused += 1
                return False
            self.evicted += 1
            self.open.pop(victim, None)
            victim.transport.close()
        self.open[connection] = None
        return True

    def forget(self, connection: BoundedHttpToolsProtocol) -> None:
        self.open.pop(connection, None)


def _nothing() -> None:
    pass


class HeadHoldingTransport:
    """One request's view of the connection: its response head waits for the first body write.

    Everything but `write` and `close` goes to the connection's transport. A write before the
    response has started (`100 Continue`) goes out at once; `flush` sends a held head on its own.
    """

    __slots__ = ("_cycle", "_head", "_held", "_transport", "on_response")

    def __init__(self, transport: asyncio.Transport, cycle: RequestResponseCycle) -> None:
        self._transport = transport
        self._cycle = cycle
        self._head: bytes | None = None
        self._held = False  # the head has been taken (it is held, or went out with the body)
        self.on_response: Callable[[], None] = _nothing  # the cycle's own end-of-response callback

    def response_done(self) -> None:
        """The cycle's end-of-response callback: a head still held (no body) goes out first."""
        self.flush()
        self.on_response()

    def write(self, data: bytes) -> None:
        if not self._held and self._cycle.response_started and not self._cycle.response_complete:
            self._held = True
            self._head = data
            return
        head, self._head = self._head, None
        self._transport.write(data if head is None else head + data)

    def flush(self) -> None:
        head, self._head = self._head, None
        if head is not None:
            self._transport.write(head)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


def hold_response_head(cycle: RequestResponseCycle) -> None:
    """Make `cycle` send its response in one write (see HeadHoldingTransport)."""
    transport = HeadHoldingTransport(cycle.transport, cycle)
    cycle.transport = transport  # type: ignore[assignment]
    transport.on_response = cycle.on_response
    cycle.on_response = transport.response_done


class _HeadRefused(Exception):
    """Stops the parser once the head has been refused."""


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    max_head_bytes = DEFAULT_MAX_HEAD_BYTES
    max_headers = DEFAULT_MAX_HEADERS
    head_timeout = DEFAULT_HEAD_TIMEOUT
    tracker = ConnectionTracker(DEFAULT_MAX_CONNECTIONS)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = True
        self._head_bytes = 0
        self._header_count = 0
        self._refused = False
        self._head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if not self.tracker.admit(self):
            self._refuse(503, f"too many open connections ({self.tracker.cap}); retry later")
            return
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self.tracker.forget(self)
        self._cancel_head_timer()
        super().connection_lost(exc)

    @property
    def idle(self) -> bool:
        """Not in the middle of a request: waiting for a head, reading one, or between requests."""
        return self.cycle is None or self.cycle.response_complete

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        if self._in_head:
            self._head_bytes += len(data)
        super().data_received(data)
        if self._in_head and not self._refused:
            if self._head_bytes > self.max_head_bytes:
                self._refuse(431, f"request head exceeds {self.max_head_bytes} bytes")
            else:  # a head still incomplete: its clock runs from now (most heads come whole: no timer)
                self._arm_head_timer()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True
        self._head_bytes = 0
        self._header_count = 0

    def on_body(self, body: bytes) -> None:
        cycle = self.cycle
        if (self.parser.should_upgrade() and self._should_upgrade()) or cycle.response_complete:
            return
        if not cycle.body:
            cycle.body = body  # type: ignore[assignment]  # receive() hands on bytes(body): the same object
        else:
            if isinstance(cycle.body, bytes):
                cycle.body = bytearray(cycle.body)
            cycle.body += body
        if len(cycle.body) > HIGH_WATER_LIMIT:
            self.flow.pause_reading()
        cycle.message_event.set()

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        if self._header_count > self.max_headers:
            self._refuse(431, f"more than {self.max_headers} header fields")
            raise _HeadRefused
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._cancel_head_timer()
        super().on_headers_complete()
        if self.cycle is not None and not isinstance(self.cycle.transport, HeadHoldingTransport):
            hold_response_head(self.cycle)  # before its ASGI task first runs (it is only scheduled)

    def send_400_response(self, msg: str) -> None:
        if not self._refused:  # a refused head already has its answer
            super().send_400_response(msg)

    def _arm_head_timer(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self.head_timeout, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self._in_head and not self.transport.is_closing():
            self._refuse(408, f"request head not received within {self.head_timeout:g} s")

    def _refuse(self, status: int, message: str) -> None:
        self._refused = True
        self._cancel_head_timer()
        body = f'{{"error":"{message}"}}'.encode()
        self.transport.write(
            b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n%s"
            % (status, REASONS[status], len(body), body)
        )
        self.transport.close()


def bounded_protocol(
    max_head_bytes: int,
    max_headers: int,
    head_timeout: float,
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
) -> type[BoundedHttpToolsProtocol]:
    """The protocol class for uvicorn's `http=` setting, with these bounds (one per listener)."""
    return type(
        "ConfiguredHttpToolsProtocol",
        (BoundedHttpToolsProtocol,),
        {
            "max_head_bytes": max_head_bytes,
            "max_headers": max_headers,
            "head_timeout": head_timeout,
            "tracker": ConnectionTracker(max_connections),
        },
    )
