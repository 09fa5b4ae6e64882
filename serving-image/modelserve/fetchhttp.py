"""http(s) downloads for `modelserve fetch`: redirects, proxies, timeouts and a hard deadline.

Built on http.client so the socket is ours: every read waits at most the read timeout, and a
watchdog shuts the socket down at the overall deadline, so neither a stalled nor a dripping
server (one byte every few seconds) can outlive it.
"""

from __future__ import annotations

import base64
import http.client
import socket
import ssl
import threading
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, suppress

from modelserve.fetchlimits import Deadline, FetchError, TransientError, human, one_line

MAX_REDIRECTS = 5
TRANSIENT_STATUS = {408, 425, 429}
USER_AGENT = "modelserve-fetch"


def classify(exc: BaseException) -> Exception | None:
    """Network errors while reading a body: all worth a retry."""
    if isinstance(exc, TimeoutError | socket.timeout):
        return TransientError("read timed out")
    if isinstance(exc, http.client.IncompleteRead):
        missing = f", {human(exc.expected)} missing" if isinstance(exc.expected, int) else ""
        return TransientError(f"connection closed before the end of the body{missing}")
    if isinstance(exc, OSError | http.client.HTTPException):
        return TransientError(f"connection failed: {one_line(exc) or type(exc).__name__}")
    return None


def _connection(url: urllib.parse.SplitResult, timeout: float) -> tuple[http.client.HTTPConnection, str]:
    """A connection to the host (or its proxy) and the request target."""
    host, port = url.hostname or "", url.port
    target = urllib.parse.urlunsplit(("", "", url.path or "/", url.query, ""))
    proxy = urllib.request.getproxies().get(url.scheme)
    if proxy and not urllib.request.proxy_bypass(host):
        parsed = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        headers = {}
        if parsed.username:
            token = f"{urllib.parse.unquote(parsed.username)}:{urllib.parse.unquote(parsed.password or '')}"
            headers["Proxy-Authorization"] = "Basic " + base64.b64encode(token.encode()).decode()
        if url.scheme == "https":
            tls = http.client.HTTPSConnection(parsed.hostname or "", parsed.port or 80, timeout=timeout)
            tls.set_tunnel(host, port or 443, headers=headers)
            return tls, target
        conn = http.client.HTTPConnection(parsed.hostname or "", parsed.port or 80, timeout=timeout)
        conn._proxy_headers = headers  # type: ignore[attr-defined]
        return conn, urllib.parse.urlunsplit(url._replace(fragment=""))
    if url.scheme == "https":
        return http.client.HTTPSConnection(host, port, timeout=timeout, context=ssl.create_default_context()), target
    return http.client.HTTPConnection(host, port, timeout=timeout), target


class CheckedBody:
    """A response body that fails when it ends before its Content-Length (http.client does not)."""

    def __init__(self, response: http.client.HTTPResponse) -> None:
        self._response = response

    def read(self, size: int = -1) -> bytes:
        data = self._response.read(size if size >= 0 else None)
        if not data and size != 0 and self._response.length:
            raise http.client.IncompleteRead(b"", self._response.length)
        return data


def _watchdog(conn: http.client.HTTPConnection, deadline: Deadline) -> threading.Timer:
    def cut() -> None:
        sock = conn.sock
        if sock is not None:
            with suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    timer = threading.Timer(deadline.remaining(), cut)
    timer.daemon = True
    timer.start()
    return timer


@contextmanager
def open_http(uri: str, timeout: float, deadline: Deadline, max_bytes: int) -> Iterator[CheckedBody]:
    """The response to GET `uri` after redirects, status 200, its declared size within `max_bytes`."""
    url = urllib.parse.urlsplit(uri)
    for _ in range(MAX_REDIRECTS + 1):
        deadline.check()
        conn, target = _connection(url, max(0.001, min(timeout, deadline.remaining())))
        timer = _watchdog(conn, deadline)
        try:
            headers = {"User-Agent": USER_AGENT, **getattr(conn, "_proxy_headers", {})}
            if url.username:
                token = f"{urllib.parse.unquote(url.username)}:{urllib.parse.unquote(url.password or '')}"
                headers["Authorization"] = "Basic " + base64.b64encode(token.encode()).decode()
            try:
                conn.request("GET", target, headers=headers)
                response = conn.getresponse()
            except (OSError, http.client.HTTPException) as exc:
                deadline.check()
                if isinstance(exc, ssl.SSLCertVerificationError):
                    raise FetchError(f"TLS certificate rejected: {one_line(exc.verify_message or exc)}") from None
                raise TransientError(f"cannot connect: {one_line(exc) or type(exc).__name__}") from None
            status = response.status
            if status in (301, 302, 303, 307, 308):
                location = response.getheader("Location")
                if not location:
                    raise FetchError(f"HTTP {status} redirect without a Location")
                url = urllib.parse.urlsplit(urllib.parse.urljoin(urllib.parse.urlunsplit(url), location))
                if url.scheme not in ("http", "https"):
                    raise FetchError(f"redirected to a {url.scheme or 'relative'}:// URL (refused)")
                continue
            if status != 200:
                message = f"HTTP {status} {one_line(response.reason, 80)}"
                if status >= 500 or status in TRANSIENT_STATUS:
                    raise TransientError(message)
                raise FetchError(message)
            length = response.getheader("Content-Length")
            if length and length.isdigit() and int(length) > max_bytes:
                raise FetchError(
                    f"declares {human(int(length))}, over the download limit of {human(max_bytes)}"
                    " (--max-download-bytes)"
                )
            yield CheckedBody(response)
            return
        finally:
            timer.cancel()
            conn.close()
    raise FetchError(f"more than {MAX_REDIRECTS} redirects")
