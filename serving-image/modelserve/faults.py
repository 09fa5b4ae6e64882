"""Test-only fault injection: a failure ratio and an added latency. Off unless set.

Used by the canary tests to make one track misbehave. Set through the environment
(MODELSERVE_FAULT_FAILURE_RATIO, 0..1; MODELSERVE_FAULT_LATENCY_MS) or the matching
--fault-* flags. Never set these in production: they make the server fail on purpose.
Failures are spread evenly (every 1/ratio-th request), not at random, so a test sees
exactly the ratio it asked for.
"""

from __future__ import annotations

import asyncio
import math
import os
from dataclasses import dataclass

from modelserve.errors import InferenceFailed


@dataclass
class FaultInjector:
    failure_ratio: float = 0.0
    latency_ms: float = 0.0
    _seen: int = 0
    _failed: int = 0

    def __post_init__(self) -> None:
        if not 0.0 <= self.failure_ratio <= 1.0:
            raise ValueError(f"fault failure ratio must be within 0..1, got {self.failure_ratio}")
        if self.latency_ms < 0:
            raise ValueError(f"fault latency must be >= 0 ms, got {self.latency_ms}")

    @classmethod
    def from_env(cls) -> FaultInjector:
        return cls(
            failure_ratio=float(os.environ.get("MODELSERVE_FAULT_FAILURE_RATIO", "0") or 0),
            latency_ms=float(os.environ.get("MODELSERVE_FAULT_LATENCY_MS", "0") or 0),
        )

    @property
    def active(self) -> bool:
        return self.failure_ratio > 0 or self.latency_ms > 0

    async def before_inference(self) -> None:
        if self.latency_ms > 0:
            await asyncio.sleep(self.latency_ms / 1000)

    def after_inference(self) -> None:
        if self.failure_ratio <= 0:
            return
        self._seen += 1
        if math.floor(self._seen * self.failure_ratio + 1e-9) > self._failed:
            self._failed += 1
            raise InferenceFailed("injected failure (MODELSERVE_FAULT_FAILURE_RATIO is set)")
