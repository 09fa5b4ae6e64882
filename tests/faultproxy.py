"""A fault-injecting HTTP proxy in front of a Kubernetes API server (kmock or a real one).

The operator speaks plain HTTP to the proxy; the proxy forwards to the upstream server (over
TLS with the kubeconfig's CA and client certificate for a real API server) and answers a share
of the requests with 500, 409 or 429 (Retry-After: 1) instead. A faulted write (POST, PUT,
PATCH, DELETE) is, half of the time, forwarded first: the write happens, the client sees an
error. Watches stream through; a faulted watch fails before it starts.

Runs its own event loop in a thread, so sync and async tests use it alike:

    with FaultProxy(upstream, fault_rate=0.2) as proxy:
        ... proxy.url ... proxy.counts ...
"""

from __future__ import annotations

import asyncio
import base64
import collections
import json
import random
import ssl
import tempfile
import threading
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from aiohttp import web

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host",
              "authorization", "upgrade", "te", "trailer", "proxy-authorization"}  # fmt: skip
WRITES = {"POST", "PUT", "PATCH", "DELETE"}
FAULTS = (500, 409, 429)


def tls_from_kubeconfig(kubeconfig: Path) -> tuple[str, ssl.SSLContext]:
    """The server URL and an SSL context with the current context's CA and client certificate."""
    config = yaml.safe_load(kubeconfig.read_text())
    context = next(c["context"] for c in config["contexts"] if c["name"] == config["current-context"])
    cluster = next(c["cluster"] for c in config["clusters"] if c["name"] == context["cluster"])
    user = next(u["user"] for u in config["users"] if u["name"] == context["user"])
    ctx = ssl.create_default_context(cadata=base64.b64decode(cluster["certificate-authority-data"]).decode())
    with tempfile.TemporaryDirectory() as tmp:
        cert, key = Path(tmp) / "cert.pem", Path(tmp) / "key.pem"
        cert.write_bytes(base64.b64decode(user["client-certificate-data"]))
        key.write_bytes(base64.b64decode(user["client-key-data"]))
        ctx.load_cert_chain(cert, key)
    return cluster["server"].rstrip("/"), ctx


def plain_kubeconfig(url: str, path: Path) -> Path:
    """A kubeconfig that sends a client to `url` over plain HTTP (the proxy holds the credentials)."""
    path.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "proxy",
        "clusters": [{"name": "proxy", "cluster": {"server": url}}],
        "contexts": [{"name": "proxy", "context": {"cluster": "proxy", "user": "proxy", "namespace": "default"}}],
        "users": [{"name": "proxy", "user": {"token": "through-the-proxy"}}],
    }))  # fmt: skip
    return path


class FaultProxy:
    def __init__(
        self,
        upstream: str,
        *,
        ssl_context: ssl.SSLContext | None = None,
        fault_rate: float = 0.2,
        after_write_share: float = 0.5,
        faults: tuple[int, ...] = FAULTS,
        watch_error_rate: float = 0.0,
        seed: int | None = None,
    ) -> None:
        self.upstream = upstream.rstrip("/")
        self.ssl_context = ssl_context
        self.fault_rate = fault_rate
        self.after_write_share = after_write_share
        self.faults = faults
        self.watch_error_rate = watch_error_rate  # watches answered 200 with one ERROR event (not 410)
        self.random = random.Random(seed)
        self.counts: collections.Counter[str] = collections.Counter()  # "requests", "faults", "500 after write"...
        self.url = ""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True, name="fault-proxy")
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._streams: dict[int, tuple[aiohttp.ClientResponse, web.Request]] = {}

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def __exit__(self, *_: object) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    async def _start(self) -> None:
        connector = aiohttp.TCPConnector(ssl=self.ssl_context if self.ssl_context else False, limit=200)
        self._session = aiohttp.ClientSession(connector=connector, auto_decompress=False)
        app = web.Application(client_max_size=64 * 2**20)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"

    async def _stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    def _fault(self, request: web.Request) -> tuple[int, bool] | None:
        """(status, after forwarding) for a request to fail, else None."""
        if self.random.random() >= self.fault_rate:
            return None
        status = self.random.choice(self.faults)
        after = request.method in WRITES and self.random.random() < self.after_write_share
        return status, after

    @staticmethod
    def _error(status: int) -> web.Response:
        reason = {500: "InternalError", 409: "Conflict", 429: "TooManyRequests"}[status]
        body = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": status, "reason": reason,
                "message": f"injected by the fault proxy ({status})"}  # fmt: skip
        if status == 429:
            body["details"] = {"retryAfterSeconds": 1}
        headers = {"Retry-After": "1"} if status == 429 else {}
        return web.json_response(body, status=status, headers=headers)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.counts["requests"] += 1
        self.counts[request.method] += 1
        if request.query.get("watch") in ("true", "1") and self.random.random() < self.watch_error_rate:
            self.counts["watch errors"] += 1
            event = {"type": "ERROR", "object": {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                                 "code": 500, "message": "injected watch error"}}  # fmt: skip
            return web.Response(text=json.dumps(event) + "\n", content_type="application/json")
        fault = self._fault(request)
        if fault is not None and not fault[1]:
            self.counts["faults"] += 1
            self.counts[f"{fault[0]} before"] += 1
            return self._error(fault[0])
        assert self._session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        body = await request.read()
        url = self.upstream + request.rel_url.path_qs
        try:
            upstream = await self._session.request(
                request.method, url, headers=headers, data=body or None, timeout=aiohttp.ClientTimeout(total=None)
            )
        except (aiohttp.ClientError, OSError) as exc:
            return web.Response(status=502, text=f"upstream: {exc}")
        async with upstream:
            if fault is not None:  # the write happened; the client hears otherwise
                await upstream.read()
                self.counts["faults"] += 1
                self.counts[f"{fault[0]} after write"] += 1
                return self._error(fault[0])
            response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
            for key, value in upstream.headers.items():
                if key.lower() not in HOP_BY_HOP:
                    response.headers[key] = value
            await response.prepare(request)
            self._streams[id(request)] = (upstream, request)
            try:
                async for chunk in upstream.content.iter_any():
                    await response.write(chunk)
            except (aiohttp.ClientError, ConnectionResetError, asyncio.CancelledError):
                return response
            finally:
                self._streams.pop(id(request), None)
            await response.write_eof()
            return response

    def cut_streams(self) -> None:
        """Drop every connection that is streaming now (watches), as a failing server or network would."""

        def cut() -> None:
            for upstream, request in list(self._streams.values()):
                upstream.close()
                if request.transport is not None:
                    request.transport.close()

        self._loop.call_soon_threadsafe(cut)

    def stats(self) -> dict[str, Any]:
        return dict(self.counts)
