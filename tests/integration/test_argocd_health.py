"""The Argo CD health check, run by a real Lua 5.1 interpreter on sample ModelDeployments."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ARGOCD = Path(__file__).parents[2] / "examples" / "argocd"
HEALTH = ARGOCD / "modeldeployment-health.lua"
LUA = shutil.which("lua5.1")
pytestmark = pytest.mark.skipif(LUA is None, reason="lua5.1 is installed by `make install`")


def lua_literal(value: Any) -> str:
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # JSON string escapes are valid Lua 5.1 escapes for these samples
    if isinstance(value, list):
        return "{" + ", ".join(lua_literal(v) for v in value) + "}"
    return "{" + ", ".join(f"[{json.dumps(k)}] = {lua_literal(v)}" for k, v in value.items()) + "}"


def health(obj: dict[str, Any], script: str | None = None) -> tuple[str, str]:
    program = (
        f"obj = {lua_literal(obj)}\n"
        f"local check = assert(loadstring({json.dumps(script or HEALTH.read_text())}))\n"
        "local hs = check()\nprint(hs.status)\nprint(hs.message)\n"
    )
    out = subprocess.run([LUA, "-"], input=program, capture_output=True, text=True, timeout=10)
    assert out.returncode == 0, out.stderr
    status, message = out.stdout.rstrip("\n").split("\n", 1)
    return status, message


def md(generation: int = 2, **status: Any) -> dict[str, Any]:
    return {"apiVersion": "modeldeploy.io/v1alpha1", "kind": "ModelDeployment",
            "metadata": {"name": "m", "generation": generation}, "status": status or None}  # fmt: skip


def cond(type_: str, status: str, reason: str = "", message: str = "") -> dict[str, Any]:
    return {"type": type_, "status": status, "reason": reason, "message": message}


READY = cond("Ready", "True", "Available", "2/2 serving pods ready")
CASES = [
    ("healthy", md(observedGeneration=2, phase="Succeeded", conditions=[READY, cond("Degraded", "False")]), "Healthy", "Available"),
    ("no status yet", md(), "Progressing", "Waiting for the operator"),
    ("generation lag", md(observedGeneration=1, phase="Succeeded", conditions=[READY]), "Progressing", "generation 2"),
    ("canary running", md(observedGeneration=2, phase="Progressing", canary={"weight": 25},
                          conditions=[READY, cond("Progressing", "True", "CanaryStep", "step 2 of 3")]), "Progressing", "canary at 25%"),
    ("pods starting", md(observedGeneration=2, phase="Progressing", conditions=[cond("Ready", "False", "PodsNotReady", "0/2")]), "Progressing", "PodsNotReady"),
    ("paused", md(observedGeneration=2, phase="Paused", conditions=[READY, cond("Progressing", "Unknown", "Inconclusive", "3 inconclusive analyses")]), "Suspended", "Inconclusive"),
    ("rolled back", md(observedGeneration=2, phase="RolledBack", conditions=[READY, cond("Degraded", "True", "RolledBack", "error-rate 0.1 > 0.01")]), "Degraded", "error-rate 0.1 > 0.01"),
    ("invalid spec", md(observedGeneration=2, phase="Failed", conditions=[cond("Ready", "False", "InvalidSpec", "spec.gpu.count: bad"),
                                                                            cond("Degraded", "True", "InvalidSpec", "spec.gpu.count: bad")]), "Degraded", "InvalidSpec: spec.gpu.count"),
]  # fmt: skip


@pytest.mark.parametrize(("obj", "expected", "message"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_health_states(obj: dict[str, Any], expected: str, message: str) -> None:
    status, text = health(obj)
    assert status == expected
    assert message in text


def test_argocd_cm_carries_the_script_verbatim() -> None:
    cm = yaml.safe_load((ARGOCD / "argocd-cm.yaml").read_text())
    embedded = cm["data"]["resource.customizations.health.modeldeploy.io_ModelDeployment"]
    assert embedded == HEALTH.read_text()
    assert health(md(observedGeneration=2, conditions=[READY]), script=embedded)[0] == "Healthy"
