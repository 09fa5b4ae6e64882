"""HTTP/2 frames (RFC 9113 section 4 and 6): constants, encoders, payload parsers and the protocol errors.

Nothing here keeps connection state: `h2connection` owns streams, windows and settings. Every
parser checks what RFC 9113 asks of that frame type and raises `H2ConnectionError` (answered
with GOAWAY and a close) or `H2StreamError` (answered with RST_STREAM on that stream).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

PREFACE: Final = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
FRAME_HEADER_LENGTH: Final = 9
MAX_WINDOW: Final = (1 << 31) - 1
DEFAULT_WINDOW: Final = 65_535
DEFAULT_MAX_FRAME_SIZE: Final = 16_384
LARGEST_MAX_FRAME_SIZE: Final = (1 << 24) - 1
DEFAULT_HEADER_TABLE_SIZE: Final = 4_096

# frame types (section 6)
DATA: Final = 0x0
HEADERS: Final = 0x1
PRIORITY: Final = 0x2
RST_STREAM: Final = 0x3
SETTINGS: Final = 0x4
PUSH_PROMISE: Final = 0x5
PING: Final = 0x6
GOAWAY: Final = 0x7
WINDOW_UPDATE: Final = 0x8
CONTINUATION: Final = 0x9

# flags
END_STREAM: Final = 0x1
ACK: Final = 0x1
END_HEADERS: Final = 0x4
PADDED: Final = 0x8
PRIORITY_FLAG: Final = 0x20

# settings (section 6.5.2)
SETTINGS_HEADER_TABLE_SIZE: Final = 0x1
SETTINGS_ENABLE_PUSH: Final = 0x2
SETTINGS_MAX_CONCURRENT_STREAMS: Final = 0x3
SETTINGS_INITIAL_WINDOW_SIZE: Final = 0x4
SETTINGS_MAX_FRAME_SIZE: Final = 0x5
SETTINGS_MAX_HEADER_LIST_SIZE: Final = 0x6

# error codes (section 7)
NO_ERROR: Final = 0x0
PROTOCOL_ERROR: Final = 0x1
INTERNAL_ERROR: Final = 0x2
FLOW_CONTROL_ERROR: Final = 0x3
SETTINGS_TIMEOUT: Final = 0x4
STREAM_CLOSED: Final = 0x5
FRAME_SIZE_ERROR: Final = 0x6
REFUSED_STREAM: Final = 0x7
CANCEL: Final = 0x8
COMPRESSION_ERROR: Final = 0x9
CONNECT_ERROR: Final = 0xA
ENHANCE_YOUR_CALM: Final = 0xB
INADEQUATE_SECURITY: Final = 0xC
HTTP_1_1_REQUIRED: Final = 0xD


class H2ConnectionError(Exception):
    """A connection error: the connection is answered with GOAWAY(code) and closed."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class H2StreamError(Exception):
    """A stream error: that stream is answered with RST_STREAM(code); the connection goes on."""

    def __init__(self, stream_id: int, code: int, message: str) -> None:
        super().__init__(message)
        self.stream_id = stream_id
        self.code = code
        self.message = message


def frame(kind: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    """One frame: 24-bit length, type, flags, 31-bit stream id, payload."""
    return len(payload).to_bytes(3, "big") + bytes((kind, flags)) + stream_id.to_bytes(4, "big") + payload


def settings_frame(values: dict[int, int]) -> bytes:
    return frame(SETTINGS, 0, 0, b"".join(k.to_bytes(2, "big") + v.to_bytes(4, "big") for k, v in values.items()))


SETTINGS_ACK_FRAME: Final = frame(SETTINGS, ACK, 0)


def window_update_frame(stream_id: int, increment: int) -> bytes:
    return frame(WINDOW_UPDATE, 0, stream_id, increment.to_bytes(4, "big"))


def rst_stream_frame(stream_id: int, code: int) -> bytes:
    return frame(RST_STREAM, 0, stream_id, code.to_bytes(4, "big"))


def goaway_frame(last_stream_id: int, code: int, debug: bytes = b"") -> bytes:
    return frame(GOAWAY, 0, 0, last_stream_id.to_bytes(4, "big") + code.to_bytes(4, "big") + debug)


def ping_frame(payload: bytes, ack: bool = False) -> bytes:
    return frame(PING, ACK if ack else 0, 0, payload)


def header_block_frames(stream_id: int, block: bytes, end_stream: bool, max_frame_size: int) -> bytes:
    """HEADERS, then CONTINUATION frames when the block is larger than the peer's MAX_FRAME_SIZE."""
    first_flags = END_STREAM if end_stream else 0
    if len(block) <= max_frame_size:
        return frame(HEADERS, first_flags | END_HEADERS, stream_id, block)
    chunks = [block[i : i + max_frame_size] for i in range(0, len(block), max_frame_size)]
    out = [frame(HEADERS, first_flags, stream_id, chunks[0])]
    for index, chunk in enumerate(chunks[1:], 1):
        out.append(frame(CONTINUATION, END_HEADERS if index == len(chunks) - 1 else 0, stream_id, chunk))
    return b"".join(out)


def strip_padding(kind: int, flags: int, stream_id: int, payload: bytes) -> bytes:
    """The payload without its Pad Length byte and padding (DATA, HEADERS); PROTOCOL_ERROR when malformed."""
    if not flags & PADDED:
        return payload
    if not payload:
        raise H2ConnectionError(FRAME_SIZE_ERROR, f"padded frame on stream {stream_id} has no Pad Length")
    pad = payload[0]
    if pad >= len(payload):
        raise H2ConnectionError(PROTOCOL_ERROR, f"padding ({pad}) not shorter than the frame on stream {stream_id}")
    return payload[1 : len(payload) - pad]


@dataclass(frozen=True)
class Priority:
    depends_on: int
    exclusive: bool
    weight: int


def parse_priority(stream_id: int, payload: bytes) -> Priority:
    """A PRIORITY frame's payload (or HEADERS' priority fields): kept only to check for self-dependency."""
    if len(payload) < 5:
        raise H2StreamError(stream_id, FRAME_SIZE_ERROR, "PRIORITY needs 5 bytes")
    word = int.from_bytes(payload[:4], "big")
    depends_on = word & MAX_WINDOW
    if depends_on == stream_id:
        raise H2StreamError(stream_id, PROTOCOL_ERROR, f"stream {stream_id} depends on itself")
    return Priority(depends_on, bool(word >> 31), payload[4] + 1)


def header_block_fragment(flags: int, stream_id: int, payload: bytes) -> tuple[bytes, bool]:
    """A HEADERS frame's header block fragment without padding and priority fields, and whether the
    stream depends on itself (a stream error, raised by the caller once the block is decoded: the
    HPACK state must take in every block)."""
    payload = strip_padding(HEADERS, flags, stream_id, payload)
    if not flags & PRIORITY_FLAG:
        return payload, False
    if len(payload) < 5:
        raise H2ConnectionError(FRAME_SIZE_ERROR, f"HEADERS on stream {stream_id} too short for its priority")
    return payload[5:], int.from_bytes(payload[:4], "big") & MAX_WINDOW == stream_id


def parse_settings(flags: int, payload: bytes) -> list[tuple[int, int]]:
    """(identifier, value) pairs, each checked (section 6.5.2); unknown identifiers are passed on to be ignored."""
    if flags & ACK:
        if payload:
            raise H2ConnectionError(FRAME_SIZE_ERROR, "SETTINGS acknowledgement with a payload")
        return []
    if len(payload) % 6:
        raise H2ConnectionError(FRAME_SIZE_ERROR, f"SETTINGS payload of {len(payload)} bytes is not a multiple of 6")
    pairs = []
    for offset in range(0, len(payload), 6):
        key = int.from_bytes(payload[offset : offset + 2], "big")
        value = int.from_bytes(payload[offset + 2 : offset + 6], "big")
        if key == SETTINGS_ENABLE_PUSH and value > 1:
            raise H2ConnectionError(PROTOCOL_ERROR, f"SETTINGS_ENABLE_PUSH={value}")
        if key == SETTINGS_INITIAL_WINDOW_SIZE and value > MAX_WINDOW:
            raise H2ConnectionError(FLOW_CONTROL_ERROR, f"SETTINGS_INITIAL_WINDOW_SIZE={value} is over 2^31-1")
        if key == SETTINGS_MAX_FRAME_SIZE and not DEFAULT_MAX_FRAME_SIZE <= value <= LARGEST_MAX_FRAME_SIZE:
            raise H2ConnectionError(PROTOCOL_ERROR, f"SETTINGS_MAX_FRAME_SIZE={value} is out of range")
        pairs.append((key, value))
    return pairs


def parse_window_update(stream_id: int, payload: bytes) -> int:
    """The increment; zero is PROTOCOL_ERROR (on the stream, or the connection for stream 0)."""
    if len(payload) != 4:
        raise H2ConnectionError(FRAME_SIZE_ERROR, f"WINDOW_UPDATE of {len(payload)} bytes")
    increment = int.from_bytes(payload, "big") & MAX_WINDOW
    if increment == 0:
        if stream_id == 0:
            raise H2ConnectionError(PROTOCOL_ERROR, "WINDOW_UPDATE with a zero increment")
        raise H2StreamError(stream_id, PROTOCOL_ERROR, "WINDOW_UPDATE with a zero increment")
    return increment


def parse_rst_stream(payload: bytes) -> int:
    if len(payload) != 4:
        raise H2ConnectionError(FRAME_SIZE_ERROR, f"RST_STREAM of {len(payload)} bytes")
    return int.from_bytes(payload, "big")


def parse_goaway(payload: bytes) -> tuple[int, int]:
    """(last stream id, error code)."""
    if len(payload) < 8:
        raise H2ConnectionError(FRAME_SIZE_ERROR, f"GOAWAY of {len(payload)} bytes")
    return int.from_bytes(payload[:4], "big") & MAX_WINDOW, int.from_bytes(payload[4:8], "big")


def hpack_integer(value: int, prefix_bits: int, first: int = 0) -> bytes:
    """An HPACK integer (RFC 7541 section 5.1) with `first`'s high bits on the first byte."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes((first | value,))
    out = bytearray((first | limit,))
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def hpack_literal(name: bytes, value: bytes) -> bytes:
    """A literal header field without indexing, new name, no Huffman (RFC 7541 section 6.2.2).

    It leaves both dynamic tables alone, so every block built from these is valid at any
    HEADER_TABLE_SIZE the peer sets.
    """
    return b"\x00" + hpack_integer(len(name), 7) + name + hpack_integer(len(value), 7) + value


HPACK_STATUS_200: Final = b"\x88"  # indexed field 8 of the static table: ":status: 200"
HPACK_TABLE_SIZE_ZERO: Final = b"\x20"  # dynamic table size update to 0: the encoder never indexes
