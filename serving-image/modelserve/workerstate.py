"""What the worker processes of `--workers N` share: readiness and statistics, through a directory.

Each worker serves HTTP, gRPC and metrics on the same ports (SO_REUSEPORT), so whichever
worker answers a readiness probe, a statistics call or a /metrics scrape must answer for all:

- readiness: `ready` holds one byte per worker (memory-mapped); a worker sets its own byte
  when its models are loaded and clears it on SIGTERM; the supervisor clears the byte of a
  worker that died. The server is ready only while every byte is set;
- statistics: each worker writes its `ModelStats` to `stats-<i>.json` (write, then rename)
  at most every `FLUSH_SECONDS` when they changed; an answer adds the worker's own live
  figures to the other workers' last files. A count is therefore exact once the workers have
  flushed, within `FLUSH_SECONDS` of the last request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import mmap
import os
from collections.abc import Callable, Iterable
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import orjson

from modelserve.metrics import BatchStats, Duration, Key, ModelStats

log = logging.getLogger(__name__)

FLUSH_SECONDS = 0.1
ENV_DIR, ENV_INDEX, ENV_COUNT = "MODELSERVE_WORKER_DIR", "MODELSERVE_WORKER_INDEX", "MODELSERVE_WORKERS"


def create(directory: Path, count: int) -> None:
    """The supervisor's part: the readiness bytes, all clear."""
    (directory / "ready").write_bytes(b"\0" * count)


def mark(directory: Path, index: int, ready: bool) -> None:
    with (directory / "ready").open("r+b") as f:
        f.seek(index)
        f.write(b"\1" if ready else b"\0")


def _stats_to_json(stats: ModelStats) -> dict[str, Any]:
    return asdict(stats)


def _stats_from_json(data: dict[str, Any]) -> ModelStats:
    stats = ModelStats()
    for f in fields(ModelStats):
        value = data.get(f.name)
        if value is None:
            continue
        current = getattr(stats, f.name)
        if isinstance(current, Duration):
            setattr(stats, f.name, Duration(**value))
        elif f.name == "batches":
            stats.batches = {
                int(size): BatchStats(**{k: Duration(**v) for k, v in b.items()}) for size, b in value.items()
            }
        else:
            setattr(stats, f.name, value)
    return stats


def merge(total: ModelStats, other: ModelStats) -> None:
    """Add `other` into `total` (counters and durations add; the latest inference time wins)."""
    for name in ("success", "fail", "queue", "compute_input", "compute_infer", "compute_output"):
        getattr(total, name).add(getattr(other, name).ns, getattr(other, name).count)
    total.cache_hit.add(other.cache_hit.ns, other.cache_hit.count)
    total.cache_miss.add(other.cache_miss.ns, other.cache_miss.count)
    total.cached = total.cached or other.cached
    total.inference_count += other.inference_count
    total.execution_count += other.execution_count
    total.pending += other.pending
    total.last_inference_ms = max(total.last_inference_ms, other.last_inference_ms)
    total.latency_buckets = [a + b for a, b in zip(total.latency_buckets, other.latency_buckets, strict=True)]
    total.latency_sum_s += other.latency_sum_s
    for size, batch in other.batches.items():
        mine = total.batches.setdefault(size, BatchStats())
        for name in ("compute_input", "compute_infer", "compute_output"):
            getattr(mine, name).add(getattr(batch, name).ns, getattr(batch, name).count)


class WorkerState:
    """One worker's view of the shared directory."""

    def __init__(self, directory: Path, index: int, count: int) -> None:
        self.directory = directory
        self.index = index
        self.count = count
        self._ready_file = (directory / "ready").open("r+b")
        self._ready = mmap.mmap(self._ready_file.fileno(), count)
        self._flushed: bytes = b""

    @classmethod
    def from_env(cls) -> WorkerState | None:
        directory = os.environ.get(ENV_DIR)
        if not directory:
            return None
        return cls(Path(directory), int(os.environ[ENV_INDEX]), int(os.environ[ENV_COUNT]))

    def set_ready(self, ready: bool) -> None:
        self._ready[self.index] = 1 if ready else 0

    def others_ready(self) -> bool:
        return all(self._ready[i] for i in range(self.count) if i != self.index)

    def flush(self, series: Iterable[tuple[Key, ModelStats]]) -> None:
        payload = orjson.dumps(
            [[list(key), _stats_to_json(stats)] for key, stats in series], option=orjson.OPT_NON_STR_KEYS
        )
        if payload == self._flushed:
            return
        path = self.directory / f"stats-{self.index}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(payload)
        tmp.replace(path)
        self._flushed = payload

    async def flush_forever(self, series: Callable[[], Iterable[tuple[Key, ModelStats]]]) -> None:
        while True:
            try:
                self.flush(series())
            except Exception:  # a failed write must not stop later ones
                log.exception("cannot write this worker's statistics to %s", self.directory)
            await asyncio.sleep(FLUSH_SECONDS)

    def others(self) -> list[tuple[Key, ModelStats]]:
        """The other workers' last flushed statistics."""
        out: list[tuple[Key, ModelStats]] = []
        for i in range(self.count):
            if i == self.index:
                continue
            with contextlib.suppress(FileNotFoundError, orjson.JSONDecodeError):
                for key, data in orjson.loads((self.directory / f"stats-{i}.json").read_bytes()):
                    out.append(((key[0], key[1]), _stats_from_json(data)))
        return out


def combined(own: Iterable[tuple[Key, ModelStats]], others: Iterable[tuple[Key, ModelStats]]) -> dict[Key, ModelStats]:
    """Every worker's statistics added up per (model, version); only versions this worker has loaded."""
    totals: dict[Key, ModelStats] = {}
    for key, stats in own:
        total = ModelStats(cached=stats.cached)
        merge(total, stats)
        totals[key] = total
    for key, stats in others:
        if key in totals:
            merge(totals[key], stats)
    return totals
