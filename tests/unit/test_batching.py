"""The dynamic batcher in isolation: merging, splitting, the bounded queue, failures."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from modelserve.batching import DynamicBatcher
from modelserve.errors import InferenceFailed, Unavailable


class Recorder:
    """A model that doubles its input and records the batch sizes it ran."""

    def __init__(self, gate: threading.Event | None = None, fail: bool = False) -> None:
        self.batches: list[int] = []
        self.gate = gate
        self.fail = fail

    def __call__(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.gate is not None:
            self.gate.wait(5)
        self.batches.append(feeds["x"].shape[0])
        if self.fail:
            raise RuntimeError("kernel exploded")
        return {"y": feeds["x"] * 2}


def rows(value: float, n: int = 1) -> dict[str, np.ndarray]:
    return {"x": np.full((n, 3), value, np.float32)}


async def test_lone_request_runs_at_once_despite_a_long_window() -> None:
    model = Recorder()
    batcher = DynamicBatcher(model, max_batch_size=8, max_queue_delay_us=2_000_000)
    loop = asyncio.get_running_loop()
    started = loop.time()
    outputs, timing = await batcher.submit(rows(1))
    assert loop.time() - started < 0.5
    np.testing.assert_array_equal(outputs["y"], np.full((1, 3), 2, np.float32))
    assert timing.batch_size == 1
    await batcher.close()


async def test_queued_requests_are_merged_and_split_back() -> None:
    gate = threading.Event()
    model = Recorder(gate)
    batcher = DynamicBatcher(model, max_batch_size=8)
    first = asyncio.ensure_future(batcher.submit(rows(0)))
    await asyncio.sleep(0.05)  # the first request occupies the only instance
    rest = [asyncio.ensure_future(batcher.submit(rows(i, n=2))) for i in range(1, 4)]
    await asyncio.sleep(0.05)
    gate.set()
    results = await asyncio.gather(first, *rest)
    assert model.batches == [1, 6]
    for i, (outputs, timing) in enumerate(results[1:], start=1):
        np.testing.assert_array_equal(outputs["y"], np.full((2, 3), 2 * i, np.float32))
        assert timing.batch_size == 6
    await batcher.close()


async def test_batches_never_exceed_max_batch_size() -> None:
    gate = threading.Event()
    model = Recorder(gate)
    batcher = DynamicBatcher(model, max_batch_size=4)
    tasks = [asyncio.ensure_future(batcher.submit(rows(i, n=3))) for i in range(4)]
    await asyncio.sleep(0.05)
    gate.set()
    await asyncio.gather(*tasks)
    assert max(model.batches) <= 4
    await batcher.close()


async def test_different_shapes_are_not_merged() -> None:
    gate = threading.Event()
    model = Recorder(gate)
    batcher = DynamicBatcher(model, max_batch_size=8)
    first = asyncio.ensure_future(batcher.submit(rows(0)))
    await asyncio.sleep(0.05)
    other = asyncio.ensure_future(batcher.submit({"x": np.ones((1, 5), np.float32)}))
    same = asyncio.ensure_future(batcher.submit(rows(1)))
    await asyncio.sleep(0.05)
    gate.set()
    await asyncio.gather(first, other, same)
    assert sorted(model.batches) == [1, 1, 1]
    await batcher.close()


async def test_full_queue_refuses_at_once() -> None:
    gate = threading.Event()
    batcher = DynamicBatcher(Recorder(gate), max_batch_size=1, max_queue_size=2)
    running = asyncio.ensure_future(batcher.submit(rows(0)))
    await asyncio.sleep(0.05)
    queued = [asyncio.ensure_future(batcher.submit(rows(i))) for i in (1, 2)]
    await asyncio.sleep(0)
    with pytest.raises(Unavailable, match="queue is full"):
        await batcher.submit(rows(3))
    gate.set()
    await asyncio.gather(running, *queued)
    await batcher.close()


async def test_failing_batch_fails_every_waiter_and_batcher_goes_on() -> None:
    gate = threading.Event()
    model = Recorder(gate, fail=True)
    batcher = DynamicBatcher(model, max_batch_size=8)
    first = asyncio.ensure_future(batcher.submit(rows(0)))
    await asyncio.sleep(0.05)
    merged = [asyncio.ensure_future(batcher.submit(rows(i))) for i in range(3)]
    await asyncio.sleep(0.05)
    gate.set()
    results = await asyncio.gather(first, *merged, return_exceptions=True)
    assert all(isinstance(r, InferenceFailed) and "kernel exploded" in str(r) for r in results)
    model.fail = False
    outputs, _ = await batcher.submit(rows(5))
    np.testing.assert_array_equal(outputs["y"], np.full((1, 3), 10, np.float32))
    await batcher.close()


async def test_close_fails_queued_requests() -> None:
    gate = threading.Event()
    batcher = DynamicBatcher(Recorder(gate), max_batch_size=1)
    running = asyncio.ensure_future(batcher.submit(rows(0)))
    await asyncio.sleep(0.05)
    queued = asyncio.ensure_future(batcher.submit(rows(1)))
    await asyncio.sleep(0)
    closing = asyncio.ensure_future(batcher.close("model was unloaded"))
    await asyncio.sleep(0.05)
    gate.set()
    await closing
    await running
    with pytest.raises(Unavailable, match="unloaded"):
        await queued
    with pytest.raises(Unavailable):
        await batcher.submit(rows(2))


async def test_window_gathers_requests_under_load() -> None:
    """With two instances, a batch formed while another runs waits for company."""
    gate = threading.Event()
    model = Recorder(gate)
    batcher = DynamicBatcher(model, max_batch_size=8, max_queue_delay_us=200_000, instances=2)
    busy = asyncio.ensure_future(batcher.submit(rows(0)))
    await asyncio.sleep(0.05)
    followers = []
    for i in range(4):
        followers.append(asyncio.ensure_future(batcher.submit(rows(i))))
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.3)
    gate.set()
    await asyncio.gather(busy, *followers)
    assert sorted(model.batches) == [1, 4]
    await batcher.close()
