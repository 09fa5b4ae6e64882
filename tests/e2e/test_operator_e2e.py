"""The operator against a real API server: children, status, drift, pruning, garbage collection.

Pods never need to start: only what the API server and its controllers (garbage collector)
do is checked. The operator runs as `modeldeploy run` on the current kubeconfig, watching one
scratch namespace.
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import yaml

from tests.e2e.conftest import ROOT, kubectl, kubectl_json


@pytest.fixture(scope="module")
def operator_namespace(crd_installed: None) -> Iterator[str]:
    name = f"md-op-e2e-{uuid.uuid4().hex[:8]}"
    kubectl("create", "namespace", name)
    process = subprocess.Popen(
        [sys.executable, "-m", "modeldeploy.cli", "run", "-n", name, "--metrics-port=0", "--liveness=",
         "--resync-seconds=5"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    yield name
    process.terminate()
    process.wait(30)
    kubectl("delete", "namespace", name, "--wait=false", check=False)


def wait_for(check: Callable[[], Any], timeout: float = 60, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except (AssertionError, KeyError, StopIteration) as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(1)
    raise AssertionError(f"timed out waiting for {what}: {last!r}")


def get(kind: str, ns: str, name: str) -> dict[str, Any] | None:
    result = kubectl("get", kind, name, "-n", ns, "-o", "json", "--show-managed-fields", check=False)
    return yaml.safe_load(result.stdout) if result.returncode == 0 else None


def apply(ns: str, name: str, **spec: Any) -> None:
    body = {"apiVersion": "modeldeploy.io/v1alpha1", "kind": "ModelDeployment", "metadata": {"name": name},
            "spec": {"model": {"name": "m", "storageUri": "s3://bucket/m"}, **spec}}  # fmt: skip
    kubectl("apply", "--server-side", "--field-manager=e2e-user", "-n", ns, "-f", "-", input=yaml.safe_dump(body))


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any]:
    return next(c for c in obj.get("status", {}).get("conditions", []) if c["type"] == type_)


def test_example_reconciles_into_owned_children_and_status(operator_namespace: str) -> None:
    ns = operator_namespace
    kubectl("apply", "--server-side", "-n", ns, "-f", str(ROOT / "examples" / "gpu-autoscaling.yaml"))
    md = kubectl_json("get", "md", "resnet50", "-n", ns, "--show-managed-fields")
    for kind in ("deployment", "service", "hpa", "pdb"):
        child = wait_for(lambda kind=kind: get(kind, ns, "resnet50"), what=f"{kind}/resnet50")
        (owner,) = child["metadata"]["ownerReferences"]
        assert owner["uid"] == md["metadata"]["uid"] and owner["controller"] is True
        managers = {m["manager"] for m in child["metadata"]["managedFields"]}
        assert "modeldeploy" in managers, managers
    deployment = get("deployment", ns, "resnet50")
    assert deployment["spec"]["template"]["spec"]["nodeSelector"]["nvidia.com/gpu.product"] == "NVIDIA-A100-SXM4-40GB"
    status = wait_for(lambda: (get("md", ns, "resnet50") or {}).get("status", {}).get("observedGeneration") == 1
                      and get("md", ns, "resnet50")["status"], what="status")  # fmt: skip
    assert condition({"status": status}, "Progressing")["status"] == "True"  # pods never start here
    assert condition({"status": status}, "Ready")["status"] == "False"
    assert status["url"].startswith("http://resnet50.")
    md = kubectl_json("get", "md", "resnet50", "-n", ns, "--show-managed-fields")
    assert not any(
        m["manager"] == "modeldeploy" and "f:spec" in m.get("fieldsV1", {}) for m in md["metadata"]["managedFields"]
    ), "the operator must never own spec fields"


def test_spec_change_drift_and_pruning(operator_namespace: str) -> None:
    ns = operator_namespace
    apply(ns, "drift", autoscaling={"minReplicas": 1, "maxReplicas": 3, "targetCPUUtilization": 50})
    wait_for(lambda: get("hpa", ns, "drift"), what="HPA")
    kubectl(
        "patch",
        "deployment",
        "drift",
        "-n",
        ns,
        "--type=merge",
        "-p",
        '{"spec":{"template":{"metadata":{"labels":{"modeldeploy.io/track":"tampered"}}}}}',
        check=False,
    )
    kubectl("delete", "service", "drift", "-n", ns)
    wait_for(lambda: get("service", ns, "drift"), what="Service restored")
    apply(ns, "drift", replicas=1)
    wait_for(lambda: get("hpa", ns, "drift") is None, what="HPA pruned")
    wait_for(lambda: get("md", ns, "drift")["status"]["observedGeneration"] == 2, what="observedGeneration 2")
    assert get("deployment", ns, "drift")["spec"]["replicas"] == 1


def test_deleting_the_model_deployment_garbage_collects_children(operator_namespace: str) -> None:
    ns = operator_namespace
    apply(ns, "gone", replicas=2)
    wait_for(lambda: get("pdb", ns, "gone"), what="PDB")
    kubectl("delete", "md", "gone", "-n", ns, "--wait=true", "--timeout=60s")
    for kind in ("deployment", "service", "pdb"):
        wait_for(lambda kind=kind: get(kind, ns, "gone") is None, what=f"{kind} garbage-collected")


def test_invalid_spec_past_the_schema_is_reported(operator_namespace: str) -> None:
    """A spec the CRD accepts but the operator cannot serve: a PVC URI without a claim."""
    ns = operator_namespace
    apply(ns, "noclaim", model={"name": "m", "storageUri": "pvc:///models"})
    status = wait_for(lambda: get("md", ns, "noclaim").get("status", {}).get("conditions") and get("md", ns, "noclaim")["status"],
                      what="InvalidSpec")  # fmt: skip
    assert condition({"status": status}, "Ready")["reason"] == "InvalidSpec"
    assert get("deployment", ns, "noclaim") is None


def test_status_conflicts_do_not_lose_user_spec(operator_namespace: str) -> None:
    ns = operator_namespace
    apply(ns, "owned", replicas=1)
    wait_for(lambda: get("md", ns, "owned").get("status"), what="status")
    apply(ns, "owned", replicas=3)  # a user write racing the operator's status writes
    wait_for(lambda: get("deployment", ns, "owned")["spec"]["replicas"] == 3, what="replicas 3")
    assert get("md", ns, "owned")["spec"]["replicas"] == 3


def test_canary_starts_waits_for_ready_pods_and_aborts(operator_namespace: str) -> None:
    """Pods never start here: the canary must appear, hold its weight, and roll back on abort."""
    ns = operator_namespace
    rollout = {"strategy": "Canary", "steps": [25, 50], "interval": "10s"}
    apply(ns, "canary", replicas=4, rollout=rollout)
    wait_for(lambda: get("deployment", ns, "canary"), what="stable Deployment")
    apply(ns, "canary", replicas=4, rollout=rollout, model={"name": "m", "storageUri": "s3://bucket/m", "version": 2})
    canary_dep = wait_for(lambda: get("deployment", ns, "canary-canary"), what="canary Deployment")
    assert canary_dep["spec"]["template"]["metadata"]["labels"]["modeldeploy.io/track"] == "canary"
    assert canary_dep["metadata"]["ownerReferences"][0]["kind"] == "ModelDeployment"
    status = wait_for(lambda: get("md", ns, "canary")["status"].get("canary") and get("md", ns, "canary")["status"])
    assert status["canary"]["step"] == 0, "weights never move before the canary's pods are ready"
    kubectl("annotate", "md", "canary", "-n", ns, "modeldeploy.io/rollout=abort", "--overwrite")
    wait_for(lambda: get("md", ns, "canary")["status"]["phase"] == "RolledBack", what="rolled back")
    wait_for(lambda: get("deployment", ns, "canary-canary") is None, what="canary Deployment deleted")
    assert get("md", ns, "canary")["spec"]["model"]["version"] == 2, "the operator never edits spec"
