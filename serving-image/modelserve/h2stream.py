"""One HTTP/2 stream of a server connection (modelserve.h2connection): its request body as it
arrives, its response bytes waiting for the peer's window, and the limits a connection keeps."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING

from modelserve import h2frames as f

if TYPE_CHECKING:
    from modelserve.h2connection import H2Connection


@dataclass(frozen=True)
class StreamLimits:
    max_concurrent_streams: int = 256
    initial_window: int = 4 << 20
    max_frame_size: int = f.DEFAULT_MAX_FRAME_SIZE
    max_header_list_size: int = 64 << 10
    buffer_cap: int = 64 << 20  # unread request bytes one stream may hold before its window stops opening


class StreamReset(Exception):
    """The peer reset the stream, or the connection went away, while the body was being read."""


class H2Stream:
    __slots__ = (
        "buffer", "connection", "head_sent", "headers", "id", "local_closed", "method", "outbox", "path",
        "remote_closed", "reset", "send_window", "task", "trailers", "unacked", "waiter", "withheld", "writable",
    )  # fmt: skip

    def __init__(self, connection: H2Connection, stream_id: int, send_window: int) -> None:
        self.connection = connection
        self.id = stream_id
        self.method = b""
        self.path = b""
        self.headers: list[tuple[bytes, bytes]] = []  # regular fields, names lower case
        self.buffer = bytearray()  # request body bytes not read yet
        self.remote_closed = False
        self.local_closed = False
        self.head_sent = False  # response headers (not trailers) have gone out
        self.reset = False
        self.send_window = send_window
        self.outbox = bytearray()  # response DATA waiting for window
        self.trailers: bytes | None = None  # a trailer block waiting behind the outbox
        self.unacked = 0  # received bytes not yet given back with WINDOW_UPDATE
        self.withheld = 0  # received bytes held back while the stream holds buffer_cap unread
        self.waiter: asyncio.Future[None] | None = None
        self.writable: asyncio.Future[None] | None = None
        self.task: asyncio.Task[None] | None = None

    def header(self, name: bytes) -> bytes | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None

    async def wait_data(self) -> None:
        """Until more body bytes, the end of the body, or a reset arrive."""
        self._raise_if_reset()
        if self.remote_closed:
            return
        self.waiter = self.connection.loop.create_future()
        try:
            await self.waiter
        finally:
            self.waiter = None
        self._raise_if_reset()

    def consume(self, count: int) -> None:
        """Drop `count` read bytes from the buffer; window held back for them is given back."""
        del self.buffer[:count]
        if self.withheld and len(self.buffer) <= self.connection.limits.buffer_cap and not self.remote_closed:
            self.connection.write(f.window_update_frame(self.id, self.withheld))
            self.withheld = 0

    async def drained(self) -> None:
        """Until every queued response byte has left (flow control and the transport's buffer)."""
        while not self.reset and (self.outbox or self.connection.paused):
            self.writable = self.connection.loop.create_future()
            try:
                await self.writable
            finally:
                self.writable = None
        self._raise_if_reset()

    def _raise_if_reset(self) -> None:
        if self.reset:
            raise StreamReset(f"stream {self.id} was reset")

    def wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    def wake_writer(self) -> None:
        if self.writable is not None and not self.writable.done():
            self.writable.set_result(None)
