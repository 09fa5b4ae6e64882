"""HTTP request bodies: read within the body limit, inflated incrementally within the same limit.

`--http-max-body-bytes` bounds both the bytes on the wire and, for `Content-Encoding: gzip`
or `deflate`, the inflated bytes: inflation stops one byte past the limit (413), so a
decompression bomb costs at most the limit in memory and never more CPU than that.
`--http-body-timeout-secs` bounds how long the whole body may take to arrive (408): a
client dripping its body byte by byte holds a connection for that long at most.
"""

from __future__ import annotations

import asyncio
import math
import zlib
from collections.abc import Awaitable, Callable
from typing import Any

from modelserve.errors import InvalidArgument, PayloadTooLarge, RequestTimeout, UnsupportedMediaType, clip

Receive = Callable[[], Awaitable[dict[str, Any]]]

MAX_LENGTH_DIGITS = 18  # any decimal length with more digits exceeds every limit (and int() of it is costly)
GZIP_WBITS = 16 + zlib.MAX_WBITS
IDENTITY = (b"", b"identity")


def parse_length(raw: bytes, what: str) -> int:
    """A decimal length header; a client error (never an int() of thousands of digits) when malformed."""
    value = raw.strip()
    if not value.isdigit():
        raise InvalidArgument(f"{what} {clip(raw)!r} is not a non-negative integer")
    if len(value) > MAX_LENGTH_DIGITS:
        raise PayloadTooLarge(f"{what} of {len(value)} digits is larger than any accepted length")
    return int(value)


class Inflater:
    """Incremental gzip / deflate decoding whose output may not exceed `limit` bytes."""

    def __init__(self, encoding: bytes, limit: int) -> None:
        self.encoding = encoding
        self.limit = limit
        self.size = 0
        self.chunks: list[bytes] = []
        self._fresh = True
        self._pending = b""  # deflate: bytes held until the zlib-or-raw choice is made
        self._decoder = self._new_decoder()

    def _new_decoder(self, wbits: int | None = None) -> Any:
        if wbits is None:
            wbits = GZIP_WBITS if self.encoding == b"gzip" else zlib.MAX_WBITS
        return zlib.decompressobj(wbits)

    def feed(self, data: bytes) -> None:
        if not data:
            return
        if self._fresh and self.encoding == b"deflate":
            # RFC 9110 deflate is zlib-wrapped; some clients send raw deflate: tell them apart by the header
            self._pending += data
            if len(self._pending) < 2:
                return
            data, self._pending = self._pending, b""
            if (data[0] & 0x0F) != 8 or ((data[0] << 8) | data[1]) % 31 != 0:
                self._decoder = self._new_decoder(-zlib.MAX_WBITS)
        self._fresh = False
        while data:
            try:
                out = self._decoder.decompress(data, self.limit - self.size + 1)
            except zlib.error as exc:
                raise InvalidArgument(f"corrupt {self.encoding.decode()} body: {exc}") from None
            self._take(out)
            if self._decoder.eof and self.encoding == b"gzip" and self._decoder.unused_data:
                data = self._decoder.unused_data  # another gzip member follows
                self._decoder = self._new_decoder()
            elif self._decoder.eof and self._decoder.unused_data:
                raise InvalidArgument(f"{len(self._decoder.unused_data)} bytes follow the end of the deflate body")
            else:
                data = b""

    def _take(self, out: bytes) -> None:
        self.size += len(out)
        if self.size > self.limit:
            raise PayloadTooLarge(f"{self.encoding.decode()} body inflates past the {self.limit} byte limit")
        if out:
            self.chunks.append(out)

    def finish(self) -> bytes:
        if self._pending:
            self._fresh = False
            pending, self._pending = self._pending, b""
            self.feed(pending)
        if not self._fresh and not self._decoder.eof:
            raise InvalidArgument(f"truncated {self.encoding.decode()} body")
        return b"".join(self.chunks)


async def read_body(headers: dict[bytes, bytes], receive: Receive, limit: int, timeout: float = math.inf) -> bytes:
    """The whole body, inflated if compressed; 413 past `limit`, 415 for an unknown encoding, 408 after `timeout`.

    The timeout is one timer that cancels this task (asyncio.timeout's bookkeeping costs more
    than reading a body that is already there), and none at all when uvicorn has the whole
    body already (most bodies arrive with their head).
    """
    if math.isinf(timeout) or _already_received(receive):
        return await _read_body(headers, receive, limit)
    task = asyncio.current_task()
    assert task is not None
    expired = False

    def expire() -> None:
        nonlocal expired
        expired = True
        task.cancel()

    timer = asyncio.get_running_loop().call_later(timeout, expire)
    try:
        return await _read_body(headers, receive, limit)
    except asyncio.CancelledError:
        if expired and task.uncancel() == 0:  # our cancellation, and nobody else's
            raise RequestTimeout(f"request body not received within {timeout:g} s") from None
        raise
    finally:
        timer.cancel()


def _already_received(receive: Receive) -> bool:
    """Whether the whole body is already buffered (uvicorn's request cycle says so): no wait, no timer needed."""
    return getattr(getattr(receive, "__self__", None), "more_body", True) is False


async def _read_body(headers: dict[bytes, bytes], receive: Receive, limit: int) -> bytes:
    declared = headers.get(b"content-length")
    if declared is not None:
        length = parse_length(declared, "Content-Length")
        if length > limit:
            raise PayloadTooLarge(f"request body of {length} bytes exceeds the {limit} byte limit")
    encoding = headers.get(b"content-encoding", b"").strip().lower()
    inflater: Inflater | None = None
    if encoding in (b"gzip", b"deflate"):
        inflater = Inflater(encoding, limit)
    elif encoding not in IDENTITY:
        raise UnsupportedMediaType(f"Content-Encoding {clip(encoding)!r} is not supported; use gzip or deflate")
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise InvalidArgument("client disconnected")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"request body exceeds the {limit} byte limit")
        if inflater is not None:
            inflater.feed(chunk)
        else:
            chunks.append(chunk)
        if not message.get("more_body"):
            break
    return inflater.finish() if inflater is not None else b"".join(chunks)
