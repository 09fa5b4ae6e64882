"""Request header blocks of an HTTP/2 server connection: HPACK decoding (the `hpack` package), the
request checks of RFC 9113 sections 8.2 and 8.3, and a per-connection memory of repeated blocks.

A client sending the same call again sends the same header block (its fields indexed in the
dynamic table): such a block is decoded and checked once, as long as the table is as it was and
decoding it did not change the table.
"""

from __future__ import annotations

from dataclasses import dataclass

from hpack import Decoder
from hpack.exceptions import HPACKError

from modelserve import h2frames as f

DECODED_BLOCKS = 32  # header blocks remembered per connection, with what they decoded to
DECODED_BLOCK_BYTES = 1024
FORBIDDEN_HEADERS = frozenset({b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade"})
REQUEST_PSEUDO = frozenset({b":method", b":scheme", b":authority", b":path"})

Request = tuple[bytes, bytes, list[tuple[bytes, bytes]]]  # :method, :path, regular fields (names lower case)


def request_fields(stream_id: int, fields: list[tuple[bytes, bytes]]) -> Request:
    """Check a request's fields as RFC 9113 section 8.2 and 8.3 ask; a malformed request is a stream error."""
    seen: set[bytes] = set()
    regular = False
    method = path = b""
    headers: list[tuple[bytes, bytes]] = []
    for name, value in fields:
        if b"\0" in value or b"\r" in value or b"\n" in value or name != name.lower() or not name:
            raise f.H2StreamError(stream_id, f.PROTOCOL_ERROR, "malformed header field")
        if name[0] == 0x3A:  # ':'
            if regular or name not in REQUEST_PSEUDO or name in seen:
                raise f.H2StreamError(stream_id, f.PROTOCOL_ERROR, "misplaced, unknown or repeated pseudo-header")
            seen.add(name)
            if name == b":method":
                method = value
            elif name == b":path":
                path = value
            continue
        regular = True
        if name in FORBIDDEN_HEADERS or (name == b"te" and value != b"trailers"):
            raise f.H2StreamError(stream_id, f.PROTOCOL_ERROR, "connection-specific header field")
        headers.append((name, value))
    if not method or not path or b":scheme" not in seen:
        raise f.H2StreamError(stream_id, f.PROTOCOL_ERROR, "request without :method, :scheme or :path")
    return method, path, headers


@dataclass
class Decoded:
    """A header block's fields as decoded at a table version, and the request they make once checked."""

    version: int
    fields: list[tuple[bytes, bytes]]
    request: Request | None = None


class RequestHeaders:
    """The connection's HPACK decoder; every block must go through it, in order (the table is shared)."""

    def __init__(self, max_header_list_size: int) -> None:
        self.decoder = Decoder(max_header_list_size=max_header_list_size)
        self.decoded: dict[bytes, Decoded] = {}
        self.table_version = 0

    def decode(self, block: bytes) -> Decoded:
        """The block's fields; every block goes through the decoder (HPACK state is shared) unless the same
        bytes were decoded before at the same table state without changing it (a client's repeated call)."""
        cached = self.decoded.get(block)
        if cached is not None and cached.version == self.table_version:
            return cached
        table = self.decoder.header_table
        entries = table.dynamic_entries
        first, count, size = entries[0] if entries else None, len(entries), table.maxsize
        try:
            fields = self.decoder.decode(block, raw=True)
        except HPACKError as exc:
            raise f.H2ConnectionError(f.COMPRESSION_ERROR, f"header block: {type(exc).__name__}") from None
        decoded = Decoded(self.table_version, fields)
        if (entries[0] if entries else None) is not first or len(entries) != count or table.maxsize != size:
            self.table_version += 1  # the table changed: what was decoded before may read differently now
        elif len(block) <= DECODED_BLOCK_BYTES:
            if len(self.decoded) >= DECODED_BLOCKS:
                self.decoded.clear()
            self.decoded[block] = decoded
        return decoded

    def request(self, stream_id: int, decoded: Decoded) -> Request:
        """The request the block makes, checked once per distinct block."""
        if decoded.request is None:
            decoded.request = request_fields(stream_id, decoded.fields)
        return decoded.request
