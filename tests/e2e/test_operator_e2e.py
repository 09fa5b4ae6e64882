"""The operator against a real API server: children, status, drift, pruning, garbage collection.

The operator runs as `modeldeploy run` on this machine against the current kubeconfig, watching
one scratch namespace. Where the fake kubelet runs (shared/realk8s), pods become Ready unless they
carry NEVER_READY_LABEL; the status must say which.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.conftest import (
    NEVER_READY_LABEL,
    ROOT,
    apply_md,
    condition,
    get,
    kubectl,
    kubectl_json,
    operator_in_scratch_namespace,
    wait_for,
)

EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
NEVER_READY = {"labels": {NEVER_READY_LABEL[0]: NEVER_READY_LABEL[1]}}


@pytest.fixture(scope="module")
def operator_namespace(crd_installed: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with operator_in_scratch_namespace("md-op-e2e", tmp_path_factory.mktemp("operator")) as name:
        yield name


def status_of(ns: str, name: str) -> dict[str, Any]:
    return (get("md", ns, name) or {}).get("status", {})


def deployment_ready(ns: str, name: str) -> bool:
    dep = get("deployment", ns, name) or {}
    want = dep.get("spec", {}).get("replicas", 0)
    return bool(want) and dep.get("status", {}).get("readyReplicas", 0) == want


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_every_example_reconciles_into_owned_children_with_a_truthful_status(
    operator_namespace: str, path: Path
) -> None:
    ns = operator_namespace
    name = yaml.safe_load(path.read_text())["metadata"]["name"]
    kubectl("apply", "--server-side", "-n", ns, "-f", str(path))  # as it is: no namespace edited in
    md = kubectl_json("get", "md", name, "-n", ns)
    kinds = ["deployment", "service", "pdb"] + (["hpa"] if "autoscaling" in md["spec"] else [])
    for kind in kinds:
        child = wait_for(lambda kind=kind: get(kind, ns, name), what=f"{kind}/{name}")
        (owner,) = child["metadata"]["ownerReferences"]
        assert owner["uid"] == md["metadata"]["uid"] and owner["controller"] is True
        managers = {m["manager"] for m in child["metadata"]["managedFields"]}
        assert "modeldeploy" in managers, managers
    status = wait_for(lambda: status_of(ns, name).get("observedGeneration") == 1 and status_of(ns, name),
                      what="status")  # fmt: skip
    assert status["url"].startswith(f"http://{name}.{ns}.svc")
    # Truthful: Ready follows the Deployment's ready pods (the fake kubelet makes them ready where it runs).
    wait_for(
        lambda: (condition({"status": status_of(ns, name)}, "Ready")["status"] == "True") == deployment_ready(ns, name),
        what="Ready agreeing with the Deployment",
    )
    md = kubectl_json("get", "md", name, "-n", ns, "--show-managed-fields")
    assert not any(
        m["manager"] == "modeldeploy" and "f:spec" in m.get("fieldsV1", {}) for m in md["metadata"]["managedFields"]
    ), "the operator must never own spec fields"
    if "nvidia" in path.stem or "gpu" in path.stem:
        template = get("deployment", ns, name)["spec"]["template"]["spec"]
        assert template["nodeSelector"]["nvidia.com/gpu.product"] == "NVIDIA-A100-SXM4-40GB"


def test_ready_follows_the_pods(operator_namespace: str, pods_become_ready: None) -> None:
    ns = operator_namespace
    apply_md(ns, "ready", replicas=2)
    wait_for(lambda: condition({"status": status_of(ns, "ready")}, "Ready")["status"] == "True", what="Ready=True")
    status = status_of(ns, "ready")
    assert status["readyReplicas"] == 2 and condition({"status": status}, "Ready")["reason"] == "Available"
    # A kubelet reports the pods unready (failing readiness probes): Ready must go False.
    pods = kubectl_json("get", "pods", "-n", ns, "-l", "app.kubernetes.io/instance=ready")["items"]
    assert len(pods) == 2
    for pod in pods:
        conditions = [
            {**c, "status": "False"} if c["type"] in ("Ready", "ContainersReady") else c
            for c in pod["status"]["conditions"]
        ]
        body = {"status": {"conditions": conditions}}
        kubectl("patch", "pod", pod["metadata"]["name"], "-n", ns, "--subresource=status", "--type=merge",
                "-p", json.dumps(body))  # fmt: skip
    wait_for(lambda: condition({"status": status_of(ns, "ready")}, "Ready")["status"] == "False", what="Ready=False")
    assert status_of(ns, "ready").get("readyReplicas", 0) == 0


def test_never_ready_pods_keep_ready_false(operator_namespace: str) -> None:
    ns = operator_namespace
    apply_md(ns, "unready", replicas=1, pod=NEVER_READY)
    status = wait_for(lambda: status_of(ns, "unready").get("conditions") and status_of(ns, "unready"), what="status")
    assert condition({"status": status}, "Ready")["status"] == "False"
    assert condition({"status": status}, "Progressing")["status"] == "True"


def test_spec_change_drift_and_pruning(operator_namespace: str) -> None:
    ns = operator_namespace
    apply_md(ns, "drift", autoscaling={"minReplicas": 1, "maxReplicas": 3, "targetCPUUtilization": 50})
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
    apply_md(ns, "drift", replicas=1)
    wait_for(lambda: get("hpa", ns, "drift") is None, what="HPA pruned")
    wait_for(lambda: get("md", ns, "drift")["status"]["observedGeneration"] == 2, what="observedGeneration 2")
    assert get("deployment", ns, "drift")["spec"]["replicas"] == 1


def test_deleting_the_model_deployment_garbage_collects_children(operator_namespace: str) -> None:
    ns = operator_namespace
    apply_md(ns, "gone", replicas=2)
    wait_for(lambda: get("pdb", ns, "gone"), what="PDB")
    kubectl("delete", "md", "gone", "-n", ns, "--wait=true", "--timeout=60s")
    for kind in ("deployment", "service", "pdb"):
        wait_for(lambda kind=kind: get(kind, ns, "gone") is None, what=f"{kind} garbage-collected")


def test_invalid_spec_past_the_schema_is_reported(operator_namespace: str) -> None:
    """A spec the CRD accepts but the operator cannot serve: a PVC URI without a claim."""
    ns = operator_namespace
    apply_md(ns, "noclaim", model={"name": "m", "storageUri": "pvc:///models"})
    status = wait_for(lambda: get("md", ns, "noclaim").get("status", {}).get("conditions") and get("md", ns, "noclaim")["status"],
                      what="InvalidSpec")  # fmt: skip
    assert condition({"status": status}, "Ready")["reason"] == "InvalidSpec"
    assert get("deployment", ns, "noclaim") is None


def test_status_conflicts_do_not_lose_user_spec(operator_namespace: str) -> None:
    ns = operator_namespace
    apply_md(ns, "owned", replicas=1)
    wait_for(lambda: get("md", ns, "owned").get("status"), what="status")
    apply_md(ns, "owned", replicas=3)  # a user write racing the operator's status writes
    wait_for(lambda: get("deployment", ns, "owned")["spec"]["replicas"] == 3, what="replicas 3")
    assert get("md", ns, "owned")["spec"]["replicas"] == 3


def test_canary_starts_waits_for_ready_pods_and_aborts(operator_namespace: str) -> None:
    """Pods never start here: the canary must appear, hold its weight, and roll back on abort."""
    ns = operator_namespace
    rollout = {"strategy": "Canary", "steps": [25, 50], "interval": "10s"}
    apply_md(ns, "canary", replicas=4, rollout=rollout, pod=NEVER_READY)
    wait_for(lambda: get("deployment", ns, "canary"), what="stable Deployment")
    apply_md(ns, "canary", replicas=4, rollout=rollout, pod=NEVER_READY,
          model={"name": "m", "storageUri": "s3://bucket/m", "version": 2})  # fmt: skip
    canary_dep = wait_for(lambda: get("deployment", ns, "canary-canary"), what="canary Deployment")
    assert canary_dep["spec"]["template"]["metadata"]["labels"]["modeldeploy.io/track"] == "canary"
    assert canary_dep["metadata"]["ownerReferences"][0]["kind"] == "ModelDeployment"
    status = wait_for(lambda: get("md", ns, "canary")["status"].get("canary") and get("md", ns, "canary")["status"])
    assert status["canary"]["step"] == 0, "weights never move before the canary's pods are ready"
    kubectl("annotate", "md", "canary", "-n", ns, "modeldeploy.io/rollout=abort", "--overwrite")
    wait_for(lambda: get("md", ns, "canary")["status"]["phase"] == "RolledBack", what="rolled back")
    wait_for(lambda: get("deployment", ns, "canary-canary") is None, what="canary Deployment deleted")
    assert get("md", ns, "canary")["spec"]["model"]["version"] == 2, "the operator never edits spec"
