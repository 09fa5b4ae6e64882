"""gRPC front end: `inference.GRPCInferenceService` as Triton serves it, over the data plane.

Handlers are registered by hand under Triton's service name (see proto/grpc_service.proto
for why the messages live in another protobuf package). They only translate.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from google.protobuf import json_format
from google.protobuf.message import DecodeError

from modelserve import codecs, memory
from modelserve.auth import TokenAuth
from modelserve.dataplane import DataPlane, InferInput, InferRequest, InferResponse, RequestedOutput
from modelserve.errors import InvalidArgument, ServeError, client_fault, clip
from modelserve.proto import grpc_service_pb2 as pb
from modelserve.restrictions import Restrictions
from modelserve.tls import TlsFiles

log = logging.getLogger(__name__)

SERVICE = "inference.GRPCInferenceService"
THREAD_DECODE_BYTES = 1 << 20  # larger messages are parsed and decoded on a worker thread


def _param_value(param: pb.InferParameter) -> Any:
    choice = param.WhichOneof("parameter_choice")
    return getattr(param, choice) if choice else None


def decode_infer_request(msg: pb.ModelInferRequest) -> InferRequest:
    raw = list(msg.raw_input_contents)
    if raw and len(raw) != len(msg.inputs):
        raise InvalidArgument(f"{len(raw)} raw_input_contents for {len(msg.inputs)} inputs; send one per input")
    inputs: list[InferInput] = []
    for index, tensor in enumerate(msg.inputs):
        label = clip(tensor.name)
        dtype = codecs.datatype(tensor.datatype)
        shape = codecs.check_shape(label, list(tensor.shape))
        if raw:
            array = codecs.tensor_from_raw(label, dtype, shape, raw[index])
        else:
            array = codecs.tensor_from_contents(label, dtype, shape, tensor.contents)
        inputs.append(InferInput(tensor.name, dtype.v2, shape, array))
    return InferRequest(
        model=msg.model_name,
        version=msg.model_version,
        id=msg.id,
        inputs=inputs,
        outputs=[RequestedOutput(o.name, binary=True) for o in msg.outputs],
        parameters={k: _param_value(v) for k, v in msg.parameters.items()},
    )


def parse_message(raw: bytes) -> pb.ModelInferRequest:
    try:
        return pb.ModelInferRequest.FromString(raw)
    except DecodeError as exc:
        raise InvalidArgument(f"malformed ModelInferRequest protobuf: {exc}") from None


def decode_message(msg: pb.ModelInferRequest) -> InferRequest:
    """A parsed message's tensors; whatever goes wrong is the client's fault."""
    try:
        return decode_infer_request(msg)
    except Exception as exc:  # decoding depends on the request alone
        raise client_fault(exc, "cannot decode the inference request") from None


async def parse_infer_request(raw: bytes, admit: Callable[[str, str], None]) -> InferRequest:
    """Parse, admit (model known and not overloaded) and decode; a large message decodes on a worker thread."""
    msg = parse_message(raw)
    admit(msg.model_name, msg.model_version)
    if len(raw) > THREAD_DECODE_BYTES:  # health and other clients never wait on a large message
        return await asyncio.to_thread(decode_message, msg)
    return decode_message(msg)


def encode_infer_response(response: InferResponse) -> pb.ModelInferResponse:
    msg = pb.ModelInferResponse(model_name=response.model, model_version=response.version, id=response.id)
    for out in response.outputs:
        msg.outputs.add(name=out.name, datatype=out.datatype, shape=out.shape)
        msg.raw_output_contents.append(codecs.tensor_to_raw(out.array))
    return msg


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
        return json_format.ParseDict(self.dp.server_metadata(), pb.ServerMetadataResponse())

    async def ModelMetadata(self, request: pb.ModelMetadataRequest, context: Any) -> pb.ModelMetadataResponse:
        return json_format.ParseDict(self.dp.model_metadata(request.name, request.version), pb.ModelMetadataResponse())

    async def ModelConfig(self, request: pb.ModelConfigRequest, context: Any) -> pb.ModelConfigResponse:
        return pb.ModelConfigResponse(config=self.dp.model_config(request.name, request.version))

    async def ModelStatistics(self, request: pb.ModelStatisticsRequest, context: Any) -> pb.ModelStatisticsResponse:
        stats = self.dp.statistics(request.name, request.version)
        return json_format.ParseDict(stats, pb.ModelStatisticsResponse())

    async def RepositoryIndex(self, request: pb.RepositoryIndexRequest, context: Any) -> pb.RepositoryIndexResponse:
        return json_format.ParseDict({"models": self.dp.repository_index(request.ready)}, pb.RepositoryIndexResponse())

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
        """One response per message; a bad message answers with error_message and the stream goes on."""
        try:
            check_restricted(self.restrictions, self.auth, "inference", context)
        except ServeError as exc:
            await context.abort(exc.grpc_code, exc.message)
        async for raw in messages:
            memory.request_done(len(raw))
            try:
                request = await parse_infer_request(raw, self.dp.admit)
                del raw
                reply = pb.ModelStreamInferResponse(infer_response=encode_infer_response(await self.dp.infer(request)))
            except ServeError as exc:
                reply = pb.ModelStreamInferResponse(error_message=exc.message)
            except Exception as exc:
                log.exception("unhandled error in ModelStreamInfer")
                reply = pb.ModelStreamInferResponse(error_message=f"internal error: {type(exc).__name__}")
            request = None
            yield reply.SerializeToString()


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


def check_restricted(
    restrictions: Restrictions, auth: TokenAuth | None, api: str, context: grpc.aio.ServicerContext
) -> None:
    """The auth token (UNAUTHENTICATED), then the restricted API's header key (PERMISSION_DENIED)."""
    if not restrictions.by_api and auth is None:
        return
    metadata = context.invocation_metadata() or ()

    def header(key: str) -> str | None:
        return next((v if isinstance(v, str) else v.decode("latin-1") for k, v in metadata if k.lower() == key), None)

    if auth is not None:
        auth.check(api, header)
    restrictions.check(api, header)


def _guard(
    method: Callable[[Any, Any], Awaitable[Any]],
    request_type: type[Any],
    response_type: type[Any],
    api: str,
    restrictions: Restrictions,
    auth: TokenAuth | None,
) -> Callable[[bytes, Any], Awaitable[Any]]:
    """Parse the request and map data plane errors to gRPC status codes.

    Parsing happens here rather than in grpc's deserializer, which would answer a
    malformed message with UNKNOWN; here it is INVALID_ARGUMENT with the reason.
    An unexpected error costs one call only. Errors set the status instead of raising
    through `context.abort`: an exception's traceback would keep this frame, and with it
    the request's bytes and tensors, alive until the garbage collector happens to run.
    """

    raw_request = request_type is bytes  # the method parses (and decodes) the bytes itself

    async def handler(raw: bytes, context: grpc.aio.ServicerContext) -> Any:
        memory.request_done(len(raw))  # the trim runs after this call has let go of the request
        try:
            check_restricted(restrictions, auth, api, context)
            if raw_request:
                return await method(raw, context)
            try:
                request = request_type.FromString(raw)
            except DecodeError as exc:
                raise InvalidArgument(f"malformed {request_type.__name__} protobuf: {exc}") from None
            return await method(request, context)
        except ServeError as exc:
            code, message = exc.grpc_code, exc.message
        except Exception as exc:
            log.exception("unhandled error in gRPC handler")
            code, message = grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}: {clip(str(exc), 300)}"
        context.set_code(code)
        context.set_details(message)
        return response_type()

    return handler


def generic_handler(
    dataplane: DataPlane, restrictions: Restrictions | None = None, auth: TokenAuth | None = None
) -> grpc.GenericRpcHandler:
    restrictions = restrictions or Restrictions()
    servicer = InferenceServicer(dataplane, restrictions, auth)
    handlers: dict[str, grpc.RpcMethodHandler] = {
        name: grpc.unary_unary_rpc_method_handler(
            _guard(getattr(servicer, name), req, resp, API_OF[name], restrictions, auth),
            response_serializer=resp.SerializeToString,
        )
        for name, (req, resp) in UNARY.items()
    }
    handlers["ModelStreamInfer"] = grpc.stream_stream_rpc_method_handler(servicer.ModelStreamInfer)
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
