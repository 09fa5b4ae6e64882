"""`modeldeploy render` / `modeldeploy crd` as a user runs them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).parents[2]


def run_cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "modeldeploy.cli", *args], input=stdin, capture_output=True, text=True, timeout=60
    )


def test_render_prints_multi_document_yaml() -> None:
    result = run_cli("render", "-f", str(ROOT / "examples" / "gpu-autoscaling.yaml"))
    assert result.returncode == 0, result.stderr
    kinds = [doc["kind"] for doc in yaml.safe_load_all(result.stdout)]
    assert kinds == ["Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"]


def test_render_uses_serving_image_flag() -> None:
    result = run_cli("render", "-f", str(ROOT / "examples" / "cpu-model.yaml"), "--serving-image", "reg/ms:9")
    deployment = next(yaml.safe_load_all(result.stdout))
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == "reg/ms:9"


def test_invalid_spec_exits_non_zero_with_field_path_and_no_traceback() -> None:
    bad = """
apiVersion: modeldeploy.io/v1alpha1
kind: ModelDeployment
metadata: {name: bad}
spec:
  model: {name: m, storageUri: "s3://b/m"}
  autoscaling: {minReplicas: 5, maxReplicas: 2, targetCPUUtilization: 50}
  gpu: {count: -1}
"""
    result = run_cli("render", "-f", "-", stdin=bad)
    assert result.returncode == 1
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert any("spec.gpu.count:" in line for line in lines)
    assert any("spec.autoscaling: minReplicas (5)" in line for line in lines)


def test_unreadable_yaml_is_reported() -> None:
    result = run_cli("render", "-f", "-", stdin="spec: [unclosed")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr and "error: -" in result.stderr


def test_missing_file_is_reported() -> None:
    result = run_cli("render", "-f", "/nonexistent.yaml")
    assert result.returncode == 1 and "nonexistent.yaml" in result.stderr


def test_crd_command_matches_checked_in_file() -> None:
    result = run_cli("crd")
    assert result.returncode == 0
    assert yaml.safe_load(result.stdout) == yaml.safe_load(
        (ROOT / "crds" / "modeldeploy.io_modeldeployments.yaml").read_text()
    )
