"""gRPC front end: `inference.GRPCInferenceService` as Triton serves it, over the data plane.

Handlers are registered by hand under Triton's service name (see proto/grpc_service.proto
for why the messages live in another protobuf package). They only translate.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol, TypeVar

import grpc
from google.protobuf.message import DecodeError

from modelserve import codecs, memory
from modelserve import messages as m
from modelserve.auth import TokenAuth
from modelserve.config import TensorSpec
from modelserve.dataplane import DataPlane
from modelserve.errors import InvalidArgument, ServeError, client_fault, clip, to_serve_error
from modelserve.metrics import Duration
from modelserve.proto import grpc_service_pb2 as pb
from modelserve.restrictions import Restrictions
from modelserve.statistics import VersionStatistics
from modelserve.tls import TlsFiles

log = logging.getLogger(__name__)

SERVICE = "inference.GRPCInferenceService"
THREAD_DECODE_BYTES = 1 << 20  # larger messages are parsed and decoded on a worker thread


def _param_value(param: pb.InferParameter) -> Any:
    choice = param.WhichOneof("parameter_choice")
    return getattr(param, choice) if choice else None


def decode_infer_request(msg: pb.ModelInferRequest) -> m.InferRequest:
    raw = list(msg.raw_input_contents)
    if raw and len(raw) != len(msg.inputs):
        raise InvalidArgument(f"{len(raw)} raw_input_contents for {len(msg.inputs)} inputs; send one per input")
    inputs: list[m.InferInput] = []
    for index, tensor in enumerate(msg.inputs):
        label = clip(tensor.name)
        dtype = codecs.datatype(tensor.datatype)
        shape = codecs.check_shape(label, list(tensor.shape))
        if raw:
            array = codecs.tensor_from_raw(label, dtype, shape, raw[index])
        else:
            array = codecs.tensor_from_contents(label, dtype, shape, tensor.contents)
        inputs.append(m.InferInput(tensor.name, dtype.v2, shape, array))
    return m.InferRequest(
        model=msg.model_name,
        version=msg.model_version,
        id=msg.id,
        inputs=inputs,
        outputs=[m.RequestedOutput(o.name, binary=True) for o in msg.outputs],
        parameters={k: _param_value(v) for k, v in msg.parameters.items()},
    )


def parse_message(raw: bytes) -> pb.ModelInferRequest:
    try:
        return pb.ModelInferRequest.FromString(raw)
    except DecodeError as exc:
        raise InvalidArgument(f"malformed ModelInferRequest protobuf: {exc}") from None


def decode_message(msg: pb.ModelInferRequest) -> m.InferRequest:
    """A parsed message's tensors; whatever goes wrong is the client's fault."""
    try:
        return decode_infer_request(msg)
    except Exception as exc:  # decoding depends on the request alone
        raise client_fault(exc, "cannot decode the inference request") from None


async def parse_infer_request(raw: bytes, admit: Callable[[str, str], None]) -> m.InferRequest:
    """Parse, admit (model known and not overloaded) and decode; a large message decodes on a worker thread."""
    msg = parse_message(raw)
    admit(msg.model_name, msg.model_version)
    if len(raw) > THREAD_DECODE_BYTES:  # health and other clients never wait on a large message
        return await asyncio.to_thread(decode_message, msg)
    return decode_message(msg)


def encode_infer_response(response: m.InferResponse) -> pb.ModelInferResponse:
    msg = pb.ModelInferResponse(model_name=response.model, model_version=response.version, id=response.id)
    for out in response.outputs:
        msg.outputs.add(name=out.name, datatype=out.datatype, shape=out.shape)
        msg.raw_output_contents.append(codecs.tensor_to_raw(out.array))
    return msg


def encode_server_metadata(meta: m.ServerMetadata) -> pb.ServerMetadataResponse:
    return pb.ServerMetadataResponse(name=meta.name, version=meta.version, extensions=meta.extensions)


def _tensor(tensor: TensorSpec) -> pb.ModelMetadataResponse.TensorMetadata:
    return pb.ModelMetadataResponse.TensorMetadata(name=tensor.name, datatype=tensor.datatype.v2, shape=tensor.shape)


def encode_model_metadata(meta: m.ModelMetadata) -> pb.ModelMetadataResponse:
    return pb.ModelMetadataResponse(
        name=meta.name,
        versions=meta.versions,
        platform=meta.platform,
        inputs=[_tensor(t) for t in meta.inputs],
        outputs=[_tensor(t) for t in meta.outputs],
    )


def encode_index(entries: list[m.RepositoryEntry]) -> pb.RepositoryIndexResponse:
    return pb.RepositoryIndexResponse(
        models=[
            pb.RepositoryIndexResponse.ModelIndex(name=e.name, version=e.version, state=e.state, reason=e.reason)
            for e in entries
        ]
    )


def _duration(d: Duration) -> pb.StatisticDuration:
    return pb.StatisticDuration(count=d.count, ns=d.ns)


def encode_statistics(versions: list[VersionStatistics]) -> pb.ModelStatisticsResponse:
    response = pb.ModelStatisticsResponse()
    for v in versions:
        s = v.stats
        response.model_stats.add(
            name=v.name,
            version=v.version,
            last_inference=s.last_inference_ms,
            inference_count=s.inference_count,
            execution_count=s.execution_count,
            inference_stats=pb.InferStatistics(
                success=_duration(s.success),
                fail=_duration(s.fail),
                queue=_duration(s.queue),
                compute_input=_duration(s.compute_input),
                compute_infer=_duration(s.compute_infer),
                compute_output=_duration(s.compute_output),
                cache_hit=_duration(s.cache_hit),
                cache_miss=_duration(s.cache_miss),
            ),
            batch_stats=[
                pb.InferBatchStatistics(
                    batch_size=size,
                    compute_input=_duration(b.compute_input),
                    compute_infer=_duration(b.compute_infer),
                    compute_output=_duration(b.compute_output),
                )
                for size, b in sorted(s.batches.items())
            ],
        )
    return response


class InferenceServicer:
    def __init__(
        self, dataplane: DataPlane, restrictions: Restrictions | None = None, auth: TokenAuth | None = None
    ) -> None:
        self.dp = dataplane
        self.restrictions = restrictions or Restrictions()
        self.auth = auth

    async def ServerLive(self, request: pb.ServerLiveRequest, context: Any) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=self.dp.live())

    async def ServerReady(self, request: pb.ServerReadyRequest, context: Any) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self.dp.ready())

    async def ModelReady(self, request: pb.ModelReadyRequest, context: Any) -> pb.ModelReadyResponse:
        return pb.ModelReadyResponse(ready=self.dp.model_ready(request.name, request.version))

    async def ServerMetadata(self, request: pb.ServerMetadataRequest, context: Any) -> pb.ServerMetadataResponse:
        return encode_server_metadata(self.dp.server_metadata())

    async def ModelMetadata(self, request: pb.ModelMetadataRequest, context: Any) -> pb.ModelMetadataResponse:
        return encode_model_metadata(self.dp.model_metadata(request.name, request.version))

    async def ModelConfig(self, request: pb.ModelConfigRequest, context: Any) -> pb.ModelConfigResponse:
        return pb.ModelConfigResponse(config=self.dp.model_config(request.name, request.version))

    async def ModelStatistics(self, request: pb.ModelStatisticsRequest, context: Any) -> pb.ModelStatisticsResponse:
        return encode_statistics(self.dp.statistics(request.name, request.version))

    async def RepositoryIndex(self, request: pb.RepositoryIndexRequest, context: Any) -> pb.RepositoryIndexResponse:
        return encode_index(self.dp.repository_index(request.ready))

    async def RepositoryModelLoad(
        self, request: pb.RepositoryModelLoadRequest, context: Any
    ) -> pb.RepositoryModelLoadResponse:
        await self.dp.load_model(request.model_name)
        return pb.RepositoryModelLoadResponse()

    async def RepositoryModelUnload(
        self, request: pb.RepositoryModelUnloadRequest, context: Any
    ) -> pb.RepositoryModelUnloadResponse:
        await self.dp.unload_model(request.model_name)
        return pb.RepositoryModelUnloadResponse()

    async def ModelInfer(self, raw: bytes, context: Any) -> pb.ModelInferResponse:
        request = await parse_infer_request(raw, self.dp.admit)
        del raw  # the decoded tensors are all that is needed from here on
        return encode_infer_response(await self.dp.infer(request))

    async def ModelStreamInfer(self, messages: AsyncIterator[bytes], context: Any) -> AsyncIterator[bytes]:
        """One response per message; a bad message answers with error_message and the stream goes on.

        Each message goes through the same guard as a unary call (`guarded`): the same error
        mapping, and no traceback keeping a message's bytes alive.
        """
        async for raw in messages:
            memory.request_done(len(raw))
            answer = await guarded(self._stream_one, raw)
            del raw
            if isinstance(answer, ServeError):
                reply = pb.ModelStreamInferResponse(error_message=answer.message)
            else:
                reply = pb.ModelStreamInferResponse(infer_response=answer)
            answer = None
            yield reply.SerializeToString()

    async def _stream_one(self, raw: bytes) -> pb.ModelInferResponse:
        request = await parse_infer_request(raw, self.dp.admit)
        del raw
        return encode_infer_response(await self.dp.infer(request))


UNARY: dict[str, tuple[type[Any], type[Any]]] = {
    "ServerLive": (pb.ServerLiveRequest, pb.ServerLiveResponse),
    "ServerReady": (pb.ServerReadyRequest, pb.ServerReadyResponse),
    "ModelReady": (pb.ModelReadyRequest, pb.ModelReadyResponse),
    "ServerMetadata": (pb.ServerMetadataRequest, pb.ServerMetadataResponse),
    "ModelMetadata": (pb.ModelMetadataRequest, pb.ModelMetadataResponse),
    "ModelInfer": (bytes, pb.ModelInferResponse),
    "ModelConfig": (pb.ModelConfigRequest, pb.ModelConfigResponse),
    "ModelStatistics": (pb.ModelStatisticsRequest, pb.ModelStatisticsResponse),
    "RepositoryIndex": (pb.RepositoryIndexRequest, pb.RepositoryIndexResponse),
    "RepositoryModelLoad": (pb.RepositoryModelLoadRequest, pb.RepositoryModelLoadResponse),
    "RepositoryModelUnload": (pb.RepositoryModelUnloadRequest, pb.RepositoryModelUnloadResponse),
}


API_OF = {
    "ServerLive": "health",
    "ServerReady": "health",
    "ModelReady": "health",
    "ServerMetadata": "metadata",
    "ModelMetadata": "metadata",
    "ModelInfer": "inference",
    "ModelStreamInfer": "inference",
    "ModelConfig": "model-config",
    "ModelStatistics": "statistics",
    "RepositoryIndex": "model-repository",
    "RepositoryModelLoad": "model-repository",
    "RepositoryModelUnload": "model-repository",
}


class HasMetadata(Protocol):
    """What the access checks read from a call: grpc.aio's ServicerContext, or grpcwire.CallContext."""

    def invocation_metadata(self) -> Any: ...


def check_restricted(restrictions: Restrictions, auth: TokenAuth | None, api: str, context: HasMetadata) -> None:
    """The auth token (UNAUTHENTICATED), then the restricted API's header key (PERMISSION_DENIED)."""
    if not restrictions.by_api and auth is None:
        return
    metadata = context.invocation_metadata() or ()

    def header(key: str) -> str | None:
        return next((v if isinstance(v, str) else v.decode("latin-1") for k, v in metadata if k.lower() == key), None)

    if auth is not None:
        auth.check(api, header)
    restrictions.check(api, header)


T = TypeVar("T")


async def guarded(call: Callable[..., Awaitable[T]], *args: Any) -> T | ServeError:
    """Await `call(*args)`; any failure comes back as the `ServeError` a client sees (errors.to_serve_error).

    The error is returned without its traceback: a traceback would keep the failed call's
    frames, and with them the request's bytes and tensors, alive until the garbage collector runs.
    """
    try:
        return await call(*args)
    except Exception as exc:
        error = to_serve_error(exc)
    error.__traceback__ = error.__context__ = error.__cause__ = None
    return error


def unary_handler(
    method: Callable[[Any, Any], Awaitable[Any]],
    request_type: type[Any],
    api: str,
    restrictions: Restrictions,
    auth: TokenAuth | None,
) -> Callable[[bytes, Any], Awaitable[Any]]:
    """A unary call as both front ends run it: access checks, parsing and the call under `guarded`.

    It returns the response message, or the `ServeError` to answer with (never raises but
    for cancellation). Parsing happens here rather than in grpc's deserializer, which would
    answer a malformed message with UNKNOWN; here it is INVALID_ARGUMENT with the reason.
    """

    raw_request = request_type is bytes  # the method parses (and decodes) the bytes itself

    async def call(raw: bytes, context: HasMetadata) -> Any:
        check_restricted(restrictions, auth, api, context)
        if raw_request:
            return await method(raw, context)
        try:
            request = request_type.FromString(raw)
        except DecodeError as exc:
            raise InvalidArgument(f"malformed {request_type.__name__} protobuf: {exc}") from None
        return await method(request, context)

    async def handler(raw: bytes, context: HasMetadata) -> Any:
        memory.request_done(len(raw))  # the trim runs after this call has let go of the request
        return await guarded(call, raw, context)

    return handler


def unary_handlers(
    servicer: InferenceServicer, restrictions: Restrictions, auth: TokenAuth | None
) -> dict[str, Callable[[bytes, Any], Awaitable[Any]]]:
    """Every unary method by name (see `unary_handler`)."""
    return {
        name: unary_handler(getattr(servicer, name), req, API_OF[name], restrictions, auth)
        for name, (req, _) in UNARY.items()
    }


def stream_refusal(restrictions: Restrictions, auth: TokenAuth | None, context: HasMetadata) -> ServeError | None:
    """ModelStreamInfer's access checks, under the same mapping as a unary call's: the refusal, or None."""
    try:
        check_restricted(restrictions, auth, API_OF["ModelStreamInfer"], context)
    except Exception as exc:
        return to_serve_error(exc)
    return None


def _guard(
    handle: Callable[[bytes, Any], Awaitable[Any]], response_type: type[Any]
) -> Callable[[bytes, Any], Awaitable[Any]]:
    """A grpc.aio unary handler: a refusal or failure sets the call's status."""

    async def handler(raw: bytes, context: grpc.aio.ServicerContext) -> Any:
        answer = await handle(raw, context)
        if not isinstance(answer, ServeError):
            return answer
        context.set_code(answer.grpc_code)
        context.set_details(answer.message)
        return response_type()

    return handler


def _guard_stream(
    method: Callable[[AsyncIterator[bytes], Any], AsyncIterator[bytes]],
    restrictions: Restrictions,
    auth: TokenAuth | None,
) -> Callable[[AsyncIterator[bytes], Any], AsyncIterator[bytes]]:
    """A grpc.aio streaming handler: the same access checks and error mapping as a unary call, then the stream."""

    async def handler(messages: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
        refused = stream_refusal(restrictions, auth, context)
        if refused is not None:
            await context.abort(refused.grpc_code, refused.message)
        async for reply in method(messages, context):
            yield reply

    return handler


def generic_handler(
    dataplane: DataPlane, restrictions: Restrictions | None = None, auth: TokenAuth | None = None
) -> grpc.GenericRpcHandler:
    restrictions = restrictions or Restrictions()
    servicer = InferenceServicer(dataplane, restrictions, auth)
    unary = unary_handlers(servicer, restrictions, auth)
    handlers: dict[str, grpc.RpcMethodHandler] = {
        name: grpc.unary_unary_rpc_method_handler(_guard(unary[name], resp), response_serializer=resp.SerializeToString)
        for name, (_, resp) in UNARY.items()
    }
    handlers["ModelStreamInfer"] = grpc.stream_stream_rpc_method_handler(
        _guard_stream(servicer.ModelStreamInfer, restrictions, auth)
    )
    return grpc.method_handlers_generic_handler(SERVICE, handlers)


def create_server(
    dataplane: DataPlane,
    address: str,
    max_message_bytes: int,
    restrictions: Restrictions | None = None,
    *,
    auth: TokenAuth | None = None,
    tls: TlsFiles | None = None,
    max_connections: int = 0,
) -> grpc.aio.Server:
    """A gRPC server on `address`; several may share the port (SO_REUSEPORT, see modelserve.shutdown)."""
    options: list[tuple[str, Any]] = [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.so_reuseport", 1),
    ]
    if max_connections > 0:
        options.append(("grpc.max_allowed_incoming_connections", max_connections))
    server = grpc.aio.server(options=options)
    server.add_generic_rpc_handlers((generic_handler(dataplane, restrictions, auth),))
    bound = server.add_secure_port(address, tls.grpc_credentials()) if tls else server.add_insecure_port(address)
    if bound == 0:
        raise OSError(f"cannot bind gRPC port {address}")
    return server
