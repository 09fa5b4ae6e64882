"""What a real API server does with the CRD: schema, CEL, status subresource, kubectl UX.

Needs no running pods: only the API server is exercised.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.e2e.conftest import ROOT, kubectl, kubectl_json

EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))


def manifest(name: str, **spec: object) -> str:
    body = {"model": {"name": "m", "storageUri": "s3://bucket/m"}, **spec}
    return yaml.safe_dump(
        {"apiVersion": "modeldeploy.io/v1alpha1", "kind": "ModelDeployment", "metadata": {"name": name}, "spec": body}
    )


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_examples_are_accepted(namespace: str, path: Path) -> None:
    kubectl("apply", "--server-side", "-n", namespace, "-f", str(path))
    obj = kubectl_json("get", "md", "-n", namespace, yaml.safe_load(path.read_text())["metadata"]["name"])
    assert obj["spec"]["runtime"]["graphOptimizationLevel"] == "all", "CRD defaults were not applied"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            {"autoscaling": {"minReplicas": 5, "maxReplicas": 2, "targetCPUUtilization": 50}},
            "minReplicas must be less than or equal to maxReplicas",
        ),
        ({"autoscaling": {"maxReplicas": 2}}, "autoscaling needs at least one target"),
        (
            {"autoscaling": {"minReplicas": 0, "maxReplicas": 2, "targetInferenceRate": 5}},
            "minReplicas 0 (scale to zero) needs engine KEDA",
        ),
        ({"rollout": {"steps": [50, 10]}}, "steps must be strictly increasing"),
        ({"gpu": {"count": 1, "migProfile": "1g.5gb"}}, "migProfile needs product"),
        ({"gpu": {"count": -1}}, "spec.gpu.count"),
        ({"runtime": {"quantization": "int4"}}, "spec.runtime.quantization"),
        (
            {"replicas": 2, "autoscaling": {"maxReplicas": 3, "targetCPUUtilization": 50}},
            "either replicas or autoscaling",
        ),
        ({"replicaz": 2}, ".spec.replicaz: field not declared in schema"),
        ({"pod": {"labels": {"-bad": "x"}}}, "keys must be label keys"),
        ({"resources": {"limits": {"cpu": "two"}}}, "spec.resources.limits.cpu"),
        ({"model": {"name": "m", "storageUri": "ftp://host/m"}}, "spec.model.storageUri"),
    ],
)
def test_invalid_specs_are_rejected_with_a_clear_message(namespace: str, spec: dict, message: str) -> None:
    result = kubectl("apply", "--server-side", "-n", namespace, "-f", "-", input=manifest("bad", **spec), check=False)
    assert result.returncode != 0
    assert message in result.stderr, result.stderr


def test_name_length_rule(namespace: str) -> None:
    result = kubectl("apply", "--server-side", "-n", namespace, "-f", "-", input=manifest("a" * 49), check=False)
    assert result.returncode != 0 and "at most 48 characters" in result.stderr


def test_status_subresource_is_separate_from_spec(namespace: str) -> None:
    kubectl("apply", "--server-side", "-n", namespace, "-f", "-", input=manifest("st", replicas=1))
    kubectl(
        "patch",
        "md",
        "st",
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        '{"status":{"phase":"Succeeded","observedGeneration":1}}',
    )
    obj = kubectl_json("get", "md", "st", "-n", namespace)
    assert obj["status"]["phase"] == "Succeeded" and obj["spec"]["replicas"] == 1
    # a status written through the main resource is ignored
    kubectl(
        "patch",
        "md",
        "st",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        '{"status":{"phase":"Failed"},"spec":{"replicas":2}}',
    )
    obj = kubectl_json("get", "md", "st", "-n", namespace)
    assert obj["status"]["phase"] == "Succeeded" and obj["spec"]["replicas"] == 2
    assert obj["metadata"]["generation"] == 2


def test_kubectl_explain_get_and_category(namespace: str) -> None:
    kubectl("apply", "--server-side", "-n", namespace, "-f", str(EXAMPLES[0]))
    explained = kubectl("explain", "modeldeployment.spec.model.storageUri").stdout
    assert "pvc://" in explained
    table = kubectl("get", "md", "-n", namespace).stdout
    for column in ("MODEL", "VERSION", "READY", "PHASE", "CANARY", "AGE"):
        assert column in table
    assert "fraud-scorer" in kubectl("get", "ml", "-n", namespace).stdout
