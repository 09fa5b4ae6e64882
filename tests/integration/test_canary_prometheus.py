"""Canary analysis end to end: real Prometheus, real modelserve tracks, the real operator on kmock.

Two modelserve processes stand for the stable and canary pods (Prometheus attaches the
track labels a pod's labels would give it); a thread sends load to both; the operator
reconciles against kmock, with a task standing in for the Deployment controller, and
analyses through the real Prometheus provider every interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kmock
import pytest

from modeldeploy.prometheus import PrometheusProvider
from modelserve import examples
from modelserve.launcher import ServingProcess
from tests.integration.operator_env import (
    MD_RESOURCE,
    create,
    eventually,
    mark_deployments_ready,
    model_deployment,
    obj,
    patch,
    running_operator,
)
from tests.integration.prometheus_env import PROMETHEUS, running_prometheus, simple_load

pytestmark = [
    pytest.mark.skipif(PROMETHEUS is None, reason="prometheus is installed by `make install`"),
    pytest.mark.timeout(300),  # bounds a run on a loaded 2-core machine; the waits below are what they need
]
ROLLOUT = {"strategy": "Canary", "steps": [50], "interval": "3s", "minRequestCount": 5, "failureLimit": 1,
           "inconclusiveLimit": 2, "maxErrorRate": 0.02, "maxLatencyP99Ms": 200}  # fmt: skip


@contextlib.contextmanager
def tracks(tmp_path: Path, name: str, canary_env: dict[str, str], load_canary: bool) -> Iterator[tuple[str, Any]]:
    repo = examples.write_repository(tmp_path / "models", ["simple"])
    stable = ServingProcess(repo).start()
    canary = ServingProcess(repo, env=canary_env).start()
    stop = threading.Event()
    loaders = [threading.Thread(target=simple_load, args=(stable.http_url, stop, 0.02), daemon=True)]
    if load_canary:
        loaders.append(threading.Thread(target=simple_load, args=(canary.http_url, stop, 0.02), daemon=True))
    labels = {"namespace": "ml", "modeldeploy_deployment": name}
    try:
        with running_prometheus(
            tmp_path, [(stable.metrics_port, {**labels, "modeldeploy_track": "stable"}),
                       (canary.metrics_port, {**labels, "modeldeploy_track": "canary"})]
        ) as (url, process):  # fmt: skip
            for loader in loaders:
                loader.start()
            yield url, process
    finally:
        stop.set()
        for loader in loaders:
            loader.join(5)
        stable.stop()
        canary.stop()


def phase(emulator: kmock.KubernetesEmulator, name: str) -> str | None:
    return ((obj(emulator, MD_RESOURCE, "ml", name) or {}).get("status") or {}).get("phase")


def status_of(emulator: kmock.KubernetesEmulator, name: str) -> dict[str, Any]:
    return (obj(emulator, MD_RESOURCE, "ml", name) or {}).get("status") or {}


@contextlib.asynccontextmanager
async def rollout_to_v2(emulator: kmock.KubernetesEmulator, url: str, name: str):
    stop = asyncio.Event()
    kubelet = asyncio.create_task(mark_deployments_ready(emulator, stop))
    try:
        async with running_operator(emulator, provider=PrometheusProvider(url, timeout=2), resync_seconds=1) as memo:
            await create(emulator, model_deployment(name, replicas=2, rollout=ROLLOUT))
            await eventually(lambda: phase(emulator, name) == "Succeeded", what="v1 serving", timeout=60)
            v2 = {"model": {"name": "mlp", "storageUri": "s3://models/mlp", "version": 2}}
            await patch(emulator, "ml", name, {"metadata": {"generation": 2}, "spec": v2})
            await eventually(lambda: status_of(emulator, name).get("canary"), what="canary started", timeout=60)
            yield memo
    finally:
        stop.set()
        await kubelet


async def test_healthy_canary_is_promoted(kmock: kmock.KubernetesEmulator, tmp_path: Path) -> None:
    with tracks(tmp_path, "healthy", {}, load_canary=True) as (url, _):
        async with rollout_to_v2(kmock, url, "healthy"):
            await eventually(lambda: phase(kmock, "healthy") == "Succeeded", what="promotion", timeout=90)
            stable = obj(kmock, "apps/v1/deployments", "ml", "healthy")
            assert stable["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/version"] == "2"
            await eventually(
                lambda: obj(kmock, "apps/v1/deployments", "ml", "healthy-canary") is None, what="canary removed"
            )


async def test_failing_canary_is_rolled_back(kmock: kmock.KubernetesEmulator, tmp_path: Path) -> None:
    with tracks(tmp_path, "failing", {"MODELSERVE_FAULT_FAILURE_RATIO": "0.1"}, load_canary=True) as (url, _):
        async with rollout_to_v2(kmock, url, "failing") as memo:
            await eventually(lambda: phase(kmock, "failing") == "RolledBack", what="rollback", timeout=90)
            st = status_of(kmock, "failing")
            degraded = next(c for c in st["conditions"] if c["type"] == "Degraded")
            assert degraded["status"] == "True" and "error-rate=" in degraded["message"]
            assert "nv_inference_request_failure" in degraded["message"], "the failing query is in the condition"
            assert st["rejectedRevision"] == st["revision"]
            await eventually(lambda: obj(kmock, "apps/v1/deployments", "ml", "failing-canary") is None)
            assert memo.metrics.rollbacks._value.get() == 1
            assert memo.metrics.analyses.labels("Fail")._value.get() >= 1


async def test_slow_canary_is_rolled_back(kmock: kmock.KubernetesEmulator, tmp_path: Path) -> None:
    with tracks(tmp_path, "slow", {"MODELSERVE_FAULT_LATENCY_MS": "400"}, load_canary=True) as (url, _):
        async with rollout_to_v2(kmock, url, "slow"):
            await eventually(lambda: phase(kmock, "slow") == "RolledBack", what="rollback", timeout=90)
            degraded = next(c for c in status_of(kmock, "slow")["conditions"] if c["type"] == "Degraded")
            assert "latency-p99-ms=" in degraded["message"]


async def test_canary_without_traffic_is_never_promoted(kmock: kmock.KubernetesEmulator, tmp_path: Path) -> None:
    with tracks(tmp_path, "idle", {}, load_canary=False) as (url, _):
        async with rollout_to_v2(kmock, url, "idle"):
            await eventually(lambda: phase(kmock, "idle") == "Paused", what="paused for want of traffic", timeout=90)
            assert (
                "inconclusive"
                in next(c for c in status_of(kmock, "idle")["conditions"] if c["type"] == "Progressing")["message"]
            )
            await asyncio.sleep(4)
            assert phase(kmock, "idle") == "Paused"


async def test_prometheus_going_away_pauses_the_rollout(kmock: kmock.KubernetesEmulator, tmp_path: Path) -> None:
    with tracks(tmp_path, "blind", {}, load_canary=True) as (url, process):
        async with rollout_to_v2(kmock, url, "blind"):
            process.terminate()
            process.wait(10)
            await eventually(lambda: phase(kmock, "blind") == "Paused", what="paused on provider error", timeout=90)
            message = next(c for c in status_of(kmock, "blind")["conditions"] if c["type"] == "Progressing")["message"]
            assert "unreachable" in message
            assert obj(kmock, "apps/v1/deployments", "ml", "blind-canary") is not None, (
                "neither promoted nor rolled back"
            )
