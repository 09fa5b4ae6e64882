"""A request's tensors checked against the model's signature (its config): names, datatypes, shapes.

The batch-dimension rule comes from `config.full_shape`; nothing else here knows it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from modelserve import config as cfg
from modelserve.errors import InvalidArgument, clip
from modelserve.messages import InferInput, InferOutput, RequestedOutput


def shape_matches(shape: Sequence[int], expected: Sequence[int]) -> bool:
    return len(shape) == len(expected) and all(e == -1 or s == e for s, e in zip(shape, expected, strict=True))


def check_inputs(config: cfg.ModelConfig, inputs: list[InferInput]) -> tuple[dict[str, np.ndarray], int]:
    """The model's feeds (reshaped as the config says) and the request's rows; InvalidArgument otherwise."""
    declared = {t.name: t for t in config.input}
    given = {i.name: i for i in inputs}
    if len(given) != len(inputs):
        raise InvalidArgument("the same input name appears more than once")
    unknown = set(given) - set(declared)
    if unknown:
        raise InvalidArgument(
            f"unexpected input {clip(sorted(unknown)[0])!r} for model '{config.name}' (expects: {', '.join(declared)})"
        )
    missing = [n for n, t in declared.items() if n not in given and not t.optional]
    if missing:
        raise InvalidArgument(f"missing input {missing[0]!r} for model '{config.name}'")
    batched = config.max_batch_size > 0
    feeds: dict[str, np.ndarray] = {}
    rows: int | None = None
    for name, item in given.items():
        spec = declared[name]
        expected_type = cfg.datatype_of(spec.data_type)
        if item.datatype != expected_type.v2:
            raise InvalidArgument(
                f"input '{name}': datatype {item.datatype} does not match the model's {expected_type.v2}"
            )
        expected = cfg.full_shape(config, spec.dims)
        if not shape_matches(item.shape, expected):
            raise InvalidArgument(f"input '{name}': shape {item.shape} does not match the model's {expected}")
        if batched:
            if not 1 <= item.shape[0] <= config.max_batch_size:
                raise InvalidArgument(
                    f"input '{name}': batch size {item.shape[0]} is outside 1..{config.max_batch_size}"
                )
            if rows is not None and item.shape[0] != rows:
                raise InvalidArgument(f"input '{name}': batch size {item.shape[0]} differs from other inputs' {rows}")
            rows = item.shape[0]
        array = item.array
        if spec.HasField("reshape"):
            array = array.reshape(_with_rows(config, rows, spec.reshape.shape))
        feeds[name] = array
    return feeds, rows or 1


def _with_rows(config: cfg.ModelConfig, rows: int | None, dims: Sequence[int]) -> list[int]:
    """`full_shape` with the batch dimension filled in."""
    shape = cfg.full_shape(config, dims)
    if config.max_batch_size > 0:
        shape[0] = rows if rows is not None else -1
    return shape


def requested_outputs(config: cfg.ModelConfig, outputs: list[RequestedOutput]) -> list[str]:
    """The output names to answer with: the ones asked for (each known), or all."""
    names = [o.name for o in config.output]
    if not outputs:
        return names
    for out in outputs:
        if out.name not in names:
            raise InvalidArgument(
                f"unknown output '{clip(out.name)}' for model '{config.name}' (has: {', '.join(names)})"
            )
    return [o.name for o in outputs]


def output_tensor(config: cfg.ModelConfig, name: str, array: np.ndarray) -> InferOutput:
    """A model output shaped as the config declares it (its dims, when the config reshapes it)."""
    spec = next(o for o in config.output if o.name == name)
    if spec.HasField("reshape"):
        array = array.reshape(_with_rows(config, array.shape[0] if array.ndim else None, spec.dims))
    return InferOutput(name=name, datatype=cfg.datatype_of(spec.data_type).v2, shape=list(array.shape), array=array)
