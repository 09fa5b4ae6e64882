"""Model optimization at load: dynamic INT8 quantization, checked against FP32.

The quantized model is cached beside the original (or in the cache directory when the
model store is read-only), keyed by the original's content hash, so restarts reuse it.
Before it is served, both models run on a few generated inputs; past the tolerance the
quantized model is refused with the measured difference in the message.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from pathlib import Path

import numpy as np

from modelserve import config as cfg
from modelserve import runtime
from modelserve.errors import ModelLoadError

log = logging.getLogger(__name__)

QUANTIZATION_MODES = ("none", "dynamic-int8")
CHECK_SAMPLES = 4


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def _cache_target(path: Path, cache_dir: Path | None, label: str) -> Path:
    name = f"{path.stem}.int8.{_digest(path)}.onnx"
    if os.access(path.parent, os.W_OK):
        return path.parent / name
    if cache_dir is None:
        raise ModelLoadError(f"{path.parent} is read-only and no --cache-dir is set for the quantized model")
    cache_dir.mkdir(parents=True, exist_ok=True)
    return cache_dir / f"{label}-{name}"


def sample_inputs(io: cfg.ModelIO, seed: int) -> dict[str, np.ndarray]:
    """Deterministic inputs for every model input, dynamic dimensions set to 2."""
    rng = np.random.default_rng(seed)
    feeds: dict[str, np.ndarray] = {}
    for tensor in io.inputs:
        shape = [d if d > 0 else 2 for d in tensor.shape]
        kind = tensor.datatype.numpy.kind
        if kind == "f":
            feeds[tensor.name] = rng.standard_normal(shape).astype(tensor.datatype.numpy)
        elif kind in "iu":
            feeds[tensor.name] = rng.integers(0, 8, shape).astype(tensor.datatype.numpy)
        elif kind == "b":
            feeds[tensor.name] = rng.integers(0, 2, shape).astype(np.bool_)
        else:
            raise ModelLoadError(f"cannot generate check inputs for '{tensor.name}' ({tensor.datatype.v2})")
    return feeds


def max_output_difference(original: Path, quantized: Path, io: cfg.ModelIO, samples: int = CHECK_SAMPLES) -> float:
    options = runtime.session_options(cfg.ModelConfig(), runtime.RuntimeSettings(intra_op_threads=1))
    ref = runtime.open_session(original, options, ["CPUExecutionProvider"])
    test = runtime.open_session(quantized, options, ["CPUExecutionProvider"])
    worst = 0.0
    for seed in range(samples):
        feeds = sample_inputs(io, seed)
        for a, b in zip(ref.run(None, feeds), test.run(None, feeds), strict=True):
            if np.asarray(a).dtype.kind in "fiu" and np.asarray(a).size:
                worst = max(worst, float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)))))
    return worst


def quantize_dynamic_int8(path: Path, target: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.NamedTemporaryFile(dir=target.parent, suffix=".onnx", delete=False) as tmp:
        tmp_path = Path(tmp.name)
    try:
        quantize_dynamic(os.fspath(path), os.fspath(tmp_path), weight_type=QuantType.QInt8)
        tmp_path.replace(target)
    except Exception as exc:
        raise ModelLoadError(f"{path}: dynamic INT8 quantization failed: {exc}") from None
    finally:
        tmp_path.unlink(missing_ok=True)


def optimized_model_path(
    path: Path, config: cfg.ModelConfig, io: cfg.ModelIO, cache_dir: Path | None, label: str
) -> Path:
    """The file to serve: the original, or its checked INT8 quantization when asked for."""
    mode = cfg.parameter(config, "quantization", "none")
    if mode not in QUANTIZATION_MODES:
        raise ModelLoadError(f"parameters.quantization: '{mode}' is not one of {', '.join(QUANTIZATION_MODES)}")
    if mode == "none":
        return path
    try:
        tolerance = float(cfg.parameter(config, "quantization_tolerance", "0.05"))
    except ValueError:
        raise ModelLoadError("parameters.quantization_tolerance: not a number") from None
    target = _cache_target(path, cache_dir, label)
    if target.exists():
        log.info("reusing quantized model %s", target)
    else:
        quantize_dynamic_int8(path, target)
    difference = max_output_difference(path, target, io)
    if not difference <= tolerance:
        raise ModelLoadError(
            f"{path}: INT8 model differs from FP32 by up to {difference:.4g} (tolerance {tolerance:g});"
            " refusing it: raise quantization_tolerance or serve without quantization"
        )
    log.info("serving INT8 model %s (max difference from FP32 %.4g)", target, difference)
    return target
