"""A loopback HTTP server for the fetch tests: files, and hostile behaviours by path."""

from __future__ import annotations

import http.server
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class FileServer:
    url: str
    root: Path
    hits: Counter[str] = field(default_factory=Counter)
    # path -> statuses to answer before serving the file (e.g. [503, 503])
    failures: dict[str, list[int]] = field(default_factory=dict)
    # paths whose first answer is cut off half-way through the body
    truncate_once: set[str] = field(default_factory=set)


class _Handler(http.server.BaseHTTPRequestHandler):
    server_state: FileServer
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        state = self.server_state
        path = self.path.split("?", 1)[0]
        state.hits[path] += 1
        try:
            if path == "/endless.onnx":
                return self._endless()
            if path == "/drip.onnx":
                return self._drip()
            if path == "/slow-headers.onnx":
                return self._slow_headers()
            if path == "/huge-declared.onnx":
                self.send_response(200)
                self.send_header("Content-Length", str(1 << 40))
                self.end_headers()
                return None
            if path.startswith("/redirect/"):
                self.send_response(302)
                self.send_header("Location", "/" + path.removeprefix("/redirect/"))
                self.send_header("Content-Length", "0")
                self.end_headers()
                return None
            pending = state.failures.get(path)
            if pending:
                status = pending.pop(0)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return None
            file = state.root / path.lstrip("/")
            if not file.is_file():
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return None
            size = file.stat().st_size
            self.send_response(200)
            self.send_header("Content-Length", str(size))
            self.end_headers()
            cut = path in state.truncate_once
            state.truncate_once.discard(path)
            with file.open("rb") as source:
                sent = 0
                while chunk := source.read(1 << 20):
                    if cut and sent + len(chunk) > size // 2:
                        self.wfile.write(chunk[: size // 2 - sent])
                        self.close_connection = True
                        return None
                    self.wfile.write(chunk)
                    sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        return None

    def _endless(self) -> None:
        self.send_response(200)
        self.end_headers()  # no Content-Length: the body ends when the connection does
        self.close_connection = True
        block = b"\0" * (1 << 16)
        while True:
            self.wfile.write(block)

    def _drip(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "1000000")
        self.end_headers()
        self.close_connection = True
        for _ in range(1000):
            self.wfile.write(b"x")
            self.wfile.flush()
            time.sleep(0.3)

    def _slow_headers(self) -> None:
        self.close_connection = True
        for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"y" * 1000:
            self.wfile.write(bytes([byte]))
            self.wfile.flush()
            time.sleep(0.3)


@contextmanager
def file_server(root: Path) -> Iterator[FileServer]:
    state = FileServer(url="", root=root)
    handler = type("Handler", (_Handler,), {"server_state": state})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    httpd.handle_error = lambda request, address: None  # type: ignore[method-assign]
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
