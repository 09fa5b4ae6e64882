"""Tensor codecs: V2 datatypes, JSON tensors, binary tensor data, gRPC tensor contents."""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from modelserve.errors import InvalidArgument, clip

MAX_DIMS = 64  # numpy's limit, and far more than any model has
MAX_ELEMENTS = 1 << 62  # product of the non-zero dimensions: above it numpy cannot even describe the shape


@dataclass(frozen=True)
class DataType:
    v2: str  # KServe V2 name: FP32
    config: str  # Triton config name: TYPE_FP32
    numpy: np.dtype[Any]
    onnx: str  # onnxruntime type string: tensor(float)
    grpc_field: str  # InferTensorContents field


_TYPES = [
    DataType("BOOL", "TYPE_BOOL", np.dtype(np.bool_), "tensor(bool)", "bool_contents"),
    DataType("UINT8", "TYPE_UINT8", np.dtype(np.uint8), "tensor(uint8)", "uint_contents"),
    DataType("UINT16", "TYPE_UINT16", np.dtype(np.uint16), "tensor(uint16)", "uint_contents"),
    DataType("UINT32", "TYPE_UINT32", np.dtype(np.uint32), "tensor(uint32)", "uint_contents"),
    DataType("UINT64", "TYPE_UINT64", np.dtype(np.uint64), "tensor(uint64)", "uint64_contents"),
    DataType("INT8", "TYPE_INT8", np.dtype(np.int8), "tensor(int8)", "int_contents"),
    DataType("INT16", "TYPE_INT16", np.dtype(np.int16), "tensor(int16)", "int_contents"),
    DataType("INT32", "TYPE_INT32", np.dtype(np.int32), "tensor(int32)", "int_contents"),
    DataType("INT64", "TYPE_INT64", np.dtype(np.int64), "tensor(int64)", "int64_contents"),
    DataType("FP16", "TYPE_FP16", np.dtype(np.float16), "tensor(float16)", ""),
    DataType("FP32", "TYPE_FP32", np.dtype(np.float32), "tensor(float)", "fp32_contents"),
    DataType("FP64", "TYPE_FP64", np.dtype(np.float64), "tensor(double)", "fp64_contents"),
    DataType("BYTES", "TYPE_STRING", np.dtype(np.object_), "tensor(string)", "bytes_contents"),
]
BY_V2 = {t.v2: t for t in _TYPES}
BY_CONFIG = {t.config: t for t in _TYPES}
BY_ONNX = {t.onnx: t for t in _TYPES}


def datatype(v2_name: str) -> DataType:
    try:
        return BY_V2[v2_name]
    except KeyError:
        raise InvalidArgument(f"unknown datatype {clip(v2_name)!r}; expected one of {', '.join(BY_V2)}") from None


def element_count(shape: Sequence[int]) -> int:
    count = 1
    for dim in shape:
        count *= dim
    return count


def check_shape(name: str, shape: Any) -> list[int]:
    """A shape a tensor can have: at most 64 non-negative dimensions whose product numpy can hold."""
    if not isinstance(shape, list | tuple) or not all(isinstance(d, int) and not isinstance(d, bool) for d in shape):
        raise InvalidArgument(f"input '{name}': shape must be a list of integers, got {clip(shape)}")
    if len(shape) > MAX_DIMS:
        raise InvalidArgument(f"input '{name}': shape has {len(shape)} dimensions; at most {MAX_DIMS} are supported")
    if any(d < 0 for d in shape):
        raise InvalidArgument(f"input '{name}': shape {clip(list(shape))} has a negative dimension")
    product = 1
    for dim in shape:
        product *= max(dim, 1)
        if product > MAX_ELEMENTS:
            raise InvalidArgument(f"input '{name}': shape {clip(list(shape))} is too large for any tensor")
    return list(shape)


# --- BYTES serialization (Triton: each element is a 4-byte little-endian length, then the bytes) ---


def serialize_bytes_tensor(array: np.ndarray) -> bytes:
    parts: list[bytes] = []
    for item in array.reshape(-1):
        raw = item if isinstance(item, bytes) else str(item).encode()
        parts.append(struct.pack("<I", len(raw)))
        parts.append(raw)
    return b"".join(parts)


def deserialize_bytes_tensor(name: str, buffer: bytes | memoryview, count: int) -> np.ndarray:
    view = memoryview(buffer)
    if count * 4 > len(view):  # every element costs at least its 4-byte length: check before any work
        raise InvalidArgument(f"input '{name}': {count} BYTES elements cannot fit in {len(view)} bytes of data")
    items: list[bytes] = []
    offset = 0
    while offset < len(view):
        if len(items) == count:
            raise InvalidArgument(f"input '{name}': more than {count} BYTES elements in the data")
        if offset + 4 > len(view):
            raise InvalidArgument(f"input '{name}': truncated BYTES element length at offset {offset}")
        (length,) = struct.unpack_from("<I", view, offset)
        offset += 4
        if offset + length > len(view):
            raise InvalidArgument(f"input '{name}': BYTES element of {length} bytes overruns the data")
        items.append(bytes(view[offset : offset + length]))
        offset += length
    if len(items) != count:
        raise InvalidArgument(f"input '{name}': expected {count} BYTES elements, got {len(items)}")
    out = np.empty(len(items), dtype=np.object_)
    out[:] = items
    return out


def tensor_to_raw(array: np.ndarray) -> bytes:
    if array.dtype == np.object_:
        return serialize_bytes_tensor(array)
    return np.ascontiguousarray(array).tobytes()


def tensor_from_raw(name: str, dtype: DataType, shape: list[int], raw: bytes | memoryview) -> np.ndarray:
    count = element_count(shape)
    if dtype.v2 == "BYTES":
        return deserialize_bytes_tensor(name, raw, count).reshape(shape)
    expected = count * dtype.numpy.itemsize
    if len(raw) != expected:
        raise InvalidArgument(
            f"input '{name}': {dtype.v2} shape {shape} needs {expected} bytes of data, got {len(raw)}"
        )
    return np.frombuffer(raw, dtype=dtype.numpy).reshape(shape)


# --- JSON tensors ---


def _numeric_array(name: str, dtype: DataType, data: Any) -> np.ndarray:
    """JSON numbers (flat or nested lists) to a flat array, the checking done by numpy in C."""
    try:
        array = np.array(data)
    except (ValueError, TypeError):
        raise InvalidArgument(f"input '{name}': data is not a regular nested list of numbers") from None
    array = array.reshape(-1)
    if dtype.numpy.kind in "iu":
        if array.dtype.kind == "f" and dtype.numpy == np.uint64:
            items = _flat_items(name, data)  # above 2**63 numpy guesses float64: use the ints as sent
            if all(type(x) is int and x >= 0 for x in items):
                array = np.array(items, dtype=np.uint64)
        if array.dtype.kind not in "iu":
            raise InvalidArgument(f"input '{name}': {dtype.v2} elements must be integers")
        info = np.iinfo(dtype.numpy)
        if array.size and (array.min() < info.min or array.max() > info.max):
            raise InvalidArgument(f"input '{name}': a value is out of range for {dtype.v2}")
    elif array.dtype.kind not in "iuf":
        raise InvalidArgument(f"input '{name}': {dtype.v2} elements must be numbers")
    return array.astype(dtype.numpy, copy=False)


def _flat_items(name: str, data: Any) -> list[Any]:
    if not isinstance(data, list):
        return [data]
    if data and isinstance(data[0], list):
        try:
            return np.array(data, dtype=object).reshape(-1).tolist()
        except ValueError:
            raise InvalidArgument(f"input '{name}': data is not a regular nested list") from None
    return data


def tensor_from_json(name: str, dtype: DataType, shape: list[int], data: Any) -> np.ndarray:
    count = element_count(shape)
    if dtype.v2 in ("BYTES", "BOOL"):
        flat = _flat_items(name, data)
        if len(flat) != count:
            raise InvalidArgument(f"input '{name}': shape {shape} needs {count} elements, got {len(flat)}")
        if dtype.v2 == "BOOL":
            if not all(isinstance(x, bool) for x in flat):
                raise InvalidArgument(f"input '{name}': BOOL elements must be true or false")
            return np.array(flat, dtype=np.bool_).reshape(shape)
        out = np.empty(count, dtype=np.object_)
        for i, item in enumerate(flat):
            if not isinstance(item, str):
                raise InvalidArgument(f"input '{name}': BYTES elements must be strings in JSON, got {clip(item)}")
            out[i] = item.encode()
        return out.reshape(shape)
    array = _numeric_array(name, dtype, data)
    if array.size != count:
        raise InvalidArgument(f"input '{name}': shape {shape} needs {count} elements, got {array.size}")
    return array.reshape(shape)


def tensor_to_json(array: np.ndarray) -> list[Any]:
    flat = array.reshape(-1)
    if array.dtype == np.object_:
        return [x.decode("utf-8", errors="replace") if isinstance(x, bytes) else str(x) for x in flat]
    return flat.tolist()


# --- gRPC typed contents ---


def tensor_from_contents(name: str, dtype: DataType, shape: list[int], contents: Any) -> np.ndarray:
    if not dtype.grpc_field:
        raise InvalidArgument(f"input '{name}': {dtype.v2} must be sent as raw_input_contents")
    values = getattr(contents, dtype.grpc_field)
    count = element_count(shape)
    if len(values) != count:
        raise InvalidArgument(f"input '{name}': shape {shape} needs {count} elements, got {len(values)}")
    if dtype.v2 == "BYTES":
        out = np.empty(count, dtype=np.object_)
        out[:] = list(values)
        return out.reshape(shape)
    return np.array(values, dtype=dtype.numpy).reshape(shape)
