"""Request-head bounds on a real modelserve: size and field count (431), slow or silent heads (408 / closed)."""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator

import pytest

from modelserve import examples
from modelserve.launcher import ServingProcess

HEAD_TIMEOUT = 1.0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServingProcess]:
    repo = examples.write_repository(tmp_path_factory.mktemp("repo") / "models", ["simple"])
    args = ["--http-max-header-bytes=16384", "--http-max-headers=50", f"--http-header-timeout-secs={HEAD_TIMEOUT}"]
    proc = ServingProcess(repo, args=args).start()
    yield proc
    assert proc.stop() == 0


def exchange(server: ServingProcess, data: bytes, timeout: float = 10) -> tuple[bytes, float]:
    """Send `data`, read until the server closes or answers; the answer and how long it took."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", server.http_port), timeout=timeout) as sock:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(data)
        received = b""
        try:
            while chunk := sock.recv(65536):
                received += chunk
                if b"\r\n\r\n" in received and b"connection: close" not in received.lower():
                    break
        except ConnectionResetError:
            pass
    return received, time.monotonic() - started


def status(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else 0


def test_huge_header_is_431_without_reading_it_all(server: ServingProcess) -> None:
    head = b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (32 << 20) + b"\r\n\r\n"
    answer, seconds = exchange(server, head)
    assert status(answer) == 431 and b"request head exceeds 16384 bytes" in answer
    assert seconds < 2.0
    assert server.http_get("/v2/health/ready") == 200


def test_too_many_header_fields_is_431(server: ServingProcess) -> None:
    fields = b"".join(b"X-F%d: v\r\n" % i for i in range(60))
    answer, _ = exchange(server, b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n" + fields + b"\r\n")
    assert status(answer) == 431 and b"more than 50 header fields" in answer


def test_heads_within_bounds_are_served_even_with_a_large_body_in_the_same_packet(server: ServingProcess) -> None:
    fields = b"".join(b"X-F%d: v\r\n" % i for i in range(40))
    body = b"{}" + b" " * (200 * 1024)
    head = b"POST /v2/repository/index HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: %d\r\n" % len(body)
    answer, _ = exchange(server, head + fields + b"\r\n" + body)
    assert status(answer) == 200, answer[:200]


def test_slow_head_is_408_after_the_timeout(server: ServingProcess) -> None:
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", server.http_port), timeout=10) as sock:
        sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n")
        for _ in range(4):  # a byte every 0.4 s: never a complete head
            time.sleep(0.4)
            try:
                sock.sendall(b"X")
            except (BrokenPipeError, ConnectionResetError):
                break
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert status(answer) == 408
    assert HEAD_TIMEOUT <= time.monotonic() - started < HEAD_TIMEOUT + 2.0


def test_silent_connection_is_closed(server: ServingProcess) -> None:
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", server.http_port), timeout=10) as sock:
        assert sock.recv(65536).startswith(b"HTTP/1.1 408")
        assert sock.recv(65536) == b""  # closed
    assert time.monotonic() - started < HEAD_TIMEOUT + 2.0
    assert server.http_get("/v2/health/ready") == 200


def test_keep_alive_connection_serves_several_requests(server: ServingProcess) -> None:
    with socket.create_connection(("127.0.0.1", server.http_port), timeout=10) as sock:
        for _ in range(3):
            sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n")
            answer = sock.recv(65536)
            assert answer.startswith(b"HTTP/1.1 200"), answer
            time.sleep(HEAD_TIMEOUT * 0.6)  # idle between requests, under uvicorn's keep-alive timeout


def test_head_requests_expect_100_continue_and_pipelined_requests_get_whole_answers(server: ServingProcess) -> None:
    # each answer goes out in one write (head held until the body): these answers have no body, wait for one, or queue
    answer, _ = exchange(server, b"HEAD /v2 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 ") and b"content-length: " in answer and answer.endswith(b"\r\n\r\n")
    with socket.create_connection(("127.0.0.1", server.http_port), timeout=10) as sock:
        body = b'{"ready": true}'
        sock.sendall(b"POST /v2/repository/index HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n")
        sock.sendall(b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body))
        assert sock.recv(65536) == b"HTTP/1.1 100 Continue\r\n\r\n"  # sent before the body is read
        sock.sendall(body)
        answer = sock.recv(65536)
        assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b'"state":"READY"}]'), answer
    with socket.create_connection(("127.0.0.1", server.http_port), timeout=10) as sock:
        sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\nGET /v2 HTTP/1.1\r\nHost: x\r\n\r\n")
        sock.sendall(b"GET /v2/health/ready HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        answer = b""
        while chunk := sock.recv(65536):  # until the server closes, after the third answer
            answer += chunk
    assert answer.count(b"HTTP/1.1 200 OK") == 3 and b'"name":"modelserve"' in answer
