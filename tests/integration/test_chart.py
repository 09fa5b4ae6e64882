"""The Helm chart through the real helm binary: lint, render, upstream schemas, values schema."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.k8s_schemas import assert_valid_kubernetes_object

ROOT = Path(__file__).parents[2]
CHART = ROOT / "charts" / "modeldeploy"
HELM = str(Path(sys.executable).parent / "helm")
VALUE_SETS: dict[str, list[str]] = {
    "default": [],
    "namespaced": ["--set", "watch.namespaces={ml,serving}"],
    "servicemonitor": [
        "--set",
        "metrics.serviceMonitor.enabled=true",
        "--set",
        "metrics.serviceMonitor.labels.release=prom",
    ],
    "crds-off": ["--set", "crds.enabled=false"],
    "peering": ["--set", "replicaCount=2", "--set", "operator.peering=modeldeploy"],
}


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([HELM, *args], capture_output=True, text=True, timeout=60)
    if check:
        assert result.returncode == 0, result.stderr
    return result


def render(*values: str) -> list[dict[str, Any]]:
    out = helm("template", "md", str(CHART), "--namespace", "modeldeploy-system", *values).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def kinds(objects: list[dict[str, Any]]) -> list[str]:
    return [o["kind"] for o in objects]


@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=VALUE_SETS.keys())
def test_lint_and_template_validate(values: list[str]) -> None:
    helm("lint", "--strict", str(CHART), *values)
    for obj in render(*values):
        if obj["kind"] != "ServiceMonitor":  # a Prometheus Operator CRD, not an upstream kind
            assert_valid_kubernetes_object(obj)


def test_default_is_cluster_wide_with_the_crd_kept() -> None:
    objects = render()
    assert {"ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition", "Deployment", "Service"} <= set(
        kinds(objects)
    )
    assert "ServiceMonitor" not in kinds(objects) and "Role" not in kinds(objects)
    crd = next(o for o in objects if o["kind"] == "CustomResourceDefinition")
    assert crd["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}


def test_chart_crd_is_identical_to_crds_folder() -> None:
    crd = next(o for o in render("--set", "crds.keep=false") if o["kind"] == "CustomResourceDefinition")
    assert crd == yaml.safe_load((ROOT / "crds" / "modeldeploy.io_modeldeployments.yaml").read_text())


def test_namespaced_mode_uses_roles_only() -> None:
    objects = render(*VALUE_SETS["namespaced"])
    assert "ClusterRole" not in kinds(objects) and "ClusterRoleBinding" not in kinds(objects)
    roles = [o for o in objects if o["kind"] == "Role"]
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["ml", "serving"]
    args = next(o for o in objects if o["kind"] == "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--namespace=ml" in args and "--namespace=serving" in args


def test_optional_pieces_follow_values() -> None:
    assert "ServiceMonitor" in kinds(render(*VALUE_SETS["servicemonitor"]))
    assert "CustomResourceDefinition" not in kinds(render(*VALUE_SETS["crds-off"]))


def test_operator_deployment_is_hardened_and_probed() -> None:
    deployment = next(o for o in render() if o["kind"] == "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "healthz"}
    assert "--liveness=http://0.0.0.0:8080/healthz" in container["args"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["MODELDEPLOY_SERVING_IMAGE"] == "modeldeploy/modelserve:0.1.0"


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (["--set", "replicaCount=two"], "replicaCount"),
        (["--set", "unknownKey=1"], "unknownKey"),
        (["--set", "operator.logFormat=xml"], "logFormat"),
        (["--set", "crds.enabled=maybe"], "/crds/enabled"),
    ],
)
def test_values_schema_rejects_bad_values(values: list[str], message: str) -> None:
    result = helm("template", "md", str(CHART), *values, check=False)
    assert result.returncode != 0
    assert message in result.stderr


def test_every_value_is_documented_and_typed() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    text = (CHART / "values.yaml").read_text()

    def walk(node: dict[str, Any], props: dict[str, Any], path: str) -> None:
        for key, value in node.items():
            assert key in props, f"{path}{key} is not in values.schema.json"
            assert props[key].get("description"), f"{path}{key} has no description in the schema"
            assert f"{key}:" in text
            if isinstance(value, dict) and "properties" in props[key]:
                walk(value, props[key]["properties"], f"{path}{key}.")

    walk(values, schema["properties"], "")
    assert schema["additionalProperties"] is False
