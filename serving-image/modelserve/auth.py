"""Inference authentication: a bearer token or a header key read from a file (a mounted Secret).

`--auth-token-file=PATH` turns it on for HTTP and gRPC. Every API but health (server and
model liveness / readiness) then needs header (HTTP) or metadata (gRPC) `--auth-header`:
`authorization: Bearer <token>` by default, or `<header>: <token>` for any other header
name. The file holds one token per line (several while a token is rotated); it is read
again when it changes (Kubernetes updates a mounted Secret in place), at most every few
seconds. Tokens are compared in constant time; a missing or wrong one is 401 /
UNAUTHENTICATED and the message never echoes what was sent. Metrics, on their own port,
stay open.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Callable
from pathlib import Path

from modelserve.errors import Unauthenticated

log = logging.getLogger(__name__)

OPEN_APIS = frozenset({"health"})
BEARER_HEADER = "authorization"
RELOAD_SECS = 5.0


def read_tokens(path: Path) -> tuple[bytes, ...]:
    """The non-empty lines of the token file; ValueError with a one-line reason otherwise."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"--auth-token-file {path}: cannot read it: {type(exc).__name__}") from None
    tokens = tuple(line.strip().encode() for line in text.splitlines() if line.strip())
    if not tokens:
        raise ValueError(f"--auth-token-file {path}: holds no token")
    return tokens


class TokenAuth:
    def __init__(self, path: Path, header: str = BEARER_HEADER, reload_secs: float = RELOAD_SECS) -> None:
        self.path = path
        self.header = header.strip().lower()
        if not self.header:
            raise ValueError("--auth-header must name a header")
        self.reload_secs = reload_secs
        self.tokens = read_tokens(path)
        self._stamp = self._file_stamp()
        self._checked = time.monotonic()

    @property
    def bearer(self) -> bool:
        return self.header == BEARER_HEADER

    def _file_stamp(self) -> tuple[float, int]:
        try:
            stat = self.path.stat()
        except OSError:
            return (0.0, -1)
        return (stat.st_mtime, stat.st_ino)

    def _maybe_reload(self) -> None:
        now = time.monotonic()
        if now - self._checked < self.reload_secs:
            return
        self._checked = now
        stamp = self._file_stamp()
        if stamp == self._stamp:
            return
        try:
            self.tokens = read_tokens(self.path)
        except ValueError as exc:  # keep serving with the tokens we have
            log.warning("%s; keeping the previous tokens", exc)
            return
        self._stamp = stamp
        log.info("auth tokens reloaded from %s", self.path)

    def check(self, api: str, header: Callable[[str], str | None]) -> None:
        """Refuse the call unless it carries a valid token (health APIs are always open)."""
        if api in OPEN_APIS:
            return
        self._maybe_reload()
        given = header(self.header)
        if given is None:
            raise Unauthenticated(f"missing credentials: send header '{self.header}'")
        credential = given.strip()
        if self.bearer:
            scheme, _, credential = credential.partition(" ")
            if scheme.lower() != "bearer":
                raise Unauthenticated("expected 'authorization: Bearer <token>'")
            credential = credential.strip()
        presented = credential.encode("latin-1", "replace")  # HTTP header bytes were decoded as latin-1
        valid = False
        for token in self.tokens:  # every token is compared: the time says nothing about which one matched
            valid |= hmac.compare_digest(presented, token)
        if not valid:
            raise Unauthenticated("invalid credentials")
