"""The Helm chart on a real API server: install, upgrade, uninstall, and the operator under its RBAC.

The chart's operator pod never runs a process here (no image is built for this cluster); the
operator runs on this machine instead, with exactly the chart's arguments and environment and
with a kubeconfig holding a token of the chart's ServiceAccount (TokenRequest). So every API call
it makes is authorized by the chart's (Cluster)Role and nothing else: a missing verb fails the
lifecycle, and the operator log is checked for refusals.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.e2e.conftest import (
    CRD_NAME,
    NEVER_READY_LABEL,
    ROOT,
    apply_md,
    condition,
    get,
    helm,
    install_crd,
    kubectl,
    kubectl_json,
    scratch_namespace,
    start_operator,
    stop,
    wait_for,
)

CHART = str(ROOT / "charts" / "modeldeploy")
RELEASE = "md-e2e"
FULLNAME = f"{RELEASE}-modeldeploy"
NEVER_READY = {"labels": {NEVER_READY_LABEL[0]: NEVER_READY_LABEL[1]}}


@pytest.fixture(scope="module")
def chart_crd(crd_installed: None) -> Iterator[None]:
    """Whatever a test of this module does to the CRD, the suite gets it back afterwards."""
    yield
    install_crd()


def adopt_crd(release_namespace: str) -> None:
    """Helm's documented adoption of an existing object: its ownership labels and annotations."""
    kubectl("label", "crd", CRD_NAME, "--overwrite", "app.kubernetes.io/managed-by=Helm")
    kubectl("annotate", "crd", CRD_NAME, "--overwrite",
            f"meta.helm.sh/release-name={RELEASE}", f"meta.helm.sh/release-namespace={release_namespace}")  # fmt: skip


def sa_kubeconfig(release_namespace: str, path: Path) -> Path:
    """A kubeconfig for the chart's ServiceAccount: same server and CA, a TokenRequest token."""
    token = kubectl("create", "token", FULLNAME, "-n", release_namespace, "--duration=1h").stdout.strip()
    admin = json.loads(kubectl("config", "view", "--raw", "--minify", "-o", "json").stdout)
    cluster = admin["clusters"][0]
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "e2e", "cluster": cluster["cluster"]}],
        "users": [{"name": "chart-sa", "user": {"token": token}}],
        "contexts": [{"name": "chart-sa", "context": {"cluster": "e2e", "user": "chart-sa"}}],
        "current-context": "chart-sa",
    }
    path.write_text(yaml.safe_dump(config))
    return path


def chart_operator_command(release_namespace: str) -> tuple[list[str], dict[str, str]]:
    """The operator container's arguments and environment as the chart rendered them, ports local."""
    deployment = kubectl_json("get", "deployment", FULLNAME, "-n", release_namespace)
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    args = [a for a in container["args"] if not a.startswith(("--liveness=", "--metrics-port="))]
    assert args[0] == "run"
    env = {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}
    return [*args[1:], "--liveness=", "--metrics-port=0"], env


def refusals(log: Path) -> list[str]:
    """RBAC denials in the operator's log (`... is forbidden: User "system:serviceaccount:..." cannot ...`)."""
    return [line for line in log.read_text().splitlines() if "forbidden: User" in line]


def lifecycle(ns: str) -> None:
    """Create, scale, drift, canary, delete: every kind of call the operator makes."""
    apply_md(ns, "life", replicas=2, pod=NEVER_READY)
    for kind in ("deployment", "service", "pdb"):
        wait_for(lambda kind=kind: get(kind, ns, "life"), what=f"{kind}/life")
    wait_for(lambda: get("md", ns, "life")["status"]["observedGeneration"] == 1, what="status")
    apply_md(ns, "life", replicas=3, pod=NEVER_READY)
    wait_for(lambda: get("deployment", ns, "life")["spec"]["replicas"] == 3, what="scaled to 3")
    kubectl("delete", "service", "life", "-n", ns)
    wait_for(lambda: get("service", ns, "life"), what="drifted Service restored")
    events = kubectl_json("get", "events", "-n", ns, "--field-selector", "involvedObject.kind=ModelDeployment")
    assert events["items"], "the operator posted no Events"

    rollout = {"strategy": "Canary", "steps": [50], "interval": "10s"}
    apply_md(ns, "life", replicas=3, pod=NEVER_READY, rollout=rollout)
    wait_for(lambda: get("md", ns, "life")["status"]["observedGeneration"] == 3, what="rollout spec seen")
    apply_md(ns, "life", replicas=3, pod=NEVER_READY, rollout=rollout,
             model={"name": "m", "storageUri": "s3://bucket/m", "version": 2})  # fmt: skip
    wait_for(lambda: get("deployment", ns, "life-canary"), what="canary Deployment")
    kubectl("annotate", "md", "life", "-n", ns, "modeldeploy.io/rollout=abort", "--overwrite")
    wait_for(lambda: get("deployment", ns, "life-canary") is None, what="canary removed on abort")
    wait_for(lambda: get("md", ns, "life")["status"]["phase"] == "RolledBack", what="RolledBack")

    kubectl("delete", "md", "life", "-n", ns, "--wait=true", "--timeout=60s")
    wait_for(lambda: get("deployment", ns, "life") is None, timeout=90, what="children garbage-collected")


def test_cluster_wide_install_upgrade_uninstall_and_the_operator_under_its_rbac(
    chart_crd: None, tmp_path: Path
) -> None:
    release_ns = scratch_namespace("md-helm")
    work_ns = scratch_namespace("md-helm-work")
    adopt_crd(release_ns)
    helm("install", RELEASE, CHART, "-n", release_ns, "--set", "operator.resyncSeconds=5")
    try:
        crd = kubectl_json("get", "crd", CRD_NAME)
        assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
        kubectl("get", "clusterrole", FULLNAME)
        kubectl("get", "clusterrolebinding", FULLNAME)
        sa = f"system:serviceaccount:{release_ns}:{FULLNAME}"
        assert kubectl("auth", "can-i", "patch", "deployments.apps", "-n", work_ns, "--as", sa).stdout.strip() == "yes"
        can_secrets = kubectl("auth", "can-i", "get", "secrets", "-n", work_ns, "--as", sa, check=False)
        assert can_secrets.stdout.strip() == "no", "the chart grants more than the operator calls"

        args, env = chart_operator_command(release_ns)
        assert "--namespace" not in " ".join(args), "cluster-wide mode watches every namespace"
        log = tmp_path / "operator.log"
        kubeconfig = sa_kubeconfig(release_ns, tmp_path / "sa.kubeconfig")
        process = start_operator(*args, env={**env, "KUBECONFIG": str(kubeconfig)}, log=log)
        try:
            lifecycle(work_ns)
        finally:
            stop(process)
        assert not refusals(log), "\n".join(refusals(log)[:5])

        helm("upgrade", RELEASE, CHART, "-n", release_ns, "--set", "operator.resyncSeconds=30",
             "--set", "operator.servingImage=registry.example/modelserve:9.9")  # fmt: skip
        _, env = chart_operator_command(release_ns)
        assert env["MODELDEPLOY_RESYNC_SECONDS"] == "30"
        assert env["MODELDEPLOY_SERVING_IMAGE"] == "registry.example/modelserve:9.9"
        assert json.loads(helm("status", RELEASE, "-n", release_ns, "-o", "json").stdout)["version"] == 2
    finally:
        helm("uninstall", RELEASE, "-n", release_ns, "--wait", "--timeout=60s")
    assert get("deployment", release_ns, FULLNAME) is None
    assert kubectl("get", "clusterrole", FULLNAME, check=False).returncode != 0
    kubectl("get", "crd", CRD_NAME)  # crds.keep=true: kept, with every ModelDeployment
    for ns in (release_ns, work_ns):
        kubectl("delete", "namespace", ns, "--wait=false", check=False)


def test_namespaced_mode_grants_only_the_watched_namespace_and_removes_the_crd_unless_kept(
    chart_crd: None, tmp_path: Path
) -> None:
    release_ns = scratch_namespace("md-helm-ns")
    watched = scratch_namespace("md-helm-watched")
    other = scratch_namespace("md-helm-other")
    adopt_crd(release_ns)
    helm("install", RELEASE, CHART, "-n", release_ns, "--set", f"watch.namespaces={{{watched}}}",
         "--set", "crds.keep=false", "--set", "operator.resyncSeconds=5")  # fmt: skip
    try:
        assert kubectl("get", "clusterrole", FULLNAME, check=False).returncode != 0, "namespaced: no ClusterRole"
        kubectl("get", "role", FULLNAME, "-n", watched)
        sa = f"system:serviceaccount:{release_ns}:{FULLNAME}"
        assert kubectl("auth", "can-i", "list", "modeldeployments.modeldeploy.io", "-n", watched, "--as", sa).stdout.strip() == "yes"  # fmt: skip
        denied = kubectl(
            "auth", "can-i", "list", "modeldeployments.modeldeploy.io", "-n", other, "--as", sa, check=False
        )
        assert denied.stdout.strip() == "no"
        assert "helm.sh/resource-policy" not in kubectl_json("get", "crd", CRD_NAME)["metadata"].get("annotations", {})

        args, env = chart_operator_command(release_ns)
        assert f"--namespace={watched}" in args
        log = tmp_path / "operator.log"
        kubeconfig = sa_kubeconfig(release_ns, tmp_path / "sa.kubeconfig")
        process = start_operator(*args, env={**env, "KUBECONFIG": str(kubeconfig)}, log=log)
        try:
            lifecycle(watched)
            apply_md(other, "ignored", replicas=1, pod=NEVER_READY)
            apply_md(watched, "seen", replicas=1, pod=NEVER_READY)
            wait_for(lambda: get("md", watched, "seen")["status"]["observedGeneration"] == 1, what="watched status")
            assert condition(get("md", watched, "seen"), "Ready")["status"] == "False"
            assert get("deployment", other, "ignored") is None, "an unwatched namespace was reconciled"
        finally:
            stop(process)
        assert not refusals(log), "\n".join(refusals(log)[:5])
    finally:
        helm("uninstall", RELEASE, "-n", release_ns, "--wait", "--timeout=60s")
    wait_for(lambda: kubectl("get", "crd", CRD_NAME, check=False).returncode != 0, what="CRD removed (crds.keep=false)")
    for ns in (release_ns, watched, other):
        kubectl("delete", "namespace", ns, "--wait=false", check=False)
