"""Dynamic batching: merge queued requests into one model execution, split the results back.

Policy (per model version, `instances` executions may run at once):
- when an instance is free and nothing else is running, whatever is queued goes at once,
  so a lone request never waits out the batching window;
- while other batches are in flight, a new batch waits up to `max_queue_delay_us` for
  more requests, until it reaches a preferred size or `max_batch_size` rows;
- only requests whose non-batch dimensions and datatypes agree are merged;
- the queue is bounded: past `max_queue_size` waiting requests, `submit` fails at once
  with `Unavailable`;
- a batch that fails fails every request in it with that error; the batcher goes on.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from modelserve.contract import DEFAULT_MAX_QUEUE_SIZE
from modelserve.errors import InferenceFailed, ServeError, Unavailable

RunFn = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]


@dataclass(frozen=True)
class BatchTiming:
    """What one request spent where, in nanoseconds; `batch_size` is the rows it ran with."""

    queue_ns: int
    compute_input_ns: int
    compute_infer_ns: int
    compute_output_ns: int
    batch_size: int


@dataclass
class _Pending:
    inputs: dict[str, np.ndarray]
    rows: int
    signature: tuple[object, ...]
    future: asyncio.Future[tuple[dict[str, np.ndarray], BatchTiming]]
    enqueued_ns: int = field(default_factory=time.perf_counter_ns)


def _signature(inputs: dict[str, np.ndarray], batched: bool) -> tuple[object, ...]:
    return tuple(
        (name, array.dtype.str, array.shape[1:] if batched else array.shape) for name, array in sorted(inputs.items())
    )


class DynamicBatcher:
    def __init__(
        self,
        run: RunFn,
        *,
        max_batch_size: int,
        preferred_batch_sizes: tuple[int, ...] = (),
        max_queue_delay_us: int = 0,
        max_queue_size: int = DEFAULT_MAX_QUEUE_SIZE,
        instances: int = 1,
        on_batch: Callable[[int, BatchTiming], None] | None = None,
    ) -> None:
        self._run = run
        self.max_batch_size = max_batch_size
        self._preferred = tuple(sorted(s for s in preferred_batch_sizes if 0 < s <= max_batch_size))
        self._delay_s = max_queue_delay_us / 1e6
        self.max_queue_size = max_queue_size
        self._instances = instances
        self._on_batch = on_batch
        self._queue: deque[_Pending] = deque()
        self._arrived = asyncio.Event()
        self._slots = asyncio.Semaphore(instances)
        self._running = 0
        self._executor = ThreadPoolExecutor(max_workers=instances, thread_name_prefix="infer")
        self._closed = False
        self._inflight: set[asyncio.Task[None]] = set()
        self._loop_task: asyncio.Task[None] | None = None

    @property
    def queued(self) -> int:
        return len(self._queue)

    @property
    def batching(self) -> bool:
        return self.max_batch_size > 0

    def start(self) -> None:
        if self._loop_task is None:
            self._loop_task = asyncio.get_running_loop().create_task(self._schedule(), name="batcher")

    async def submit(self, inputs: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], BatchTiming]:
        """Queue one request (its inputs carry the batch dimension when batching is on)."""
        if self._closed:
            raise Unavailable("model is being unloaded")
        if len(self._queue) >= self.max_queue_size:
            raise Unavailable(f"request queue is full ({self.max_queue_size} waiting); retry later")
        rows = next(iter(inputs.values())).shape[0] if self.batching and inputs else 1
        future: asyncio.Future[tuple[dict[str, np.ndarray], BatchTiming]] = asyncio.get_running_loop().create_future()
        self._queue.append(_Pending(inputs, rows, _signature(inputs, self.batching), future))
        self._arrived.set()
        self.start()
        return await future

    def _take_batch(self) -> list[_Pending]:
        first = self._queue.popleft()
        batch = [first]
        if not self.batching:
            return batch
        rows = first.rows
        kept: deque[_Pending] = deque()
        while self._queue and rows < self.max_batch_size:
            item = self._queue.popleft()
            if item.signature == first.signature and rows + item.rows <= self.max_batch_size:
                batch.append(item)
                rows += item.rows
            else:
                kept.append(item)
        kept.extend(self._queue)
        self._queue = kept
        return batch

    def _target_rows(self, rows: int) -> int:
        return next((p for p in self._preferred if p >= rows), self.max_batch_size)

    async def _fill(self, batch: list[_Pending]) -> list[_Pending]:
        """Under load, wait (bounded by the delay) for more requests to join."""
        deadline = batch[0].enqueued_ns / 1e9 + self._delay_s
        rows = sum(p.rows for p in batch)
        while rows < self._target_rows(rows) and self._running > 0:
            remaining = deadline - time.perf_counter_ns() / 1e9
            if remaining <= 0:
                break
            self._arrived.clear()
            if not self._queue:
                try:
                    await asyncio.wait_for(self._arrived.wait(), remaining)
                except TimeoutError:
                    break
            self._queue.extendleft(reversed(batch))
            batch = self._take_batch()
            new_rows = sum(p.rows for p in batch)
            if new_rows == rows and self._queue:
                break  # what is queued cannot join this batch
            rows = new_rows
        return batch

    async def _schedule(self) -> None:
        while not self._closed:
            if not self._queue:
                self._arrived.clear()
                await self._arrived.wait()
                continue
            await self._slots.acquire()
            if not self._queue:
                self._slots.release()
                continue
            batch = self._take_batch()
            if self.batching and self._delay_s > 0:
                batch = await self._fill(batch)
            self._running += 1
            task = asyncio.get_running_loop().create_task(self._execute(batch))
            self._inflight.add(task)
            task.add_done_callback(self._inflight.discard)

    async def _execute(self, batch: list[_Pending]) -> None:
        started = time.perf_counter_ns()
        try:
            loop = asyncio.get_running_loop()
            results, timings = await loop.run_in_executor(self._executor, self._run_batch, batch)
        except Exception as exc:
            error = exc if isinstance(exc, ServeError) else InferenceFailed(f"inference failed: {exc}")
            for pending in batch:
                if not pending.future.done():
                    pending.future.set_exception(error)
            return
        finally:
            self._running -= 1
            self._slots.release()
        size = sum(p.rows for p in batch)
        compute_input, compute_infer, compute_output = timings
        for pending, outputs in zip(batch, results, strict=True):
            timing = BatchTiming(started - pending.enqueued_ns, compute_input, compute_infer, compute_output, size)
            if not pending.future.done():
                pending.future.set_result((outputs, timing))
        if self._on_batch is not None:
            self._on_batch(size, BatchTiming(0, compute_input, compute_infer, compute_output, size))

    def _run_batch(self, batch: list[_Pending]) -> tuple[list[dict[str, np.ndarray]], tuple[int, int, int]]:
        t0 = time.perf_counter_ns()
        if len(batch) == 1:
            feeds = batch[0].inputs
        else:
            feeds = {name: np.concatenate([p.inputs[name] for p in batch]) for name in batch[0].inputs}
        t1 = time.perf_counter_ns()
        outputs = self._run(feeds)
        t2 = time.perf_counter_ns()
        if len(batch) == 1:
            split = [outputs]
        else:
            total = sum(p.rows for p in batch)
            for name, array in outputs.items():
                if array.ndim == 0 or array.shape[0] != total:
                    raise InferenceFailed(
                        f"output '{name}' has shape {list(array.shape)}; expected {total} rows to split the batch"
                    )
            split = []
            offset = 0
            for pending in batch:
                split.append({name: array[offset : offset + pending.rows] for name, array in outputs.items()})
                offset += pending.rows
        t3 = time.perf_counter_ns()
        return split, (t1 - t0, t2 - t1, t3 - t2)

    async def close(self, reason: str = "model is being unloaded") -> None:
        """Stop taking requests, let running batches finish, fail whatever still waits."""
        self._closed = True
        if self._loop_task is not None:
            self._loop_task.cancel()
        if self._inflight:
            await asyncio.gather(*self._inflight, return_exceptions=True)
        while self._queue:
            pending = self._queue.popleft()
            if not pending.future.done():
                pending.future.set_exception(Unavailable(reason))
        self._executor.shutdown(wait=False)
