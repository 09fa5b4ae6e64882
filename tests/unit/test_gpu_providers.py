"""A model that must run on a GPU refuses to load on a CPU-only onnxruntime, naming the fix."""

from __future__ import annotations

import onnxruntime as ort
import pytest

from modelserve import config as cfg
from modelserve.errors import ModelLoadError
from modelserve.runtime import RuntimeSettings, execution_providers

KIND = cfg.mc.ModelInstanceGroup


def config_with(kind: int | None) -> cfg.ModelConfig:
    config = cfg.ModelConfig()
    if kind is not None:
        config.instance_group.add(kind=kind, count=1)
    return config


CPU_ONLY = "CUDAExecutionProvider" not in ort.get_available_providers()


@pytest.mark.skipif(not CPU_ONLY, reason="checks the CPU build of onnxruntime; this one has CUDA")
@pytest.mark.parametrize(
    ("kind", "settings"),
    [(None, RuntimeSettings(require_gpu=True)), (KIND.KIND_GPU, RuntimeSettings())],
    ids=["--require-gpu", "instance_group KIND_GPU"],
)
def test_gpu_asked_for_on_a_cpu_build_fails_the_load(kind: int | None, settings: RuntimeSettings) -> None:
    with pytest.raises(ModelLoadError, match=r"no CUDAExecutionProvider.*onnxruntime-gpu"):
        execution_providers(config_with(kind), settings)


@pytest.mark.parametrize("kind", [None, KIND.KIND_CPU, KIND.KIND_AUTO])
def test_cpu_or_auto_models_load_wherever_they_are(kind: int | None) -> None:
    providers = execution_providers(config_with(kind), RuntimeSettings())
    assert providers[-1] == "CPUExecutionProvider"
