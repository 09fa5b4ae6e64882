"""HTTP/2 frame codec (modelserve.h2frames), request header blocks (h2headers) and gRPC wire helpers (grpcwire), checked
against the `h2`/`hpack`/`hyperframe` packages' own decoders where one exists."""

from __future__ import annotations

import gzip
import zlib
from urllib.parse import unquote

import pytest
from hpack import Decoder, Encoder
from hyperframe.frame import Frame

from modelserve import grpcwire as wire
from modelserve import h2frames as f
from modelserve.errors import InvalidArgument, PayloadTooLarge, Unimplemented
from modelserve.h2headers import RequestHeaders, request_fields


def parse(raw: bytes) -> Frame:
    header, payload = raw[:9], raw[9:]
    frame, length = Frame.parse_frame_header(memoryview(header))
    assert length == len(payload)
    frame.parse_body(memoryview(payload))
    return frame


def test_frames_parse_as_hyperframe_reads_them() -> None:
    settings = parse(f.settings_frame({f.SETTINGS_INITIAL_WINDOW_SIZE: 1 << 20, f.SETTINGS_MAX_FRAME_SIZE: 16384}))
    assert settings.type == f.SETTINGS and settings.settings == {4: 1 << 20, 5: 16384}
    update = parse(f.window_update_frame(7, 1234))
    assert (update.type, update.stream_id, update.window_increment) == (f.WINDOW_UPDATE, 7, 1234)
    rst = parse(f.rst_stream_frame(3, f.CANCEL))
    assert (rst.stream_id, rst.error_code) == (3, f.CANCEL)
    goaway = parse(f.goaway_frame(9, f.PROTOCOL_ERROR, b"why"))
    assert (goaway.last_stream_id, goaway.error_code, goaway.additional_data) == (9, f.PROTOCOL_ERROR, b"why")
    ping = parse(f.ping_frame(b"12345678", ack=True))
    assert ping.opaque_data == b"12345678" and "ACK" in ping.flags
    assert parse(f.SETTINGS_ACK_FRAME).flags == {"ACK"}


def test_a_large_header_block_is_split_into_continuation_frames() -> None:
    block = bytes(range(256)) * 200  # 51,200 bytes
    raw = f.header_block_frames(5, block, end_stream=True, max_frame_size=16384)
    frames, pos = [], 0
    while pos < len(raw):
        length = int.from_bytes(raw[pos : pos + 3], "big")
        frames.append((raw[pos + 3], raw[pos + 4], raw[pos + 9 : pos + 9 + length]))
        pos += 9 + length
    assert [kind for kind, _, _ in frames] == [f.HEADERS, f.CONTINUATION, f.CONTINUATION, f.CONTINUATION]
    assert frames[0][1] == f.END_STREAM and frames[-1][1] == f.END_HEADERS and frames[1][1] == 0
    assert b"".join(p for _, _, p in frames) == block
    single = f.header_block_frames(1, b"abc", end_stream=False, max_frame_size=16384)
    assert single[3:5] == bytes((f.HEADERS, f.END_HEADERS))


def test_padding_is_stripped_and_bad_padding_is_a_protocol_error() -> None:
    assert f.strip_padding(f.DATA, f.PADDED, 1, b"\x03abc\0\0\0") == b"abc"
    assert f.strip_padding(f.DATA, 0, 1, b"\x03abc") == b"\x03abc"
    with pytest.raises(f.H2ConnectionError) as too_long:
        f.strip_padding(f.DATA, f.PADDED, 1, b"\x05abc")
    assert too_long.value.code == f.PROTOCOL_ERROR
    with pytest.raises(f.H2ConnectionError):
        f.strip_padding(f.HEADERS, f.PADDED, 1, b"")


def test_headers_priority_fields_are_skipped_and_self_dependency_reported() -> None:
    priority = (3).to_bytes(4, "big") + b"\x10"
    assert f.header_block_fragment(f.PRIORITY_FLAG, 1, priority + b"block") == (b"block", False)
    assert f.header_block_fragment(f.PRIORITY_FLAG, 3, priority + b"block") == (b"block", True)
    padded = b"\x02" + priority + b"block\0\0"
    assert f.header_block_fragment(f.PRIORITY_FLAG | f.PADDED, 1, padded) == (b"block", False)
    with pytest.raises(f.H2StreamError):
        f.parse_priority(5, (5).to_bytes(4, "big") + b"\x01")


@pytest.mark.parametrize(
    ("flags", "payload", "code"),
    [
        (f.ACK, b"\0" * 6, f.FRAME_SIZE_ERROR),
        (0, b"\0" * 5, f.FRAME_SIZE_ERROR),
        (0, (2).to_bytes(2, "big") + (2).to_bytes(4, "big"), f.PROTOCOL_ERROR),
        (0, (4).to_bytes(2, "big") + (1 << 31).to_bytes(4, "big"), f.FLOW_CONTROL_ERROR),
        (0, (5).to_bytes(2, "big") + (100).to_bytes(4, "big"), f.PROTOCOL_ERROR),
        (0, (5).to_bytes(2, "big") + (1 << 24).to_bytes(4, "big"), f.PROTOCOL_ERROR),
    ],
)
def test_bad_settings_are_connection_errors(flags: int, payload: bytes, code: int) -> None:
    with pytest.raises(f.H2ConnectionError) as info:
        f.parse_settings(flags, payload)
    assert info.value.code == code


def test_settings_window_update_rst_and_goaway_parse() -> None:
    payload = (4).to_bytes(2, "big") + (1000).to_bytes(4, "big") + (0x99).to_bytes(2, "big") + (1).to_bytes(4, "big")
    assert f.parse_settings(0, payload) == [(4, 1000), (0x99, 1)]  # an unknown setting is passed on, to be ignored
    assert f.parse_window_update(1, (1 << 31 | 10).to_bytes(4, "big")) == 10  # the reserved bit is ignored
    with pytest.raises(f.H2StreamError):
        f.parse_window_update(1, b"\0\0\0\0")
    with pytest.raises(f.H2ConnectionError) as zero:
        f.parse_window_update(0, b"\0\0\0\0")
    assert zero.value.code == f.PROTOCOL_ERROR
    with pytest.raises(f.H2ConnectionError) as short:
        f.parse_window_update(0, b"\0\0\1")
    assert short.value.code == f.FRAME_SIZE_ERROR
    assert f.parse_rst_stream(b"\0\0\0\x08") == f.CANCEL
    assert f.parse_goaway((7).to_bytes(4, "big") + b"\0\0\0\x01debug") == (7, 1)
    with pytest.raises(f.H2ConnectionError):
        f.parse_goaway(b"\0" * 7)


@pytest.mark.parametrize("value", [0, 5, 126, 127, 128, 300, 16_384, 1 << 21])
def test_hpack_literals_decode_with_hpack(value: int) -> None:
    name, text = b"x-key", b"v" * value
    block = f.HPACK_TABLE_SIZE_ZERO + f.HPACK_STATUS_200 + f.hpack_literal(name, text)
    decoder = Decoder()
    decoder.max_header_list_size = 1 << 24
    assert decoder.decode(block, raw=True) == [(b":status", b"200"), (name, text)]
    assert decoder.header_table_size == 0  # the blocks never leave anything in the peer's table


def test_grpc_message_percent_encoding_round_trips() -> None:
    text = "bad input: 100% wrong, naïve \u2603\nnext"
    encoded = wire.percent_encode(text)
    assert all(0x20 <= b <= 0x7E for b in encoded) and b"%25" in encoded and b"%0A" in encoded
    assert unquote(encoded.decode("ascii")) == text


@pytest.mark.parametrize(
    ("value", "seconds"),
    [(b"1H", 3600.0), (b"2M", 120.0), (b"3S", 3.0), (b"250m", 0.25), (b"10u", 1e-5), (b"99999999n", 0.099999999)],
)
def test_grpc_timeout_parses(value: bytes, seconds: float) -> None:
    assert wire.parse_timeout(value) == pytest.approx(seconds)


@pytest.mark.parametrize("value", [b"", b"S", b"123456789S", b"10", b"10x", b"-1S", b"1.5S"])
def test_malformed_grpc_timeout_is_invalid_argument(value: bytes) -> None:
    with pytest.raises(InvalidArgument, match="grpc-timeout"):
        wire.parse_timeout(value)


def test_messages_inflate_within_the_limit_and_a_bomb_costs_nothing() -> None:
    payload = b"tensor bytes " * 1000
    assert wire.inflate("gzip", gzip.compress(payload), 1 << 20) == payload
    assert wire.inflate("deflate", zlib.compress(payload), 1 << 20) == payload
    framed = wire.message(payload, "gzip")
    assert framed[0] == 1 and int.from_bytes(framed[1:5], "big") == len(framed) - 5
    assert gzip.decompress(framed[5:]) == payload
    with pytest.raises(PayloadTooLarge):
        wire.inflate("gzip", gzip.compress(b"\0" * (64 << 20)), 1 << 20)
    with pytest.raises(InvalidArgument, match="truncated"):
        wire.inflate("gzip", gzip.compress(payload)[:-20], 1 << 20)
    with pytest.raises(InvalidArgument, match="cannot inflate"):
        wire.inflate("deflate", b"not zlib at all", 1 << 20)


class FakeStream:
    def __init__(self, headers: list[tuple[bytes, bytes]]) -> None:
        self.headers = headers


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ([], ("identity", "identity", None)),
        ([(b"grpc-encoding", b"gzip")], ("gzip", "identity", None)),
        ([(b"grpc-encoding", b"gzip"), (b"grpc-accept-encoding", b"identity, deflate, gzip")], ("gzip", "gzip", None)),
        ([(b"grpc-accept-encoding", b"gzip"), (b"grpc-timeout", b"5S")], ("identity", "identity", 5.0)),
    ],
)
def test_call_headers(headers: list[tuple[bytes, bytes]], expected: tuple[str, str, float | None]) -> None:
    call = wire.CallHeaders.parse(FakeStream(headers))  # type: ignore[arg-type]
    assert (call.encoding, call.respond_encoding, call.timeout) == expected


def test_an_unknown_grpc_encoding_is_unimplemented() -> None:
    with pytest.raises(Unimplemented, match="grpc-encoding br is not supported"):
        wire.CallHeaders.parse(FakeStream([(b"grpc-encoding", b"br")]))  # type: ignore[arg-type]


REQUEST = [(b":method", b"POST"), (b":scheme", b"http"), (b":path", b"/svc/M"), (b"content-type", b"application/grpc")]


@pytest.mark.parametrize(
    "fields",
    [
        [(b":method", b"POST"), (b":path", b"/x")],  # no :scheme
        [*REQUEST, (b":authority", b"late")],  # a pseudo-header after a regular one
        [*REQUEST, (b"Content-Length", b"3")],  # upper case
        [*REQUEST, (b"connection", b"keep-alive")],
        [*REQUEST, (b"te", b"gzip")],
        [*REQUEST, (b"x-a", b"line\r\nbreak")],
        [(b":method", b"POST"), *REQUEST[1:], (b":status", b"200")],  # a response pseudo-header
        [REQUEST[0], *REQUEST],  # a repeated pseudo-header
    ],
)
def test_malformed_requests_are_stream_errors(fields: list[tuple[bytes, bytes]]) -> None:
    with pytest.raises(f.H2StreamError) as info:
        request_fields(1, fields)
    assert info.value.code == f.PROTOCOL_ERROR and info.value.stream_id == 1


def test_a_repeated_block_is_decoded_once_while_the_table_stands() -> None:
    encoder, headers = Encoder(), RequestHeaders(1 << 16)
    first = encoder.encode(REQUEST)  # adds content-type and :path to the dynamic table
    assert headers.request(1, headers.decode(first)) == (b"POST", b"/svc/M", [(b"content-type", b"application/grpc")])
    assert first not in headers.decoded  # decoding it changed the table: never remembered
    again = encoder.encode(REQUEST)  # indexed references only
    decoded = headers.decode(again)
    assert headers.decode(again) is decoded  # remembered
    headers.decode(encoder.encode([*REQUEST, (b"x-new", b"value")]))  # the table changes...
    fresh = headers.decode(again)  # ...so the block is decoded afresh: the same bytes now name other entries
    assert fresh is not decoded and fresh.fields != decoded.fields
    with pytest.raises(f.H2ConnectionError) as info:
        headers.decode(b"\xff\xff\xff\xff")
    assert info.value.code == f.COMPRESSION_ERROR
