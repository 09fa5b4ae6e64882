"""kopf's own API traffic made as fault-tolerant as the operator's client (`kube.RetryPolicy`).

kopf retries 5xx, 429 (with Retry-After), 403 and connection errors of its requests through
`settings.networking.error_backoffs`, without jitter; it never retries a 409, and a watch or
list that still fails after those retries, or an ERROR event in a watch stream other than 410,
ends the watcher and with it the operator (nolar/kopf#1077, #1108). So:

- `configure(settings)` sets jittered exponential backoffs (an iterable that draws new delays
  each time kopf iterates it), bounded request and connect timeouts, and short event-posting
  backoffs;
- `install()` (idempotent) wraps two kopf internals, pinned by the kopf version in pyproject:
  its request function retries a 409 on anything but a create (merge patches of annotations and
  status are idempotent, a JSON patch carries its own resourceVersion test, reads are reads; a
  create's 409 is AlreadyExists), and its per-resource watch
  restarts (list, then watch) after any API or stream error, with a growing jittered pause,
  instead of ending the process, and hands kopf every object slimmed (`memory.slim`).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import kopf
from kopf._cogs.clients import api as kopf_api
from kopf._cogs.clients import errors as kopf_errors
from kopf._cogs.clients import watching as kopf_watching

from modeldeploy import memory

log = logging.getLogger("modeldeploy.resilience")


class JitteredBackoffs:
    """`count` delays growing from `base` by doubling up to `cap`, each scaled by a random 0.5-1."""

    def __init__(self, count: int = 7, base: float = 0.2, cap: float = 8.0) -> None:
        self.count, self.base, self.cap = count, base, cap

    def __len__(self) -> int:
        return self.count

    def __iter__(self) -> Iterator[float]:
        for attempt in range(self.count):
            yield min(self.cap, self.base * 2**attempt) * random.uniform(0.5, 1.0)


def configure(settings: kopf.OperatorSettings) -> None:
    settings.networking.error_backoffs = JitteredBackoffs()
    settings.networking.request_timeout = 30.0
    settings.networking.connect_timeout = 5.0
    settings.posting.default_backoffs = JitteredBackoffs(count=4)
    settings.watching.reconnect_backoff = max(settings.watching.reconnect_backoff, 0.2)
    settings.watching.connect_timeout = 5.0


def watch_pause(failures: int) -> float:
    """Seconds before listing and watching again after `failures` failed watches in a row."""
    return min(30.0, 0.5 * 2 ** (failures - 1)) * random.uniform(0.5, 1.0)


_original_request = kopf_api.request
_original_continuous_watch = kopf_watching.continuous_watch
_failures: dict[str, int] = {}


async def _request(method: str, url: str, **kwargs: Any) -> Any:
    backoffs = iter(JitteredBackoffs(count=6))
    while True:
        try:
            return await _original_request(method, url, **kwargs)
        except kopf_errors.APIConflictError:
            delay = next(backoffs, None)
            if method.upper() == "POST" or delay is None:
                raise  # a create's 409 is AlreadyExists
            log.debug("409 on %s %s; retrying in %.2fs", method.upper(), url, delay)
            await asyncio.sleep(delay)


async def _continuous_watch(**kwargs: Any) -> AsyncIterator[Any]:
    key = f"{kwargs.get('resource')}@{kwargs.get('namespace')}"
    try:
        async for event in _original_continuous_watch(**kwargs):
            if event is kopf_watching.Bookmark.LISTED:
                _failures.pop(key, None)
            elif isinstance(event, dict) and isinstance(event.get("object"), dict):
                memory.slim(event["object"])
            yield event
    except (kopf_errors.APIError, kopf_watching.WatchingError, aiohttp.ClientError, TimeoutError) as exc:
        failures = _failures[key] = _failures.get(key, 0) + 1
        pause = watch_pause(failures)
        log.warning("watch of %s failed (%r); listing and watching again in %.1fs", key, exc, pause)
        await asyncio.sleep(pause)


def install() -> None:
    """Wrap kopf's request and watch functions (once per process)."""
    if kopf_api.request is not _request:
        kopf_api.request = _request  # type: ignore[assignment]
    if kopf_watching.continuous_watch is not _continuous_watch:
        kopf_watching.continuous_watch = _continuous_watch  # type: ignore[assignment]
