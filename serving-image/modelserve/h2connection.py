"""An HTTP/2 server connection on the asyncio loop (RFC 9113): an `asyncio.Protocol`, no threads.

It owns what HTTP/2 asks of a server: the preface, SETTINGS in both directions, PING, streams
and their states (each an `h2stream.H2Stream`), HEADERS + CONTINUATION (decoded and checked by
`h2headers`, HPACK through the `hpack` package), padding, flow
control both ways, RST_STREAM and GOAWAY, and it turns every violation into RST_STREAM (a
stream error) or GOAWAY and a close (a connection error); nothing raised while handling a
peer's bytes escapes to the loop. What a request means is the application's business: the
`StreamApp` gets each stream once its request headers are complete, reads its body from
`H2Stream` and answers through `respond` / `send_headers` / `send_data` / `send_trailers`.

Windows: the peer gets a large connection window, replenished as DATA arrives, and a per-stream
window replenished while the stream's unread bytes stay under `StreamLimits.buffer_cap` (so one
stream holds at most about `buffer_cap` plus a window). Outbound DATA never exceeds the peer's
connection or stream window nor its MAX_FRAME_SIZE; what does not fit waits for WINDOW_UPDATE.
Header blocks are built by the application from literals that never touch the dynamic table;
the first one on a connection starts with a table size update to 0, so any HEADER_TABLE_SIZE the
peer sets is honoured.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from typing import Protocol

from modelserve import h2frames as f
from modelserve.h2headers import RequestHeaders
from modelserve.h2stream import H2Stream, StreamLimits

log = logging.getLogger(__name__)

CONNECTION_WINDOW = (1 << 30) - 1
RECENTLY_RESET = 1024  # closed stream ids remembered, to ignore frames the peer sent before it knew
GOAWAY_PING = b"modeldrn"
GOAWAY_PING_WAIT = 1.0  # seconds to wait for the drain PING's ack before the final GOAWAY


class StreamApp(Protocol):
    def open_stream(self, connection: H2Connection, stream: H2Stream) -> None: ...
    def connection_made(self, connection: H2Connection) -> None: ...
    def connection_lost(self, connection: H2Connection) -> None: ...


class H2Connection(asyncio.Protocol):
    def __init__(self, app: StreamApp, limits: StreamLimits) -> None:
        self.app = app
        self.limits = limits
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.request_headers = RequestHeaders(limits.max_header_list_size)
        self.buffer = bytearray()
        self.out: list[bytes] = []  # bytes for the socket, written once per loop iteration (see write)
        self.preface_done = False
        self.settings_seen = False
        self.streams: dict[int, H2Stream] = {}
        self.highest_id = 0
        self.recently_reset: deque[int] = deque(maxlen=RECENTLY_RESET)
        self.continuation: tuple[int, int, bool, list[bytes]] | None = None  # stream, flags, self-dependent, parts
        self.peer_initial_window = f.DEFAULT_WINDOW
        self.peer_max_frame = f.DEFAULT_MAX_FRAME_SIZE
        self.send_window = f.DEFAULT_WINDOW
        self.recv_window = CONNECTION_WINDOW
        self.recv_unacked = 0
        self.table_size_signalled = False
        self.goaway_state = 0  # 0 none, 1 first GOAWAY and PING sent, 2 final GOAWAY sent
        self.last_stream_id = f.MAX_WINDOW  # streams above it are ignored after the final GOAWAY
        self.goaway_timer: asyncio.TimerHandle | None = None
        self.peer_goaway = False
        self.paused = False
        self.closed = False
        self.on_closed: Callable[[], None] | None = None

    # --- the transport ---

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment] (uvloop's transports are not asyncio.Transport)
        limits = self.limits
        settings = {
            f.SETTINGS_MAX_CONCURRENT_STREAMS: limits.max_concurrent_streams,
            f.SETTINGS_INITIAL_WINDOW_SIZE: limits.initial_window,
            f.SETTINGS_MAX_FRAME_SIZE: limits.max_frame_size,
            f.SETTINGS_MAX_HEADER_LIST_SIZE: limits.max_header_list_size,
            f.SETTINGS_ENABLE_PUSH: 0,
        }
        transport.write(f.settings_frame(settings) + f.window_update_frame(0, CONNECTION_WINDOW - f.DEFAULT_WINDOW))
        self.app.connection_made(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.goaway_timer is not None:
            self.goaway_timer.cancel()
        for stream in list(self.streams.values()):
            self._reset_locally(stream)
        self.streams.clear()
        self.app.connection_lost(self)
        if self.on_closed is not None:
            self.on_closed()

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        for stream in list(self.streams.values()):
            stream.wake_writer()

    def write(self, data: bytes) -> None:
        """Queue bytes for the socket; what is written in one loop iteration leaves in one write: the
        answers of a batch, on a connection that carries many streams, reach the peer in one segment."""
        if self.closed or self.transport is None:
            return
        if not self.out:
            self.loop.call_soon(self.flush)
        self.out.append(data)

    def flush(self) -> None:
        if not self.out:
            return
        data = self.out[0] if len(self.out) == 1 else b"".join(self.out)
        self.out.clear()
        if not self.closed and self.transport is not None:
            self.transport.write(data)

    def close(self) -> None:
        """Close once what is queued has been written."""
        if not self.closed and self.transport is not None:
            self.flush()
            self.closed = True
            self.transport.close()

    def abort(self) -> None:
        """Close now, cancelling whatever is still running (the end of a drain's grace period)."""
        self.out.clear()
        if self.transport is not None:
            self.closed = True
            self.transport.abort()

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        try:
            self._receive(data)
        except f.H2ConnectionError as exc:
            self.fail(exc.code, exc.message)
        except Exception:  # a bug here costs this connection, never the server
            log.exception("HTTP/2 connection failed")
            self.fail(f.INTERNAL_ERROR, "internal error")

    def fail(self, code: int, message: str) -> None:
        """A connection error: GOAWAY with the code and the reason, then close."""
        log.debug("HTTP/2 connection error %d: %s", code, message)
        last = min(self.highest_id, self.last_stream_id)
        self.write(f.goaway_frame(last, code, message.encode("utf-8", "replace")[:256]))
        self.close()

    # --- reading frames ---

    def _receive(self, data: bytes) -> None:
        if self.buffer:
            self.buffer += data
            view: bytes | bytearray = self.buffer
        else:
            view = data
        pos = 0
        if not self.preface_done:
            preface = f.PREFACE
            if view[: len(preface)] != preface[: len(view)]:
                raise f.H2ConnectionError(f.PROTOCOL_ERROR, "not an HTTP/2 connection preface")
            if len(view) < len(preface):
                self.buffer = bytearray(view)
                return
            self.preface_done = True
            pos = len(preface)
        size = len(view)
        max_frame = self.limits.max_frame_size
        while size - pos >= 9:
            length = int.from_bytes(view[pos : pos + 3], "big")
            if length > max_frame:
                raise f.H2ConnectionError(f.FRAME_SIZE_ERROR, f"frame of {length} bytes over MAX_FRAME_SIZE")
            end = pos + 9 + length
            if end > size:
                break
            kind, flags = view[pos + 3], view[pos + 4]
            stream_id = int.from_bytes(view[pos + 5 : pos + 9], "big") & f.MAX_WINDOW
            payload = bytes(view[pos + 9 : end])
            pos = end
            try:
                self._frame(kind, flags, stream_id, payload)
            except f.H2StreamError as exc:
                self._stream_error(exc)
            if self.closed:
                return
        if view is self.buffer:
            del self.buffer[:pos]
        else:
            self.buffer = bytearray(view[pos:])

    def _frame(self, kind: int, flags: int, stream_id: int, payload: bytes) -> None:
        if self.continuation is not None and kind != f.CONTINUATION:
            raise f.H2ConnectionError(f.PROTOCOL_ERROR, "a header block was interrupted by another frame")
        if not self.settings_seen:
            if kind != f.SETTINGS or flags & f.ACK:
                raise f.H2ConnectionError(f.PROTOCOL_ERROR, "the preface must be followed by SETTINGS")
            self.settings_seen = True
        if kind == f.DATA:
            self._data(flags, stream_id, payload)
        elif kind == f.HEADERS:
            self._headers(flags, stream_id, payload)
        elif kind == f.CONTINUATION:
            self._continuation(flags, stream_id, payload)
        elif kind == f.SETTINGS:
            self._settings(flags, stream_id, payload)
        elif kind == f.WINDOW_UPDATE:
            self._window_update(stream_id, payload)
        elif kind == f.PING:
            self._ping(flags, stream_id, payload)
        elif kind == f.RST_STREAM:
            self._rst_stream(stream_id, payload)
        elif kind == f.PRIORITY:
            if stream_id == 0:
                raise f.H2ConnectionError(f.PROTOCOL_ERROR, "PRIORITY on stream 0")
            if len(payload) != 5:
                raise f.H2StreamError(stream_id, f.FRAME_SIZE_ERROR, "PRIORITY needs 5 bytes")
            f.parse_priority(stream_id, payload)  # a self-dependency is a stream error; priorities are ignored
        elif kind == f.GOAWAY:
            self._goaway(stream_id, payload)
        elif kind == f.PUSH_PROMISE:
            raise f.H2ConnectionError(f.PROTOCOL_ERROR, "a client cannot send PUSH_PROMISE")
        # frames of unknown types are ignored (section 5.5)

    def _closed_stream(self, stream_id: int, what: str) -> None:
        """A frame for a stream that is not open: idle is PROTOCOL_ERROR, closed is STREAM_CLOSED."""
        if stream_id > self.highest_id:
            raise f.H2ConnectionError(f.PROTOCOL_ERROR, f"{what} on idle stream {stream_id}")
        if stream_id not in self.recently_reset:
            raise f.H2StreamError(stream_id, f.STREAM_CLOSED, f"{what} on closed stream {stream_id}")

    def _data(self, flags: int, stream_id: int, payload: bytes) -> None:
        if stream_id == 0:
            raise f.H2ConnectionError(f.PROTOCOL_ERROR, "DATA on stream 0")
        flow = len(payload)
        self.recv_window -= flow
        if self.recv_window < 0:
            raise f.H2ConnectionError(f.FLOW_CONTROL_ERROR, "DATA beyond the connection window")
        self.recv_unacked += flow
        if self.recv_unacked >= 1 << 20:
            self.write(f.window_update_frame(0, self.recv_unacked))
            self.recv_window += self.recv_unacked
            self.recv_unacked = 0
        stream = self.streams.get(stream_id)
        if stream is None or stream.reset:
            self._closed_stream(stream_id, "DATA")
            return
        if stream.remote_closed:
            raise f.H2StreamError(stream_id, f.STREAM_CLOSED, "DATA after END_STREAM")
        stream.unacked += flow
        if stream.unacked + stream.withheld > self.limits.initial_window:
            raise f.H2StreamError(stream_id, f.FLOW_CONTROL_ERROR, "DATA beyond the stream window")
        body = f.strip_padding(f.DATA, flags, stream_id, payload) if flags & f.PADDED else payload
        if body:
            stream.buffer += body
        if flags & f.END_STREAM:
            stream.remote_closed = True
        elif len(stream.buffer) > self.limits.buffer_cap:
            stream.withheld += stream.unacked  # given back as the reader consumes (H2Stream.consume)
            stream.unacked = 0
        elif stream.unacked >= self.limits.initial_window >> 2:
            self.write(f.window_update_frame(stream_id, stream.unacked))
            stream.unacked = 0
        stream.wake()
        if stream.remote_closed:
            self._maybe_forget(stream)

    def _headers(self, flags: int, stream_id: int, payload: bytes) -> None:
        if stream_id == 0:
            raise f.H2ConnectionError(f.PROTOCOL_ERROR, "HEADERS on stream 0")
        fragment, self_dependent = f.header_block_fragment(flags, stream_id, payload)
        if flags & f.END_HEADERS:
            self._header_block(stream_id, flags, self_dependent, fragment)
        else:
            self.continuation = (stream_id, flags, self_dependent, [fragment])

    def _continuation(self, flags: int, stream_id: int, payload: bytes) -> None:
        if self.continuation is None or self.continuation[0] != stream_id:
            raise f.H2ConnectionError(f.PROTOCOL_ERROR, f"CONTINUATION on stream {stream_id} without HEADERS")
        first_id, first_flags, self_dependent, parts = self.continuation
        parts.append(payload)
        if sum(map(len, parts)) > self.limits.max_header_list_size * 2:
            raise f.H2ConnectionError(f.ENHANCE_YOUR_CALM, "header block over twice MAX_HEADER_LIST_SIZE")
        if flags & f.END_HEADERS:
            self.continuation = None
            self._header_block(first_id, first_flags, self_dependent, b"".join(parts))

    def _header_block(self, stream_id: int, flags: int, self_dependent: bool, block: bytes) -> None:
        decoded = self.request_headers.decode(block)
        end_stream = bool(flags & f.END_STREAM)
        stream = self.streams.get(stream_id)
        if stream is not None:  # trailers
            if stream.remote_closed or stream.reset:
                raise f.H2StreamError(stream_id, f.STREAM_CLOSED, "HEADERS after END_STREAM")
            if not end_stream:
                raise f.H2StreamError(stream_id, f.PROTOCOL_ERROR, "trailers without END_STREAM")
            stream.remote_closed = True
            stream.wake()
            self._maybe_forget(stream)
            return
        if stream_id <= self.highest_id:
            if stream_id in self.recently_reset:
                return
            raise f.H2ConnectionError(f.STREAM_CLOSED, f"HEADERS on closed stream {stream_id}")
        if stream_id % 2 == 0:
            raise f.H2ConnectionError(f.PROTOCOL_ERROR, f"client stream id {stream_id} is even")
        self.highest_id = stream_id
        if stream_id > self.last_stream_id or self.peer_goaway:
            return  # after our final GOAWAY: ignored, as the peer knows
        if self_dependent:
            raise f.H2StreamError(stream_id, f.PROTOCOL_ERROR, f"stream {stream_id} depends on itself")
        if len(self.streams) >= self.limits.max_concurrent_streams:
            raise f.H2StreamError(stream_id, f.REFUSED_STREAM, "over SETTINGS_MAX_CONCURRENT_STREAMS")
        stream = H2Stream(self, stream_id, self.peer_initial_window)
        stream.method, stream.path, stream.headers = self.request_headers.request(stream_id, decoded)
        stream.remote_closed = end_stream
        self.streams[stream_id] = stream
        self.app.open_stream(self, stream)

    def _settings(self, flags: int, stream_id: int, payload: bytes) -> None:
        if stream_id != 0:
            raise f.H2ConnectionError(f.PROTOCOL_ERROR, "SETTINGS on a stream")
        pairs = f.parse_settings(flags, payload)
        if flags & f.ACK:
            return
        for key, value in pairs:
            if key == f.SETTINGS_INITIAL_WINDOW_SIZE:
                delta = value - self.peer_initial_window
                self.peer_initial_window = value
                for stream in self.streams.values():
                    stream.send_window += delta
                    if stream.send_window > f.MAX_WINDOW:
                        raise f.H2ConnectionError(f.FLOW_CONTROL_ERROR, "a stream window over 2^31-1")
            elif key == f.SETTINGS_MAX_FRAME_SIZE:
                self.peer_max_frame = value
            # HEADER_TABLE_SIZE: the response blocks never index (see the module's docstring)
        self.write(f.SETTINGS_ACK_FRAME)
        self._flush_all()

    def _window_update(self, stream_id: int, payload: bytes) -> None:
        increment = f.parse_window_update(stream_id, payload)
        if stream_id == 0:
            self.send_window += increment
            if self.send_window > f.MAX_WINDOW:
                raise f.H2ConnectionError(f.FLOW_CONTROL_ERROR, "connection window over 2^31-1")
            self._flush_all()
            return
        stream = self.streams.get(stream_id)
        if stream is None:
            if stream_id > self.highest_id:
                raise f.H2ConnectionError(f.PROTOCOL_ERROR, f"WINDOW_UPDATE on idle stream {stream_id}")
            return  # a closed stream's window no longer matters
        stream.send_window += increment
        if stream.send_window > f.MAX_WINDOW:
            raise f.H2StreamError(stream_id, f.FLOW_CONTROL_ERROR, "stream window over 2^31-1")
        self._flush_stream(stream)

    def _ping(self, flags: int, stream_id: int, payload: bytes) -> None:
        if stream_id != 0:
            raise f.H2ConnectionError(f.PROTOCOL_ERROR, "PING on a stream")
        if len(payload) != 8:
            raise f.H2ConnectionError(f.FRAME_SIZE_ERROR, f"PING of {len(payload)} bytes")
        if not flags & f.ACK:
            self.write(f.ping_frame(payload, ack=True))
        elif payload == GOAWAY_PING and self.goaway_state == 1:
            self._final_goaway()

    def _rst_stream(self, stream_id: int, payload: bytes) -> None:
        if stream_id == 0:
            raise f.H2ConnectionError(f.PROTOCOL_ERROR, "RST_STREAM on stream 0")
        f.parse_rst_stream(payload)
        stream = self.streams.get(stream_id)
        if stream is None:
            if stream_id > self.highest_id:
                raise f.H2ConnectionError(f.PROTOCOL_ERROR, f"RST_STREAM on idle stream {stream_id}")
            return
        self._reset_locally(stream)
        self._forget(stream)

    def _goaway(self, stream_id: int, payload: bytes) -> None:
        if stream_id != 0:
            raise f.H2ConnectionError(f.PROTOCOL_ERROR, "GOAWAY on a stream")
        _, code = f.parse_goaway(payload)
        if code != f.NO_ERROR:
            log.debug("peer sent GOAWAY with error %d: %r", code, payload[8:100])
        self.peer_goaway = True  # it opens no more streams; the open ones are answered, then it closes
        self._maybe_finish()

    def _stream_error(self, exc: f.H2StreamError) -> None:
        log.debug("HTTP/2 stream %d error %d: %s", exc.stream_id, exc.code, exc.message)
        self.write(f.rst_stream_frame(exc.stream_id, exc.code))
        stream = self.streams.get(exc.stream_id)
        if stream is not None:
            self._reset_locally(stream)
            self._forget(stream)
        else:
            self.recently_reset.append(exc.stream_id)

    # --- stream lifetime ---

    def _reset_locally(self, stream: H2Stream) -> None:
        stream.reset = True
        stream.outbox.clear()
        stream.trailers = None
        if stream.task is not None and not stream.task.done():
            stream.task.cancel()
        stream.wake()
        stream.wake_writer()

    def _forget(self, stream: H2Stream) -> None:
        if self.streams.pop(stream.id, None) is not None:
            self.recently_reset.append(stream.id)
        self._maybe_finish()

    def _maybe_forget(self, stream: H2Stream) -> None:
        if stream.local_closed and stream.remote_closed:
            self._forget(stream)

    def _maybe_finish(self) -> None:
        if not self.streams and (self.goaway_state == 2 or self.peer_goaway):
            self.close()

    # --- writing ---

    def header_block(self, block: bytes) -> bytes:
        """The block as sent: the first one on the connection shrinks the peer's view of our table to 0."""
        if self.table_size_signalled:
            return block
        self.table_size_signalled = True
        return f.HPACK_TABLE_SIZE_ZERO + block

    def _can_send(self, stream: H2Stream) -> bool:
        return not (stream.reset or self.closed or stream.local_closed)

    def respond(self, stream: H2Stream, head: bytes, data: bytes, trailers: bytes) -> None:
        """A whole answer: headers, one DATA payload and trailers, in one write when the windows allow."""
        if not self._can_send(stream):
            return
        out = [f.header_block_frames(stream.id, self.header_block(head), False, self.peer_max_frame)]
        stream.head_sent = True
        stream.outbox += data
        stream.trailers = trailers
        self._drain_stream(stream, out)
        self.write(b"".join(out))
        self._maybe_forget_or_reset(stream)

    def send_headers(self, stream: H2Stream, head: bytes, end_stream: bool = False) -> None:
        if not self._can_send(stream):
            return
        self.write(f.header_block_frames(stream.id, self.header_block(head), end_stream, self.peer_max_frame))
        stream.head_sent = True
        if end_stream:
            stream.local_closed = True
            self._maybe_forget_or_reset(stream)

    def send_data(self, stream: H2Stream, data: bytes) -> None:
        if not self._can_send(stream):
            return
        stream.outbox += data
        self._flush_stream(stream)

    def send_trailers(self, stream: H2Stream, trailers: bytes) -> None:
        if not self._can_send(stream):
            return
        stream.trailers = trailers
        self._flush_stream(stream)

    def _flush_stream(self, stream: H2Stream) -> None:
        out: list[bytes] = []
        self._drain_stream(stream, out)
        if out:
            self.write(b"".join(out))
            self._maybe_forget_or_reset(stream)

    def _flush_all(self) -> None:
        for stream in list(self.streams.values()):
            if stream.outbox or stream.trailers is not None:
                self._flush_stream(stream)

    def _drain_stream(self, stream: H2Stream, out: list[bytes]) -> None:
        """Frame as much of the outbox as the windows allow; the trailers once it is empty."""
        outbox = stream.outbox
        if outbox:
            sent = 0
            stream_id = stream.id
            step = self.peer_max_frame
            while sent < len(outbox):
                allowed = min(self.send_window, stream.send_window, step, len(outbox) - sent)
                if allowed <= 0:
                    break
                out.append(f.frame(f.DATA, 0, stream_id, bytes(outbox[sent : sent + allowed])))
                sent += allowed
                self.send_window -= allowed
                stream.send_window -= allowed
            if sent == len(outbox):
                outbox.clear()
            else:
                del outbox[:sent]
        if not outbox:
            if stream.trailers is not None:
                trailers, stream.trailers = stream.trailers, None
                out.append(f.header_block_frames(stream.id, self.header_block(trailers), True, self.peer_max_frame))
                stream.local_closed = True
            stream.wake_writer()

    def _maybe_forget_or_reset(self, stream: H2Stream) -> None:
        """A stream answered in full: forgotten; if the peer is still sending, told to stop (RST_STREAM NO_ERROR)."""
        if not stream.local_closed:
            return
        if not stream.remote_closed:
            self.write(f.rst_stream_frame(stream.id, f.NO_ERROR))
            stream.reset = True
            stream.wake()
        self._forget(stream)

    # --- graceful shutdown ---

    def start_goaway(self) -> None:
        """GOAWAY as gRPC servers send it: first with the largest id and a PING; once the PING is
        acknowledged (every stream the peer opened before has arrived) the final GOAWAY names the
        last stream taken. Open streams are answered, then the connection closes."""
        if self.goaway_state or self.closed:
            return
        self.goaway_state = 1
        self.write(f.goaway_frame(f.MAX_WINDOW, f.NO_ERROR) + f.ping_frame(GOAWAY_PING))
        self.goaway_timer = self.loop.call_later(GOAWAY_PING_WAIT, self._final_goaway)

    def _final_goaway(self) -> None:
        if self.goaway_state == 2 or self.closed:
            return
        self.goaway_state = 2
        if self.goaway_timer is not None:
            self.goaway_timer.cancel()
        self.last_stream_id = self.highest_id
        self.write(f.goaway_frame(self.last_stream_id, f.NO_ERROR))
        self._maybe_finish()

    @property
    def idle(self) -> bool:
        return not self.streams
