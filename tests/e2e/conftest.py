"""e2e fixtures: the real kubectl and helm from the venv, the current kubeconfig, scratch namespaces.

The suite runs against whatever cluster the kubeconfig points at (the real control plane of
shared/realk8s in CI, or kind, k3d, a real cluster). Pods of the modelserve image never start
anywhere here; on shared/realk8s the fake kubelet reports them Running and Ready instead, except
pods carrying NEVER_READY_LABEL (.ci/run passes it as `--unready-label`).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).parents[2]
BIN = Path(sys.executable).parent
KUBECTL = str(BIN / "kubectl")
HELM = str(BIN / "helm")
CRD_NAME = "modeldeployments.modeldeploy.io"
FAKE_NODE = "fake-node"  # the node shared/realk8s/fake-kubelet.py registers
NEVER_READY_LABEL = ("e2e.modeldeploy.io/never-ready", "true")


def pytest_configure(config: pytest.Config) -> None:
    """The suite applies CRDs with --force-conflicts and installs Helm releases: only where allowed."""
    if not config.getoption("--with-e2e", default=False):
        return
    current = subprocess.run([KUBECTL, "config", "current-context"], capture_output=True, text=True).stdout.strip()
    allowed = os.environ.get("E2E_CONTEXT", "")
    if not current or allowed != current:
        pytest.exit(
            f"e2e refuses kubeconfig context {current or '(none)'!r}: it force-applies the ModelDeployment CRD and "
            f"installs Helm releases; set E2E_CONTEXT={current or '<context>'} to allow it",
            returncode=4,
        )


def kubectl(*args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([KUBECTL, *args], input=input, capture_output=True, text=True, timeout=120)
    if check and result.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)} failed: {result.stderr}")
    return result


def kubectl_json(*args: str) -> Any:
    return json.loads(kubectl(*args, "-o", "json").stdout)


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([HELM, *args], capture_output=True, text=True, timeout=300)
    if check and result.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed: {result.stderr}")
    return result


def get(kind: str, ns: str, name: str) -> dict[str, Any] | None:
    result = kubectl("get", kind, name, "-n", ns, "-o", "json", "--show-managed-fields", check=False)
    return yaml.safe_load(result.stdout) if result.returncode == 0 else None


def wait_for(check: Callable[[], Any], timeout: float = 60, what: str = "condition", period: float = 1) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except (AssertionError, KeyError, StopIteration, TypeError, IndexError) as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(period)
    raise AssertionError(f"timed out waiting for {what}: {last!r}")


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any]:
    return next(c for c in obj.get("status", {}).get("conditions", []) if c["type"] == type_)


def install_crd() -> None:
    kubectl("apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds"))
    # On a fresh API server the CRD may have no status yet: kubectl wait then fails at once.
    wait_for(lambda: condition(kubectl_json("get", "crd", CRD_NAME), "Established")["status"] == "True",
             timeout=60, what="the CRD Established", period=0.2)  # fmt: skip


def fake_kubelet_running() -> bool:
    node = kubectl("get", "node", FAKE_NODE, "-o", "json", check=False)
    return node.returncode == 0


@pytest.fixture(scope="session")
def pods_become_ready() -> None:
    """Tests of readiness need pods that become Ready: the fake kubelet of shared/realk8s."""
    if not fake_kubelet_running():
        pytest.skip(
            f"no node {FAKE_NODE}: start shared/realk8s/fake-kubelet.py (the modelserve image is not built "
            "for this cluster, so its pods would never become Ready)"
        )


def scratch_namespace(prefix: str) -> str:
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    kubectl("create", "namespace", name)
    return name


@pytest.fixture(scope="session")
def crd_installed() -> None:
    install_crd()


@pytest.fixture
def namespace(crd_installed: None) -> Iterator[str]:
    name = scratch_namespace("md-e2e")
    yield name
    kubectl("delete", "namespace", name, "--wait=false", check=False)


def start_operator(*args: str, env: dict[str, str] | None = None, log: Path | None = None) -> subprocess.Popen[bytes]:
    """`modeldeploy run` on this machine (no image needed), with the given flags and environment."""
    out = log.open("wb") if log else subprocess.DEVNULL
    return subprocess.Popen(
        [sys.executable, "-m", "modeldeploy.cli", "run", *args],
        stdout=out,
        stderr=subprocess.STDOUT,
        env={**os.environ, **(env or {})},
    )


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)


def apply_md(ns: str, name: str, **spec: Any) -> None:
    """Server-side apply a ModelDeployment as a user would (its own field manager)."""
    body = {"apiVersion": "modeldeploy.io/v1alpha1", "kind": "ModelDeployment", "metadata": {"name": name},
            "spec": {"model": {"name": "m", "storageUri": "s3://bucket/m"}, **spec}}  # fmt: skip
    kubectl("apply", "--server-side", "--field-manager=e2e-user", "-n", ns, "-f", "-", input=yaml.safe_dump(body))


@contextlib.contextmanager
def operator_in_scratch_namespace(prefix: str, log_dir: Path) -> Iterator[str]:
    """A scratch namespace and `modeldeploy run` watching it (5 s resync), both gone afterwards."""
    name = scratch_namespace(prefix)
    process = start_operator("-n", name, "--metrics-port=0", "--liveness=", "--resync-seconds=5",
                             log=log_dir / "operator.log")  # fmt: skip
    try:
        yield name
    finally:
        stop(process)
        kubectl("delete", "namespace", name, "--wait=false", check=False)
