"""The operator's own loops (resync, rollout) act on each object as the watch shows it when its
turn comes, not on a copy taken when the pass began."""

from __future__ import annotations

import asyncio
from typing import Any

import kopf
import pytest

from modeldeploy import handlers
from modeldeploy.memory import Memory
from modeldeploy.settings import OperatorSettings


def body(name: str, version: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "ml", "uid": f"u-{name}", "resourceVersion": version}}


@pytest.fixture
def memo() -> kopf.Memo:
    """What the handlers' startup sets up: settings (a 10 ms resync period) and memory of "a" and "b"."""
    memo = kopf.Memo()
    memo.settings = OperatorSettings(metrics_port=0, liveness_endpoint=None, resync_seconds=0.01)
    memo.memory = Memory()
    for name in ("a", "b"):
        memo.memory.seen(body(name, "1"))
    return memo


async def test_resync_reconciles_the_body_the_watch_shows_at_its_turn(
    monkeypatch: pytest.MonkeyPatch, memo: kopf.Memo
) -> None:
    reconciled: list[tuple[str, str]] = []
    done = asyncio.Event()

    async def record(seen: dict[str, Any], memo_: kopf.Memo, what: str) -> None:
        assert what == "resync"
        reconciled.append((seen["metadata"]["name"], seen["metadata"]["resourceVersion"]))
        if len(reconciled) == 1:  # the watch brings a newer version of the other object meanwhile
            other = "b" if seen["metadata"]["name"] == "a" else "a"
            memo_.memory.seen(body(other, "2"))
        elif len(reconciled) == 2:
            done.set()

    monkeypatch.setattr(handlers, "_reconcile_in_background", record)
    loop = asyncio.create_task(handlers._resync_loop(memo))
    try:
        await asyncio.wait_for(done.wait(), 5)
    finally:
        loop.cancel()
    assert reconciled[0][1] == "1" and reconciled[1][1] == "2", reconciled
    assert {name for name, _ in reconciled} == {"a", "b"}


async def test_resync_skips_an_object_deleted_during_the_pass(monkeypatch: pytest.MonkeyPatch, memo: kopf.Memo) -> None:
    reconciled: list[str] = []

    async def record(seen: dict[str, Any], memo_: kopf.Memo, what: str) -> None:
        reconciled.append(seen["metadata"]["name"])
        if len(reconciled) == 1:
            other = "b" if seen["metadata"]["name"] == "a" else "a"
            memo_.memory.forget(body(other, "1"))

    monkeypatch.setattr(handlers, "_reconcile_in_background", record)
    loop = asyncio.create_task(handlers._resync_loop(memo))
    await asyncio.sleep(0.3)  # several passes of a 0.01 s period
    loop.cancel()
    first = reconciled[0]
    assert reconciled and set(reconciled) == {first}, "the deleted object is never reconciled again"
