"""gRPC over HTTP/2 as grpc/doc/PROTOCOL-HTTP2.md has it: what a call's headers, messages and trailers look like.

Length-prefixed messages (a compressed-flag byte and a 4-byte big-endian length), `grpc-encoding`
(identity, deflate and gzip: zlib, both directions; anything else is UNIMPLEMENTED and the
answer lists `grpc-accept-encoding`), `grpc-timeout`, the `grpc-status` / `grpc-message`
trailers (percent-encoded), trailers-only answers, and the call's metadata for the access
checks. Errors are `modelserve.errors` exceptions, so the one mapping to a status applies.
"""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Final
from urllib.parse import quote

from modelserve import h2frames
from modelserve.errors import InvalidArgument, PayloadTooLarge, Unimplemented, clip
from modelserve.h2stream import H2Stream

ENCODINGS: Final = ("identity", "deflate", "gzip")
ACCEPT_ENCODING: Final = b"identity,deflate,gzip"
WBITS: Final = {"deflate": 15, "gzip": 31}  # zlib and gzip containers around deflate
INFLATE_STEP: Final = 1 << 20
TIMEOUT_UNITS: Final = {b"H": 3600.0, b"M": 60.0, b"S": 1.0, b"m": 1e-3, b"u": 1e-6, b"n": 1e-9}
CONTENT_TYPE: Final = h2frames.hpack_literal(b"content-type", b"application/grpc")
HEAD_OK: Final = h2frames.HPACK_STATUS_200 + CONTENT_TYPE
TRAILERS_OK: Final = h2frames.hpack_literal(b"grpc-status", b"0")
STATUS_OK: Final = 0


def parse_timeout(value: bytes) -> float:
    """`grpc-timeout` in seconds: at most 8 digits and a unit (H, M, S, m, u, n)."""
    digits, unit = value[:-1], value[-1:]
    if not 1 <= len(digits) <= 8 or not digits.isdigit() or unit not in TIMEOUT_UNITS:
        raise InvalidArgument(f"malformed grpc-timeout {clip(value)}; expected up to 8 digits and one of HMSmun")
    return int(digits) * TIMEOUT_UNITS[unit]


# grpc-message's percent-encoding: UTF-8, every byte outside printable ASCII and '%' itself as %XX
MESSAGE_SAFE: Final = "".join(chr(c) for c in range(0x20, 0x7F) if c != 0x25)


def percent_encode(text: str) -> bytes:
    return quote(text, safe=MESSAGE_SAFE).encode("ascii")


def status_fields(code: int, message: str) -> bytes:
    block = h2frames.hpack_literal(b"grpc-status", str(code).encode())
    if message:
        block += h2frames.hpack_literal(b"grpc-message", percent_encode(message))
    return block


def response_head(encoding: str = "identity") -> bytes:
    if encoding == "identity":
        return HEAD_OK
    return HEAD_OK + h2frames.hpack_literal(b"grpc-encoding", encoding.encode())


def trailers(code: int, message: str = "") -> bytes:
    return TRAILERS_OK if code == STATUS_OK and not message else status_fields(code, message)


def trailers_only(code: int, message: str, http_status: int = 200, accept_encoding: bool = False) -> bytes:
    """An answer with no messages: one HEADERS frame with END_STREAM, status included."""
    if http_status == 200:
        head = HEAD_OK
    else:
        head = h2frames.hpack_literal(b":status", str(http_status).encode()) + CONTENT_TYPE
    if accept_encoding:
        head += h2frames.hpack_literal(b"grpc-accept-encoding", ACCEPT_ENCODING)
    return head + status_fields(code, message)


def inflate(encoding: str, data: bytes, limit: int) -> bytes:
    """A compressed message, inflated only once it is known to fit `limit` (a zip bomb costs no memory)."""
    wbits = WBITS[encoding]
    try:
        probe = zlib.decompressobj(wbits)
        total, chunk = 0, data
        while chunk:
            total += len(probe.decompress(chunk, INFLATE_STEP))
            if total > limit:
                raise PayloadTooLarge(f"the {encoding} message inflates to more than the limit of {limit} bytes")
            chunk = probe.unconsumed_tail
        if not probe.eof:
            raise InvalidArgument(f"the {encoding} message is truncated")
        return zlib.decompress(data, wbits)
    except zlib.error as exc:
        raise InvalidArgument(f"cannot inflate the {encoding} message: {clip(str(exc))}") from None


def deflate(encoding: str, data: bytes) -> bytes:
    compressor = zlib.compressobj(1, zlib.DEFLATED, WBITS[encoding])
    return compressor.compress(data) + compressor.flush()


def message(payload: bytes, encoding: str = "identity") -> bytes:
    """One length-prefixed message, compressed when the call's response encoding says so."""
    if encoding == "identity":
        return b"\x00" + len(payload).to_bytes(4, "big") + payload
    packed = deflate(encoding, payload)
    return b"\x01" + len(packed).to_bytes(4, "big") + packed


@dataclass(frozen=True)
class CallHeaders:
    """What a call's request headers ask for: the encoding of its messages and of the answer, its deadline."""

    encoding: str = "identity"
    respond_encoding: str = "identity"
    timeout: float | None = None

    @classmethod
    def parse(cls, stream: H2Stream) -> CallHeaders:
        encoding, accept, timeout = "identity", b"", None
        for name, value in stream.headers:
            if name == b"grpc-encoding":
                encoding = value.decode("latin-1").strip().lower()
            elif name == b"grpc-accept-encoding":
                accept = value
            elif name == b"grpc-timeout":
                timeout = parse_timeout(value)
        encoding = encoding or "identity"
        if encoding not in ENCODINGS:
            raise Unimplemented(f"grpc-encoding {clip(encoding)} is not supported; use one of {', '.join(ENCODINGS)}")
        if encoding == "identity":
            return cls(encoding, encoding, timeout) if timeout is not None else IDENTITY_CALL
        accepted = {item.strip().lower() for item in accept.decode("latin-1").split(",")}
        return cls(encoding, encoding if encoding in accepted else "identity", timeout)


IDENTITY_CALL: Final = CallHeaders()


class CallContext:
    """The servicer's view of a call's metadata, as grpc.aio.ServicerContext gives it (check_restricted)."""

    __slots__ = ("headers",)

    def __init__(self, headers: list[tuple[bytes, bytes]]) -> None:
        self.headers = headers

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return tuple((k.decode("latin-1"), v.decode("latin-1")) for k, v in self.headers)


async def read_message(stream: H2Stream, limit: int, encoding: str) -> bytes | None:
    """The next message of the request, inflated; None once the request has ended between messages."""
    buffer = stream.buffer
    while len(buffer) < 5:
        if stream.remote_closed:
            if buffer:
                raise InvalidArgument("the request ended inside a message's 5-byte prefix")
            return None
        await stream.wait_data()
    flag = buffer[0]
    length = int.from_bytes(buffer[1:5], "big")
    if flag > 1:
        raise InvalidArgument(f"message compressed-flag {flag}; expected 0 or 1")
    if length > limit:
        raise PayloadTooLarge(f"received message of {length} bytes, larger than the limit of {limit} bytes")
    end = 5 + length
    while len(buffer) < end:
        if stream.remote_closed:
            raise InvalidArgument(f"the request ended {end - len(buffer)} bytes into a message of {length} bytes")
        await stream.wait_data()
    with memoryview(buffer) as view:
        payload = bytes(view[5:end])
    stream.consume(end)
    if flag:
        if encoding == "identity":
            raise InvalidArgument("a compressed message without grpc-encoding")
        payload = inflate(encoding, payload, limit)
    return payload


async def read_messages(stream: H2Stream, limit: int, encoding: str) -> AsyncIterator[bytes]:
    while (payload := await read_message(stream, limit, encoding)) is not None:
        yield payload


async def read_unary(stream: H2Stream, limit: int, encoding: str) -> bytes:
    """A unary call's one message, once the request has ended."""
    payload = await read_message(stream, limit, encoding)
    if payload is None:
        raise InvalidArgument("the call carries no request message")
    while not stream.remote_closed and not stream.buffer:
        await stream.wait_data()
    if stream.buffer:
        raise InvalidArgument("a unary call carries more than one request message")
    return payload
