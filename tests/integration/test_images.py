"""`make images`: finds docker, podman or buildah, and says clearly when none can build."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
BUILDERS = ("docker", "podman", "buildah")


def working_builder() -> str | None:
    for name in BUILDERS:
        if shutil.which(name) and subprocess.run([name, "info"], capture_output=True, timeout=60).returncode == 0:
            return name
    return None


def test_no_working_builder_is_said_in_one_line(tmp_path: Path) -> None:
    for name in BUILDERS:  # builders that are installed but cannot build (no daemon, no rights)
        fake = tmp_path / name
        fake.write_text("#!/bin/sh\necho 'Cannot connect to the daemon' >&2\nexit 1\n")
        fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}"}
    result = subprocess.run(["make", "-s", "images"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "make images: no working image builder" in result.stderr
    assert "apt-get install podman" in result.stderr


@pytest.mark.skipif(working_builder() is None, reason="no docker daemon, podman or buildah that can build here")
def test_serving_image_builds_and_serves(tmp_path: Path) -> None:
    builder = working_builder()
    assert builder is not None
    tag = "modeldeploy-test/modelserve:ci"
    build = [builder, "bud"] if builder == "buildah" else [builder, "build"]
    subprocess.run([*build, "-f", "serving-image/Dockerfile", "-t", tag, "."], cwd=ROOT, check=True, timeout=1800)
    runner = "podman" if builder == "buildah" else builder
    out = subprocess.run([runner, "run", "--rm", "--entrypoint", "modelserve", tag, "--help"],
                         capture_output=True, text=True, check=True, timeout=300)  # fmt: skip
    assert "--model-repository" in out.stdout
