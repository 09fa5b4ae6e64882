"""Canary wiring in the real operator on kmock: tracks, replica ratio, commands, promote, roll back.

The analysis itself needs Prometheus (tests/integration/test_prometheus_provider.py covers
the provider); here no provider is configured, so the canary waits at its step and moves
only on the modeldeploy.io/rollout annotation.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import kmock
import pytest

from modeldeploy import canary, names
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

pytestmark = pytest.mark.timeout(90)
DEPLOY = "apps/v1/deployments"
ROLLOUT = {"strategy": "Canary", "steps": [25, 50], "interval": "1s", "failureLimit": 1}


def md_status(emulator: kmock.KubernetesEmulator, name: str) -> dict[str, Any]:
    return (obj(emulator, MD_RESOURCE, "ml", name) or {}).get("status", {})


@contextlib.asynccontextmanager
async def canary_running(emulator: kmock.KubernetesEmulator, name: str):
    stop = asyncio.Event()
    kubelet = asyncio.create_task(mark_deployments_ready(emulator, stop))
    try:
        async with running_operator(emulator, provider=None, resync_seconds=1):
            await create(emulator, model_deployment(name, replicas=4, rollout=ROLLOUT))
            await eventually(lambda: md_status(emulator, name).get("phase") == "Succeeded", what="v1 ready")
            v2 = {"model": {"name": "mlp", "storageUri": "s3://models/mlp", "version": 2}}
            await patch(emulator, "ml", name, {"metadata": {"generation": 2}, "spec": v2})
            yield
    finally:
        stop.set()
        await kubelet


async def test_new_revision_starts_a_canary_then_abort_rolls_back(kmock: kmock.KubernetesEmulator) -> None:
    async with canary_running(kmock, "fraud"):
        canary_dep = await eventually(lambda: obj(kmock, DEPLOY, "ml", "fraud-canary"), what="canary Deployment")
        stable, can = canary.apportion(4, 25)
        assert canary_dep["spec"]["replicas"] == can
        assert canary_dep["spec"]["template"]["metadata"]["labels"][names.LABEL_TRACK] == "canary"
        await eventually(lambda: obj(kmock, DEPLOY, "ml", "fraud")["spec"]["replicas"] == stable, what="stable scaled")
        assert (
            "--max-batch-size=8"
            in obj(kmock, DEPLOY, "ml", "fraud")["spec"]["template"]["spec"]["containers"][0]["command"]
        )
        st = await eventually(lambda: md_status(kmock, "fraud").get("canary") and md_status(kmock, "fraud"))
        assert st["phase"] == "Progressing" and st["canary"]["weight"] == 25
        assert st["stableRevision"] != st["canary"]["revision"]
        await patch(kmock, "ml", "fraud", {"metadata": {"annotations": {"modeldeploy.io/rollout": "abort"}}})
        st = await eventually(
            lambda: md_status(kmock, "fraud").get("phase") == "RolledBack" and md_status(kmock, "fraud")
        )
        degraded = next(c for c in st["conditions"] if c["type"] == "Degraded")
        assert degraded["status"] == "True" and "aborted" in degraded["message"]
        assert st["rejectedRevision"] == st["revision"]
        await eventually(lambda: obj(kmock, DEPLOY, "ml", "fraud-canary") is None, what="canary removed")
        await eventually(lambda: obj(kmock, DEPLOY, "ml", "fraud")["spec"]["replicas"] == 4, what="stable back to 4")
        stable_dep = obj(kmock, DEPLOY, "ml", "fraud")
        assert stable_dep["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/version"] == "1"


async def test_promote_command_moves_the_stable_to_the_new_revision(kmock: kmock.KubernetesEmulator) -> None:
    async with canary_running(kmock, "vision"):
        await eventually(lambda: obj(kmock, DEPLOY, "ml", "vision-canary"), what="canary Deployment")
        await eventually(lambda: md_status(kmock, "vision").get("phase") == "Progressing", what="canary status")
        await patch(kmock, "ml", "vision", {"metadata": {"annotations": {"modeldeploy.io/rollout": "promote"}}})
        await eventually(lambda: md_status(kmock, "vision").get("phase") == "Succeeded", what="promoted", timeout=20)
        stable = obj(kmock, DEPLOY, "ml", "vision")
        assert stable["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/version"] == "2"
        assert stable["spec"]["replicas"] == 4
        await eventually(lambda: obj(kmock, DEPLOY, "ml", "vision-canary") is None, what="canary removed")
        assert not md_status(kmock, "vision").get("canary")
