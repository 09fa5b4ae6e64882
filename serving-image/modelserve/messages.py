"""What the data plane takes and answers, as plain typed values; each front end encodes them.

REST turns them into JSON (rest.py), gRPC into protobuf (grpc.py); neither re-parses the other's form.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from modelserve.config import TensorSpec


@dataclass
class InferInput:
    name: str
    datatype: str
    shape: list[int]
    array: np.ndarray


@dataclass
class RequestedOutput:
    name: str
    binary: bool = False


@dataclass
class InferRequest:
    model: str
    version: str = ""
    id: str = ""
    inputs: list[InferInput] = field(default_factory=list)
    outputs: list[RequestedOutput] = field(default_factory=list)
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass
class InferOutput:
    name: str
    datatype: str
    shape: list[int]
    array: np.ndarray


@dataclass
class InferResponse:
    model: str
    version: str
    id: str
    outputs: list[InferOutput]


@dataclass(frozen=True)
class ServerMetadata:
    name: str
    version: str
    extensions: tuple[str, ...]


@dataclass(frozen=True)
class ModelMetadata:
    name: str
    versions: tuple[str, ...]
    platform: str
    inputs: tuple[TensorSpec, ...]  # shapes as clients see them: with the batch dimension, -1 = any
    outputs: tuple[TensorSpec, ...]


@dataclass(frozen=True)
class RepositoryEntry:
    """One row of the repository index; empty fields are left out on the wire."""

    name: str
    version: str = ""
    state: str = ""
    reason: str = ""
