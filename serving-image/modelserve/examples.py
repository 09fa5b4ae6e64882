"""Small ONNX models built in code (no downloads) for the demo, the tests and the benchmarks.

- `simple`: Triton's classic example: OUTPUT0 = INPUT0 + INPUT1, OUTPUT1 = INPUT0 - INPUT1 (FP32 [-1, 16]).
- `mlp`: 256 → 512 → 512 → 10, ReLU, FP32, deterministic weights.
- `cnn`: 3x64x64 input, three conv+ReLU+max-pool layers, a linear head to 10 classes.
- `identity_types`: one Identity per V2 datatype, to check every datatype round-trips.
"""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
IDENTITY_TYPES = {
    "BOOL": TensorProto.BOOL,
    "UINT8": TensorProto.UINT8,
    "UINT16": TensorProto.UINT16,
    "UINT32": TensorProto.UINT32,
    "UINT64": TensorProto.UINT64,
    "INT8": TensorProto.INT8,
    "INT16": TensorProto.INT16,
    "INT32": TensorProto.INT32,
    "INT64": TensorProto.INT64,
    "FP16": TensorProto.FLOAT16,
    "FP32": TensorProto.FLOAT,
    "FP64": TensorProto.DOUBLE,
    "BYTES": TensorProto.STRING,
}


def _model(graph: onnx.GraphProto) -> onnx.ModelProto:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="modelserve")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def _init(name: str, array: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(array.astype(np.float32), name)


def simple() -> onnx.ModelProto:
    shape = ["batch", 16]
    graph = helper.make_graph(
        [
            helper.make_node("Add", ["INPUT0", "INPUT1"], ["OUTPUT0"]),
            helper.make_node("Sub", ["INPUT0", "INPUT1"], ["OUTPUT1"]),
        ],
        "simple",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, shape) for n in ("INPUT0", "INPUT1")],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, shape) for n in ("OUTPUT0", "OUTPUT1")],
    )
    return _model(graph)


def mlp(seed: int = 0) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    sizes = [256, 512, 512, 10]
    nodes, inits = [], []
    current = "input"
    for i, (n_in, n_out) in enumerate(pairwise(sizes)):
        inits += [
            _init(f"w{i}", rng.standard_normal((n_in, n_out)) / np.sqrt(n_in)),
            _init(f"b{i}", rng.standard_normal(n_out) * 0.01),
        ]
        nodes.append(helper.make_node("Gemm", [current, f"w{i}", f"b{i}"], [f"h{i}"]))
        current = f"h{i}"
        if i < len(sizes) - 2:
            nodes.append(helper.make_node("Relu", [current], [f"r{i}"]))
            current = f"r{i}"
    nodes.append(helper.make_node("Identity", [current], ["output"]))
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 256])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 10])],
        initializer=inits,
    )
    return _model(graph)


def cnn(seed: int = 0) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    channels = [3, 16, 32, 64]
    nodes, inits = [], []
    current = "input"
    for i, (c_in, c_out) in enumerate(pairwise(channels)):
        inits += [
            _init(f"k{i}", rng.standard_normal((c_out, c_in, 3, 3)) / np.sqrt(c_in * 9)),
            _init(f"c{i}", np.zeros(c_out)),
        ]
        nodes += [
            helper.make_node("Conv", [current, f"k{i}", f"c{i}"], [f"conv{i}"], pads=[1, 1, 1, 1]),
            helper.make_node("Relu", [f"conv{i}"], [f"relu{i}"]),
            helper.make_node("MaxPool", [f"relu{i}"], [f"pool{i}"], kernel_shape=[2, 2], strides=[2, 2]),
        ]
        current = f"pool{i}"
    inits += [
        _init("head_w", rng.standard_normal((64 * 8 * 8, 10)) / np.sqrt(64 * 8 * 8)),
        _init("head_b", np.zeros(10)),
    ]
    nodes += [
        helper.make_node("Flatten", [current], ["flat"], axis=1),
        helper.make_node("Gemm", ["flat", "head_w", "head_b"], ["output"]),
    ]
    graph = helper.make_graph(
        nodes,
        "cnn",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, 64, 64])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 10])],
        initializer=inits,
    )
    return _model(graph)


def identity_types() -> onnx.ModelProto:
    nodes, inputs, outputs = [], [], []
    for name, elem in IDENTITY_TYPES.items():
        nodes.append(helper.make_node("Identity", [f"in_{name}"], [f"out_{name}"]))
        inputs.append(helper.make_tensor_value_info(f"in_{name}", elem, ["batch", 4]))
        outputs.append(helper.make_tensor_value_info(f"out_{name}", elem, ["batch", 4]))
    return _model(helper.make_graph(nodes, "identity_types", inputs, outputs))


BUILDERS = {"simple": simple, "mlp": mlp, "cnn": cnn, "identity_types": identity_types}


def write_model(root: Path, name: str, model: onnx.ModelProto, version: int = 1, config: str | None = None) -> Path:
    """Write `<root>/<name>/<version>/model.onnx` (and config.pbtxt when given)."""
    version_dir = root / name / str(version)
    version_dir.mkdir(parents=True, exist_ok=True)
    path = version_dir / "model.onnx"
    onnx.save(model, path)
    if config is not None:
        (root / name / "config.pbtxt").write_text(config)
    return path


def write_repository(root: Path, names: list[str] | None = None) -> Path:
    for name in names or list(BUILDERS):
        write_model(root, name, BUILDERS[name]())
    return root
