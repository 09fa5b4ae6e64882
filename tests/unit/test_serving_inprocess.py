"""The data plane, the REST app and the gRPC servicer, in this process (no server subprocess).

A repository is built in code (modelserve.examples); the REST app is driven through httpx's
ASGI transport, the gRPC service through both front ends (the on-loop one and grpc.aio) on a
loopback port in the test's own event loop. The integration tests (tests/integration/
test_serving_*.py) cover the same answers through a real server and the real tritonclient.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import grpc
import httpx
import numpy as np
import orjson
import pytest

from modelserve import examples
from modelserve import grpc as grpc_front
from modelserve.dataplane import DataPlane
from modelserve.errors import ControlModeRefused, InvalidArgument, NotFound, Unavailable
from modelserve.grpcloop import GrpcLoopServer
from modelserve.messages import InferInput, InferRequest, RepositoryEntry, RequestedOutput
from modelserve.proto import grpc_service_pb2 as pb
from modelserve.repository import Repository, RepositorySettings
from modelserve.rest import RestApp

pytestmark = pytest.mark.timeout(30)

ONES = np.ones((1, 16), dtype=np.float32)
TWOS = np.full((1, 16), 2.0, dtype=np.float32)


@pytest.fixture
async def dataplane(tmp_path: Path) -> AsyncIterator[DataPlane]:
    root = examples.write_repository(tmp_path / "repo", ["simple"])
    examples.write_model(root, "reshaped", examples.simple(), config=RESHAPED)
    repository = Repository(RepositorySettings(root=root, startup_models=("simple", "reshaped")))
    await repository.load_startup_models()
    dp = DataPlane(repository)
    dp.lifecycle.started = True
    yield dp
    await repository.close()


RESHAPED = """
max_batch_size: 8
input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ 4, 4 ] reshape { shape: [ 16 ] } },
        { name: "INPUT1" data_type: TYPE_FP32 dims: [ 16 ] } ]
output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 4, 4 ] reshape { shape: [ 16 ] } },
         { name: "OUTPUT1" data_type: TYPE_FP32 dims: [ 16 ] } ]
"""


def simple_request(rows: int = 1, model: str = "simple") -> InferRequest:
    a, b = np.ones((rows, 16), np.float32), np.full((rows, 16), 2.0, np.float32)
    return InferRequest(
        model=model,
        id="r1",
        inputs=[InferInput("INPUT0", "FP32", [rows, 16], a), InferInput("INPUT1", "FP32", [rows, 16], b)],
    )


# --- the data plane, called directly ---


async def test_infer_answers_typed_outputs(dataplane: DataPlane) -> None:
    response = await dataplane.infer(simple_request(rows=3))
    assert (response.model, response.version, response.id) == ("simple", "1", "r1")
    out = {o.name: o for o in response.outputs}
    assert out["OUTPUT0"].shape == [3, 16] and out["OUTPUT0"].datatype == "FP32"
    np.testing.assert_array_equal(out["OUTPUT0"].array, np.full((3, 16), 3.0))
    np.testing.assert_array_equal(out["OUTPUT1"].array, np.full((3, 16), -1.0))


async def test_requested_outputs_only(dataplane: DataPlane) -> None:
    request = simple_request()
    request.outputs = [RequestedOutput("OUTPUT1")]
    response = await dataplane.infer(request)
    assert [o.name for o in response.outputs] == ["OUTPUT1"]
    request.outputs = [RequestedOutput("nope")]
    with pytest.raises(InvalidArgument, match="unknown output 'nope'"):
        await dataplane.infer(request)


async def test_reshape_applies_to_inputs_and_outputs(dataplane: DataPlane) -> None:
    a = np.arange(32, dtype=np.float32).reshape(2, 4, 4)
    request = InferRequest(
        model="reshaped",
        inputs=[
            InferInput("INPUT0", "FP32", [2, 4, 4], a),
            InferInput("INPUT1", "FP32", [2, 16], np.zeros((2, 16), np.float32)),
        ],
    )
    out = {o.name: o for o in (await dataplane.infer(request)).outputs}
    assert out["OUTPUT0"].shape == [2, 4, 4] and out["OUTPUT1"].shape == [2, 16]
    np.testing.assert_array_equal(out["OUTPUT0"].array, a)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda r: r.inputs.pop(), "missing input 'INPUT1'"),
        (lambda r: r.inputs.append(InferInput("X", "FP32", [1, 16], ONES)), "unexpected input 'X'"),
        (lambda r: r.inputs.append(InferInput("INPUT0", "FP32", [1, 16], ONES)), "more than once"),
        (lambda r: setattr(r.inputs[0], "datatype", "INT32"), "datatype INT32 does not match the model's FP32"),
        (lambda r: setattr(r.inputs[0], "shape", [1, 8]), r"shape \[1, 8\] does not match the model's \[-1, 16\]"),
        (lambda r: setattr(r.inputs[1], "shape", [2, 16]), "differs from other inputs"),
    ],
)
async def test_tensor_checks(dataplane: DataPlane, change: Callable[[InferRequest], object], message: str) -> None:
    request = simple_request()
    change(request)
    with pytest.raises(InvalidArgument, match=message):
        await dataplane.infer(request)
    assert dataplane.statistics("simple")[0].stats.fail.count == 1


async def test_batch_size_limit(dataplane: DataPlane) -> None:
    limit = dataplane.model_config("simple").max_batch_size
    with pytest.raises(InvalidArgument, match=f"outside 1..{limit}"):
        await dataplane.infer(simple_request(rows=limit + 1))


async def test_metadata_statistics_and_index_are_typed(dataplane: DataPlane) -> None:
    meta = dataplane.model_metadata("simple")
    assert meta.versions == ("1",) and meta.platform == "onnxruntime_onnx"
    assert [(t.name, t.datatype.v2, t.shape) for t in meta.inputs] == [
        ("INPUT0", "FP32", (-1, 16)),
        ("INPUT1", "FP32", (-1, 16)),
    ]
    assert "statistics" in dataplane.server_metadata().extensions
    await dataplane.infer(simple_request(rows=2))
    [stats] = dataplane.statistics("simple")
    assert (stats.name, stats.version, stats.stats.inference_count, stats.stats.success.count) == ("simple", "1", 2, 1)
    assert RepositoryEntry("simple", "1", "READY") in dataplane.repository_index()
    with pytest.raises(NotFound):
        dataplane.model_metadata("absent")


async def test_control_mode_and_lifecycle(dataplane: DataPlane) -> None:
    with pytest.raises(ControlModeRefused):
        await dataplane.unload_model("simple")
    assert dataplane.ready()
    assert await dataplane.lifecycle.drain(1.0)
    assert not dataplane.ready()
    with pytest.raises(Unavailable, match="shutting down"):
        await dataplane.infer(simple_request())


# --- REST, through the ASGI app ---


@pytest.fixture
async def rest(dataplane: DataPlane) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=RestApp(dataplane))
    async with httpx.AsyncClient(transport=transport, base_url="http://modelserve") as client:
        yield client


async def test_rest_infer_json_and_binary(rest: httpx.AsyncClient) -> None:
    body = {
        "id": "7",
        "inputs": [
            {"name": "INPUT0", "datatype": "FP32", "shape": [1, 16], "data": ONES.ravel().tolist()},
            {"name": "INPUT1", "datatype": "FP32", "shape": [1, 16], "data": TWOS.ravel().tolist()},
        ],
        "outputs": [{"name": "OUTPUT0"}, {"name": "OUTPUT1", "parameters": {"binary_data": True}}],
    }
    answer = await rest.post("/v2/models/simple/infer", content=orjson.dumps(body))
    assert answer.status_code == 200
    split = int(answer.headers["inference-header-content-length"])
    header = orjson.loads(answer.content[:split])
    assert header["id"] == "7" and header["outputs"][0]["data"] == [3.0] * 16
    assert np.frombuffer(answer.content[split:], np.float32).tolist() == [-1.0] * 16


async def test_rest_metadata_stats_config_index(rest: httpx.AsyncClient) -> None:
    assert (await rest.get("/v2/health/ready")).status_code == 200
    meta = (await rest.get("/v2/models/simple")).json()
    assert meta["inputs"][0] == {"name": "INPUT0", "datatype": "FP32", "shape": [-1, 16]}
    assert (await rest.get("/v2")).json()["name"] == "modelserve"
    stats = (await rest.get("/v2/models/simple/stats")).json()["model_stats"][0]
    assert stats["inference_stats"]["success"] == {"count": 0, "ns": 0}
    config = (await rest.get("/v2/models/simple/config")).json()
    assert config["name"] == "simple" and config["max_batch_size"] > 0
    index = (await rest.post("/v2/repository/index", content=b"")).json()
    assert {"name": "simple", "version": "1", "state": "READY"} in index


async def test_rest_errors_map_to_statuses(rest: httpx.AsyncClient) -> None:
    assert (await rest.get("/v2/models/absent")).status_code == 404
    bad = await rest.post("/v2/models/simple/infer", content=b"{not json")
    assert bad.status_code == 400 and "malformed JSON" in bad.json()["error"]
    refused = await rest.post("/v2/repository/models/simple/unload")
    assert refused.status_code == 400


# --- gRPC, on a loopback port in this event loop ---


@pytest.fixture(params=["loop", "grpcio"])
async def stub(dataplane: DataPlane, request: pytest.FixtureRequest) -> AsyncIterator[grpc.aio.Channel]:
    """A channel to either front end: the on-loop one (modelserve.grpcloop) or grpc.aio's."""
    if request.param == "loop":
        server: grpc.aio.Server | GrpcLoopServer = GrpcLoopServer(dataplane, "127.0.0.1", 0, 1 << 20)
        await server.start()
        port = server.port
    else:
        server = grpc_front.create_server(dataplane, "127.0.0.1:0", 1 << 20)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield channel
    await server.stop(None)


def _call(channel: grpc.aio.Channel, method: str, response: type) -> grpc.aio.UnaryUnaryMultiCallable:
    return channel.unary_unary(
        f"/{grpc_front.SERVICE}/{method}",
        request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=response.FromString,
    )


def _infer_message(model: str = "simple") -> pb.ModelInferRequest:
    msg = pb.ModelInferRequest(model_name=model, id="g1")
    for name, array in (("INPUT0", ONES), ("INPUT1", TWOS)):
        msg.inputs.add(name=name, datatype="FP32", shape=[1, 16])
        msg.raw_input_contents.append(array.tobytes())
    return msg


async def test_grpc_infer_metadata_and_statistics(stub: grpc.aio.Channel) -> None:
    answer = await _call(stub, "ModelInfer", pb.ModelInferResponse)(_infer_message())
    assert answer.id == "g1" and [o.name for o in answer.outputs] == ["OUTPUT0", "OUTPUT1"]
    assert np.frombuffer(answer.raw_output_contents[0], np.float32).tolist() == [3.0] * 16
    meta = await _call(stub, "ModelMetadata", pb.ModelMetadataResponse)(pb.ModelMetadataRequest(name="simple"))
    assert list(meta.inputs[0].shape) == [-1, 16] and list(meta.versions) == ["1"]
    stats = await _call(stub, "ModelStatistics", pb.ModelStatisticsResponse)(pb.ModelStatisticsRequest(name="simple"))
    assert stats.model_stats[0].inference_stats.success.count == 1 and stats.model_stats[0].inference_count == 1
    index = await _call(stub, "RepositoryIndex", pb.RepositoryIndexResponse)(pb.RepositoryIndexRequest())
    assert ("simple", "1", "READY") in [(m.name, m.version, m.state) for m in index.models]
    server = await _call(stub, "ServerMetadata", pb.ServerMetadataResponse)(pb.ServerMetadataRequest())
    assert "model_repository" in server.extensions


async def test_grpc_errors_map_to_codes(stub: grpc.aio.Channel) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await _call(stub, "ModelMetadata", pb.ModelMetadataResponse)(pb.ModelMetadataRequest(name="absent"))
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    bad = _infer_message()
    bad.inputs[0].datatype = "INT32"
    with pytest.raises(grpc.aio.AioRpcError) as invalid:
        await _call(stub, "ModelInfer", pb.ModelInferResponse)(bad)
    assert invalid.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_grpc_stream_goes_through_the_same_guard(stub: grpc.aio.Channel) -> None:
    bad = _infer_message("absent")
    stream = stub.stream_stream(
        f"/{grpc_front.SERVICE}/ModelStreamInfer",
        request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=pb.ModelStreamInferResponse.FromString,
    )
    replies = [reply async for reply in stream(iter([_infer_message(), bad, _infer_message()]))]
    assert [r.error_message for r in replies][0::2] == ["", ""]
    assert "absent" in replies[1].error_message and replies[2].infer_response.id == "g1"
