"""The server's life as the data plane sees it: started, terminating (not ready), draining, stopped.

Requests in flight are counted here so that SIGTERM can wait for them (modelserve.shutdown).
"""

from __future__ import annotations

import asyncio

from modelserve.errors import Unavailable


class Lifecycle:
    def __init__(self) -> None:
        self.started = False
        self.terminating = False  # SIGTERM received: not ready, still serving
        self.shutting_down = False  # draining is over: refuse what still arrives
        self.inflight = 0
        self._idle: asyncio.Event | None = None

    @property
    def serving(self) -> bool:
        return self.started and not self.terminating and not self.shutting_down

    def refuse_when_stopped(self) -> None:
        if self.shutting_down:
            raise Unavailable("server is shutting down")

    def enter(self) -> None:
        self.inflight += 1
        self._event().clear()

    def leave(self) -> None:
        self.inflight -= 1
        if self.inflight == 0:
            self._event().set()

    def _event(self) -> asyncio.Event:
        if self._idle is None:  # created on first use, inside the running loop
            self._idle = asyncio.Event()
            if self.inflight == 0:
                self._idle.set()
        return self._idle

    async def drain(self, timeout: float) -> bool:
        """Wait for in-flight requests, then refuse any more. True when all finished in time."""
        self.terminating = True
        try:
            await asyncio.wait_for(self._event().wait(), timeout)
        except TimeoutError:
            return False
        finally:
            self.shutting_down = True
        return True
