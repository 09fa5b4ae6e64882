"""The real kubectl and helm that `make install` extracts into the venv run here."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BIN = Path(sys.executable).parent


def test_kubectl_runs() -> None:
    out = subprocess.run([BIN / "kubectl", "version", "--client", "-o", "yaml"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "gitVersion: v1.3" in out.stdout


def test_helm_runs() -> None:
    out = subprocess.run([BIN / "helm", "version", "--short"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("v")


def test_kubectl_reads_rendered_manifests(tmp_path: Path) -> None:
    rendered = subprocess.run(
        [BIN / "modeldeploy", "render", "-f", "examples/gpu-autoscaling.yaml"],
        capture_output=True,
        text=True,
        cwd=Path(__file__).parents[2],
    )
    assert rendered.returncode == 0, rendered.stderr
    manifest = tmp_path / "out.yaml"
    manifest.write_text(rendered.stdout)
    # `kubectl create --dry-run=client` needs a server for discovery; `kubectl apply view-last-applied`
    # does too. Local parsing is what a GitOps pipeline's `kubectl kustomize` does: use that.
    (tmp_path / "kustomization.yaml").write_text("resources: [out.yaml]\n")
    out = subprocess.run([BIN / "kubectl", "kustomize", str(tmp_path)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "kind: HorizontalPodAutoscaler" in out.stdout
