"""What the serving benchmark measures: models, request bodies, cells, and one measurement's result."""

from __future__ import annotations

import itertools
import os
import struct
from dataclasses import dataclass, field

import numpy as np
import orjson

from modelserve.proto import grpc_service_pb2 as pb

MODELS: dict[str, tuple[int, ...]] = {"mlp": (256,), "cnn": (3, 64, 64)}
MODELSERVE_ARGS = os.environ.get(
    "BENCH_MODELSERVE_ARGS", "--max-batch-size=32 --max-queue-delay-us=2000 --intra-op-threads=2"
).split()
TRANSPORTS = ("-http-json", "-http-binary", "-grpc")


@dataclass
class Cell:
    model: str
    target: str  # naive | modelserve[-w2|-cached|-<front end>][-miss]-(http-json|http-binary|grpc)
    concurrency: int
    rps: list[float] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)
    cpu_percent: list[float] = field(default_factory=list)
    client_cpu_percent: list[float] = field(default_factory=list)
    client: str = ""  # the load generator that drove it: h2load | wrk | python
    errors: int = 0

    @property
    def key(self) -> str:
        return f"{self.model}/{self.target}/c{self.concurrency}"


@dataclass
class Measurement:
    """One cell, one round, as a load generator saw it (latencies and counts: the measured period only)."""

    client: str
    ok: int  # successful requests answered in the measured period
    errors: int
    elapsed_s: float  # the measured period
    latencies_ms: list[float]
    client_cpu_s: float  # the load generator's own CPU (user + system), over its whole run
    client_wall_s: float  # the wall time that CPU was spent in
    detail: str = ""  # what the client said about its errors, if any

    @property
    def rps(self) -> float:
        return self.ok / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def client_cpu_percent(self) -> float:
        return 100 * self.client_cpu_s / self.client_wall_s if self.client_wall_s > 0 else float("nan")


def request_bodies(model: str) -> dict[str, tuple[bytes, dict[str, str]]]:
    """Per transport: the body (serialized once) and its headers. gRPC: the serialized ModelInferRequest."""
    shape = [1, *MODELS[model]]
    data = np.random.default_rng(1).standard_normal(shape, dtype=np.float32)
    v2_json = {
        "inputs": [{"name": "input", "shape": shape, "datatype": "FP32", "data": data.reshape(-1).tolist()}],
        "outputs": [{"name": "output", "parameters": {"binary_data": False}}],
    }
    header = orjson.dumps(
        {
            "inputs": [
                {"name": "input", "shape": shape, "datatype": "FP32", "parameters": {"binary_data_size": data.nbytes}}
            ],
            "outputs": [{"name": "output", "parameters": {"binary_data": True}}],
        }
    )
    grpc_request = pb.ModelInferRequest(model_name=model)
    grpc_request.inputs.add(name="input", datatype="FP32", shape=shape)
    grpc_request.raw_input_contents.append(data.tobytes())
    return {
        "naive": (orjson.dumps({"inputs": data.tolist()}), {"content-type": "application/json"}),
        "modelserve-http-json": (orjson.dumps(v2_json), {"content-type": "application/json"}),
        "modelserve-http-binary": (
            header + data.tobytes(),
            {"content-type": "application/octet-stream", "Inference-Header-Content-Length": str(len(header))},
        ),
        "modelserve-grpc": (grpc_request.SerializeToString(), {}),
    }


UNIQUE = itertools.count()


def unique_body(body: bytes) -> bytes:
    """The body with its last 8 bytes (inside the input tensor) made unique: a true cache miss."""
    buf = bytearray(body)
    struct.pack_into("<Q", buf, len(buf) - 8, next(UNIQUE))
    return bytes(buf)


def server_of(target: str) -> str:
    """The server a target runs against: modelserve-w2-grpc -> modelserve-w2."""
    target = target.replace("-miss", "")
    for suffix in TRANSPORTS:
        target = target.removesuffix(suffix)
    return target


def transport(target: str) -> str:
    """The request body a target sends: modelserve-w2-grpc sends what modelserve-grpc does."""
    if target == "naive":
        return target
    for suffix in TRANSPORTS:
        if target.endswith(suffix):
            return "modelserve" + suffix
    raise ValueError(f"no transport in {target}")


def url_path(target: str, model: str) -> str:
    if target == "naive":
        return f"/predict/{model}"
    if target.endswith("-grpc"):
        return "/inference.GRPCInferenceService/ModelInfer"
    return f"/v2/models/{model}/infer"


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")
