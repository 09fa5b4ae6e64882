"""Model configuration: Triton's config.pbtxt, completed from the model and checked against it.

The config is kept as the `ModelConfig` protobuf message (Triton's field names and
numbers), parsed with protobuf's own text-format parser, served as is over gRPC and as
JSON over HTTP.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from google.protobuf import descriptor, text_format

from modelserve import repopaths
from modelserve.codecs import BY_CONFIG, DataType
from modelserve.errors import ModelLoadError
from modelserve.proto import model_config_pb2 as mc

ModelConfig = mc.ModelConfig
DEFAULT_MAX_BATCH_SIZE = 4
GRAPH_LEVELS = {"disabled": -2, "basic": -1, "extended": 1, "all": 0}


@dataclass(frozen=True)
class TensorSpec:
    """One model input or output as the model file declares it (-1 = dynamic dim)."""

    name: str
    datatype: DataType
    shape: tuple[int, ...]


@dataclass(frozen=True)
class ModelIO:
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    @property
    def batchable(self) -> bool:
        """Every input and output has a dynamic first dimension."""
        return all(t.shape and t.shape[0] == -1 for t in (*self.inputs, *self.outputs))


@dataclass(frozen=True)
class Overrides:
    """Server flags that override config.pbtxt for every model (set by the operator)."""

    max_batch_size: int | None = None
    max_queue_delay_us: int | None = None
    preferred_batch_sizes: tuple[int, ...] = ()
    max_queue_size: int | None = None
    instance_count: int | None = None
    graph_optimization_level: str | None = None
    parameters: dict[str, str] = field(default_factory=dict)


def parse_config_text(text: str, source: str) -> mc.ModelConfig:
    """Parse config.pbtxt; an unknown or malformed field is an error naming it."""
    try:
        return text_format.Parse(text, mc.ModelConfig())
    except text_format.ParseError as exc:
        raise ModelLoadError(f"{source}: {exc}") from None


def load_config_file(model_dir: Path) -> mc.ModelConfig | None:
    """The model directory's config.pbtxt (a regular UTF-8 file inside the repository), or None."""
    path = model_dir / "config.pbtxt"
    text = repopaths.read_config_text(model_dir.parent, path)
    return None if text is None else parse_config_text(text, str(path))


def parameter(config: mc.ModelConfig, key: str, default: str = "") -> str:
    return config.parameters[key].string_value if key in config.parameters else default


def _datatype_name(config_type: int) -> str:
    return mc.DataType.Name(config_type)


def full_shape(config: mc.ModelConfig, dims: Any) -> list[int]:
    """The one batch-dimension rule: a batching model's tensors have a leading -1 before their dims."""
    return [-1, *dims] if config.max_batch_size > 0 else list(dims)


def _compatible(config_shape: list[int], model_shape: tuple[int, ...]) -> bool:
    if len(config_shape) != len(model_shape):
        return False
    return all(c == m or c == -1 or m == -1 for c, m in zip(config_shape, model_shape, strict=True))


def _complete_tensors(
    where: str,
    declared: Any,
    model_tensors: tuple[TensorSpec, ...],
    config: mc.ModelConfig,
    strict: bool,
    source: str,
) -> None:
    by_name = {t.name: t for t in model_tensors}
    if not declared:
        if strict:
            raise ModelLoadError(f"{source}: no {where} declared and --strict-model-config is on")
        for tensor in model_tensors:
            entry = declared.add(name=tensor.name, data_type=mc.DataType.Value(tensor.datatype.config))
            dims = tensor.shape[1:] if config.max_batch_size > 0 else tensor.shape
            entry.dims.extend(dims)
        return
    for index, entry in enumerate(declared):
        model_tensor = by_name.get(entry.name)
        if model_tensor is None:
            raise ModelLoadError(
                f"{source}: {where}[{index}].name: '{entry.name}' is not an {where} of the model"
                f" (it has: {', '.join(by_name)})"
            )
        if _datatype_name(entry.data_type) != model_tensor.datatype.config:
            raise ModelLoadError(
                f"{source}: {where}[{index}].data_type: {_datatype_name(entry.data_type)} for '{entry.name}'"
                f" does not match the model's {model_tensor.datatype.config}"
            )
        shape = list(entry.reshape.shape) if entry.HasField("reshape") else list(entry.dims)
        full = full_shape(config, shape)
        if not _compatible(full, model_tensor.shape):
            raise ModelLoadError(
                f"{source}: {where}[{index}].dims: {list(entry.dims)} for '{entry.name}'"
                f" (with batch dimension: {full}) does not match the model's shape {list(model_tensor.shape)}"
            )
    if where == "input":
        missing = set(by_name) - {e.name for e in declared}
        if missing:
            raise ModelLoadError(f"{source}: model input(s) {sorted(missing)} are not declared in the config")


def complete_and_check(
    config: mc.ModelConfig,
    io: ModelIO,
    *,
    name: str,
    strict: bool,
    overrides: Overrides,
    source: str,
) -> mc.ModelConfig:
    """Fill what the config leaves out from the model, apply overrides, reject contradictions."""
    config = mc.ModelConfig.FromString(config.SerializeToString())
    if config.name and config.name != name:
        raise ModelLoadError(f"{source}: name: '{config.name}' does not match the model directory '{name}'")
    config.name = name
    for field_name, wanted in (("platform", "onnxruntime_onnx"), ("backend", "onnxruntime")):
        given = getattr(config, field_name)
        if given and given != wanted:
            raise ModelLoadError(f"{source}: {field_name}: '{given}' is not supported; modelserve runs {wanted}")
    config.platform = "onnxruntime_onnx"
    config.backend = "onnxruntime"
    if config.max_batch_size < 0:
        raise ModelLoadError(f"{source}: max_batch_size: must be >= 0, got {config.max_batch_size}")
    declared_batching = config.max_batch_size > 0 or len(config.input) > 0
    if not declared_batching and io.batchable and not strict:
        config.max_batch_size = DEFAULT_MAX_BATCH_SIZE
    if config.max_batch_size > 0 and not io.batchable:
        raise ModelLoadError(
            f"{source}: max_batch_size: {config.max_batch_size} needs a dynamic first dimension on every input"
            " and output of the model; set max_batch_size: 0"
        )
    _apply_overrides(config, io, overrides)
    _complete_tensors("input", config.input, io.inputs, config, strict, source)
    _complete_tensors("output", config.output, io.outputs, config, strict, source)
    if config.max_batch_size > 0 and not config.HasField("dynamic_batching"):
        config.dynamic_batching.SetInParent()
    for size in config.dynamic_batching.preferred_batch_size:
        if size > config.max_batch_size:
            raise ModelLoadError(
                f"{source}: dynamic_batching.preferred_batch_size: {size} exceeds max_batch_size"
                f" {config.max_batch_size}"
            )
    if not config.instance_group:
        config.instance_group.add(count=1, kind=mc.ModelInstanceGroup.KIND_CPU)
    for index, group in enumerate(config.instance_group):
        if group.count < 0:
            raise ModelLoadError(f"{source}: instance_group[{index}].count: must be >= 0, got {group.count}")
        if group.count == 0:
            group.count = 1
    return config


def _apply_overrides(config: mc.ModelConfig, io: ModelIO, overrides: Overrides) -> None:
    if overrides.max_batch_size is not None and io.batchable:
        config.max_batch_size = overrides.max_batch_size
    batching = config.dynamic_batching
    if overrides.max_queue_delay_us is not None:
        batching.max_queue_delay_microseconds = overrides.max_queue_delay_us
    if overrides.preferred_batch_sizes:
        del batching.preferred_batch_size[:]
        batching.preferred_batch_size.extend(s for s in overrides.preferred_batch_sizes if s <= config.max_batch_size)
    if overrides.max_queue_size is not None:
        batching.default_queue_policy.max_queue_size = overrides.max_queue_size
    if config.max_batch_size == 0:
        config.ClearField("dynamic_batching")
    if overrides.instance_count is not None:
        del config.instance_group[:]
        config.instance_group.add(count=overrides.instance_count, kind=mc.ModelInstanceGroup.KIND_AUTO)
    if overrides.graph_optimization_level is not None:
        config.optimization.graph.level = GRAPH_LEVELS[overrides.graph_optimization_level]
    for key, value in overrides.parameters.items():
        config.parameters[key].string_value = value


def instance_count(config: mc.ModelConfig) -> int:
    return sum(group.count for group in config.instance_group) or 1


def graph_level_name(config: mc.ModelConfig) -> str:
    level = config.optimization.graph.level
    return next((name for name, value in GRAPH_LEVELS.items() if value == level), "all")


def datatype_of(config_type: int) -> DataType:
    return BY_CONFIG[_datatype_name(config_type)]


def message_to_json(message: Any) -> dict[str, Any]:
    """A protobuf message as Triton's JSON: proto field names, 64-bit integers as numbers."""
    out: dict[str, Any] = {}
    for fd in message.DESCRIPTOR.fields:
        value = getattr(message, fd.name)
        if fd.message_type is not None and fd.message_type.GetOptions().map_entry:
            value_fd = fd.message_type.fields_by_name["value"]
            out[fd.name] = {k: message_to_json(v) if value_fd.message_type is not None else v for k, v in value.items()}
        elif fd.is_repeated:
            out[fd.name] = [_field_json(fd, item) for item in value]
        elif fd.message_type is not None:
            if message.HasField(fd.name):
                out[fd.name] = message_to_json(value)
        else:
            out[fd.name] = _field_json(fd, value)
    return out


def _field_json(fd: descriptor.FieldDescriptor, value: Any) -> Any:
    if fd.message_type is not None:
        return message_to_json(value)
    if fd.enum_type is not None:
        return fd.enum_type.values_by_number[value].name
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return value
