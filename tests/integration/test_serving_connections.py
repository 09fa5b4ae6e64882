"""Connection cap and body-read timeout on a real modelserve: slow or idle sockets never lock clients out."""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator

import pytest

from modelserve import examples
from modelserve.launcher import ServingProcess

CAP = 20
BODY_TIMEOUT = 1.0
INFER = b'{"inputs":[%s]}' % b",".join(
    b'{"name":"%s","datatype":"FP32","shape":[1,16],"data":[%s]}' % (n, b",".join([b"1"] * 16))
    for n in (b"INPUT0", b"INPUT1")
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServingProcess]:
    repo = examples.write_repository(tmp_path_factory.mktemp("repo") / "models", ["simple"])
    args = [
        f"--http-max-connections={CAP}",
        f"--http-body-timeout-secs={BODY_TIMEOUT}",
        "--http-header-timeout-secs=30",
    ]
    proc = ServingProcess(repo, args=args).start()
    yield proc
    assert proc.stop() == 0


def infer_status(server: ServingProcess) -> int:
    with socket.create_connection(("127.0.0.1", server.http_port), timeout=10) as sock:
        head = b"POST /v2/models/simple/infer HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: %d\r\n\r\n"
        sock.sendall(head % len(INFER) + INFER)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return int(answer.split(b" ", 2)[1])


def closed_by_server(sock: socket.socket) -> bool:
    sock.settimeout(0.05)
    try:
        return sock.recv(65536) == b""
    except TimeoutError:
        return False
    except OSError:
        return True


def test_idle_sockets_over_the_cap_are_evicted_oldest_first(server: ServingProcess) -> None:
    sockets = [socket.create_connection(("127.0.0.1", server.http_port)) for _ in range(3 * CAP)]
    try:
        sockets[-1].sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n")  # the newest is mid-head
        time.sleep(0.3)
        assert infer_status(server) == 200  # a new client is served: the oldest idle socket made room
        assert server.http_get("/v2/health/ready") == 200
        time.sleep(0.2)
        closed = [closed_by_server(s) for s in sockets]
        assert all(closed[: 2 * CAP]), "the oldest idle sockets are closed first"
        assert sum(closed) == 2 * CAP + 1  # and one more for the new client
    finally:
        for sock in sockets:
            sock.close()


def test_busy_connections_refuse_a_new_one_with_503_until_their_bodies_time_out(server: ServingProcess) -> None:
    busy = []
    try:
        for _ in range(CAP):
            sock = socket.create_connection(("127.0.0.1", server.http_port))
            sock.sendall(b"POST /v2/models/simple/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{")
            busy.append(sock)
        time.sleep(0.2)
        with socket.create_connection(("127.0.0.1", server.http_port), timeout=5) as sock:
            answer = sock.recv(65536)
        assert answer.startswith(b"HTTP/1.1 503") and b"too many open connections" in answer
        time.sleep(BODY_TIMEOUT + 0.5)
        for sock in busy:
            sock.settimeout(5)
            answer = sock.recv(65536)
            assert answer.startswith(b"HTTP/1.1 408"), answer
            assert b"connection: close" in answer.lower()
        assert infer_status(server) == 200
    finally:
        for sock in busy:
            with contextlib.suppress(OSError):
                sock.close()


def test_dripping_body_is_408_after_the_body_timeout(server: ServingProcess) -> None:
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", server.http_port), timeout=10) as sock:
        sock.sendall(b"POST /v2/models/simple/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n")
        answer = b""
        for _ in range(20):  # a byte every 0.2 s would take 20 s
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                sock.sendall(b" ")
            sock.settimeout(0.2)
            with contextlib.suppress(TimeoutError):
                answer += sock.recv(65536)
            if answer:
                break
    assert answer.startswith(b"HTTP/1.1 408") and b"request body not received within 1 s" in answer
    assert BODY_TIMEOUT <= time.monotonic() - started < BODY_TIMEOUT + 1.5
