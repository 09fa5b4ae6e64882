"""ONNX Runtime backend: sessions built from the model config, one per instance."""

from __future__ import annotations

import logging
import os
import queue
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from modelserve import config as cfg
from modelserve.codecs import BY_ONNX
from modelserve.errors import InferenceFailed, ModelLoadError

log = logging.getLogger(__name__)

_GRAPH_LEVEL = {
    "disabled": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}


@dataclass(frozen=True)
class RuntimeSettings:
    """Server-wide ONNX Runtime settings; per-model config parameters can override threads."""

    intra_op_threads: int = 0
    inter_op_threads: int = 0
    allow_spinning: bool = False
    use_gpu: bool = True
    require_gpu: bool = False


def _dim(value: object) -> int:
    return value if isinstance(value, int) and value >= 0 else -1


def model_io(session: ort.InferenceSession, source: str) -> cfg.ModelIO:
    def specs(nodes: Sequence[ort.NodeArg]) -> tuple[cfg.TensorSpec, ...]:
        out = []
        for node in nodes:
            dtype = BY_ONNX.get(node.type)
            if dtype is None:
                raise ModelLoadError(f"{source}: tensor '{node.name}' has unsupported type {node.type}")
            out.append(cfg.TensorSpec(node.name, dtype, tuple(_dim(d) for d in node.shape)))
        return tuple(out)

    return cfg.ModelIO(inputs=specs(session.get_inputs()), outputs=specs(session.get_outputs()))


def execution_providers(config: cfg.ModelConfig, settings: RuntimeSettings) -> list[str]:
    """CUDA (or TensorRT when asked for) where available and allowed, CPU always last.

    A model that must run on a GPU (instance_group KIND_GPU, as Triton refuses such a model
    without one, or the server's --require-gpu) fails to load where onnxruntime has no CUDA
    provider, instead of running on the CPU unnoticed.
    """
    available = set(ort.get_available_providers())
    kinds = {group.kind for group in config.instance_group}
    wants_gpu = settings.use_gpu and cfg.mc.ModelInstanceGroup.KIND_CPU not in kinds
    needs_gpu = settings.require_gpu or cfg.mc.ModelInstanceGroup.KIND_GPU in kinds
    if needs_gpu and "CUDAExecutionProvider" not in available:
        raise ModelLoadError(
            "a GPU was asked for but onnxruntime has no CUDAExecutionProvider (available: "
            f"{', '.join(sorted(available))}): use the GPU build of the serving image (ORT_PACKAGE=onnxruntime-gpu)"
        )
    providers: list[str] = []
    if wants_gpu and cfg.parameter(config, "enable_tensorrt") == "true" and "TensorrtExecutionProvider" in available:
        providers.append("TensorrtExecutionProvider")
    if wants_gpu and "CUDAExecutionProvider" in available:
        providers.append("CUDAExecutionProvider")
    providers.append("CPUExecutionProvider")
    return providers


def session_options(config: cfg.ModelConfig, settings: RuntimeSettings) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.graph_optimization_level = _GRAPH_LEVEL[cfg.graph_level_name(config)]
    intra = int(cfg.parameter(config, "intra_op_thread_count", str(settings.intra_op_threads)) or 0)
    inter = int(cfg.parameter(config, "inter_op_thread_count", str(settings.inter_op_threads)) or 0)
    if intra > 0:
        options.intra_op_num_threads = intra
    if inter > 0:
        options.inter_op_num_threads = inter
    spinning = cfg.parameter(config, "allow_spinning", "true" if settings.allow_spinning else "false")
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning == "true" else "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "1" if spinning == "true" else "0")
    options.log_severity_level = 3
    return options


def open_session(path: Path, options: ort.SessionOptions, providers: list[str]) -> ort.InferenceSession:
    try:
        return ort.InferenceSession(os.fspath(path), sess_options=options, providers=providers)
    except Exception as exc:  # onnxruntime raises its own exception types for bad files
        raise ModelLoadError(f"{path}: not a loadable ONNX model: {exc}") from None


def probe_io(path: Path) -> cfg.ModelIO:
    """Read a model's inputs and outputs with a minimal session."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    return model_io(open_session(path, options, ["CPUExecutionProvider"]), str(path))


def as_onnx_strings(array: np.ndarray) -> np.ndarray:
    """BYTES tensors arrive as Python bytes objects; onnxruntime's string tensors take str."""
    if array.dtype != np.object_:
        return array
    return np.vectorize(lambda b: b.decode("utf-8", errors="replace") if isinstance(b, bytes) else b, otypes=[object])(
        array
    )


class OnnxModel:
    """`instance_count` sessions of one model version; `run` is safe from many threads."""

    def __init__(self, path: Path, config: cfg.ModelConfig, settings: RuntimeSettings) -> None:
        self.path = path
        self.config = config
        self.providers = execution_providers(config, settings)
        options = session_options(config, settings)
        self._sessions: queue.SimpleQueue[ort.InferenceSession] = queue.SimpleQueue()
        self.instances = cfg.instance_count(config)
        first = open_session(path, options, self.providers)
        self._sessions.put(first)
        for _ in range(self.instances - 1):
            self._sessions.put(open_session(path, options, self.providers))
        self.output_names = [o.name for o in first.get_outputs()]
        log.info("loaded %s with %d instance(s) on %s", path, self.instances, self.providers[0])

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        feeds = {name: as_onnx_strings(array) for name, array in feeds.items()}
        session = self._sessions.get()
        try:
            results = session.run(self.output_names, feeds)
        except Exception as exc:  # onnxruntime's errors carry the useful message
            raise InferenceFailed(f"inference failed: {exc}") from None
        finally:
            self._sessions.put(session)
        return dict(zip(self.output_names, results, strict=True))
