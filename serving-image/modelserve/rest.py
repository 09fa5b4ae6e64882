"""HTTP/REST front end: the KServe V2 protocol with Triton's extensions, as a bare ASGI app.

It only translates: HTTP + JSON (+ binary tensor data) in, data plane call, HTTP out.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
import orjson

from modelserve import codecs, contract, memory
from modelserve import config as cfg
from modelserve.auth import TokenAuth
from modelserve.bodies import parse_length, read_body
from modelserve.dataplane import DataPlane
from modelserve.errors import (
    InvalidArgument,
    NotFound,
    RequestTimeout,
    Unauthenticated,
    client_fault,
    clip,
    to_serve_error,
)
from modelserve.messages import (
    InferInput,
    InferRequest,
    InferResponse,
    ModelMetadata,
    RepositoryEntry,
    RequestedOutput,
    ServerMetadata,
)
from modelserve.metrics import Duration
from modelserve.restrictions import Restrictions
from modelserve.statistics import VersionStatistics

log = logging.getLogger(__name__)

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

HEADER_LENGTH = "inference-header-content-length"
HEADER_LENGTH_KEY = HEADER_LENGTH.encode()
MODEL_ROUTE = re.compile(r"^/v2/models/(?P<name>[^/]+)(?:/versions/(?P<version>[^/]+))?(?P<action>/[a-z]+)?$")
REPO_ROUTE = re.compile(r"^/v2/repository/models/(?P<name>[^/]+)/(?P<action>load|unload)$")
JSON_HEADERS = [(b"content-type", b"application/json")]
CONNECTION_CLOSE = (b"connection", b"close")
THREAD_DECODE_BYTES = 1 << 20


class Response:
    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, body: bytes = b"", headers: list[tuple[bytes, bytes]] | None = None) -> None:
        self.status = status
        self.body = body
        self.headers = headers if headers is not None else JSON_HEADERS


def json_response(payload: Any, status: int = 200) -> Response:
    return Response(status, orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY))


def error_response(status: int, message: str) -> Response:
    return json_response({"error": message}, status)


MODEL_ACTION_API = {"": "metadata", "/ready": "health", "/config": "model-config", "/stats": "statistics"}


def api_group(path: str) -> str:
    """The tritonserver API group a path belongs to (--http-restricted-api)."""
    if path.startswith("/v2/health/"):
        return "health"
    if path.startswith("/v2/repository/"):
        return "model-repository"
    if path == "/v2/models/stats":
        return "statistics"
    match = MODEL_ROUTE.match(path)
    if match is not None:
        return "inference" if match["action"] == "/infer" else MODEL_ACTION_API.get(match["action"] or "", "metadata")
    return "metadata"


class RestApp:
    def __init__(
        self,
        dataplane: DataPlane,
        max_body_bytes: int = contract.DEFAULT_MAX_BODY_BYTES,
        restrictions: Restrictions | None = None,
        auth: TokenAuth | None = None,
        body_timeout_secs: float = math.inf,
    ) -> None:
        self.dataplane = dataplane
        self.max_body_bytes = max_body_bytes
        self.restrictions = restrictions or Restrictions()
        self.auth = auth
        self.body_timeout_secs = body_timeout_secs
        self.closing = False  # shutting down: every answer closes its connection (clients reconnect elsewhere)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        close = self.closing
        try:
            response = await self._dispatch(scope, receive)
        except Exception as exc:  # a bug must cost one request, never the server
            error = to_serve_error(exc)
            response = error_response(error.http_status, error.message)
            if isinstance(error, Unauthenticated):
                response.headers = [*response.headers, (b"www-authenticate", b"Bearer")]
            close = close or isinstance(error, RequestTimeout)  # the rest of that body is not worth waiting for
        headers = [*response.headers, (b"content-length", str(len(response.body)).encode())]
        if close or self.closing:
            headers.append(CONNECTION_CLOSE)
        await send({"type": "http.response.start", "status": response.status, "headers": headers})
        await send({"type": "http.response.body", "body": response.body})

    async def _read_body(self, headers: dict[bytes, bytes], receive: Receive) -> bytes:
        return await read_body(headers, receive, self.max_body_bytes, self.body_timeout_secs)

    async def _dispatch(self, scope: Scope, receive: Receive) -> Response:
        method, path = scope["method"], scope["path"].rstrip("/") or "/"
        headers = dict(scope["headers"])
        if self.restrictions.by_api or self.auth is not None:

            def header(key: str) -> str | None:
                value = headers.get(key.encode())
                return None if value is None else value.decode("latin-1")

            group = api_group(path)
            if self.auth is not None:
                self.auth.check(group, header)
            self.restrictions.check(group, header)
        dp = self.dataplane
        if method == "GET":
            if path == "/v2/health/live":
                return Response(200 if dp.live() else 503)
            if path == "/v2/health/ready":
                return Response(200 if dp.ready() else 503)
            if path == "/v2":
                return json_response(server_metadata_json(dp.server_metadata()))
            if path == "/v2/models/stats":
                return json_response(statistics_json(dp.statistics()))
        if path == "/v2/repository/index" and method == "POST":
            body = parse_json(await self._read_body(headers, receive), allow_empty=True)
            return json_response([index_entry_json(e) for e in dp.repository_index(bool(body.get("ready", False)))])
        match = REPO_ROUTE.match(path)
        if match and method == "POST":
            await self._read_body(headers, receive)
            if match["action"] == "load":
                await dp.load_model(match["name"])
            else:
                await dp.unload_model(match["name"])
            return Response(200)
        match = MODEL_ROUTE.match(path)
        if match is None:
            raise NotFound(f"no route for {method} {clip(path)}")
        name, version, action = match["name"], match["version"] or "", match["action"] or ""
        if method == "POST" and action == "/infer":
            dp.admit(name, version)  # unknown model, shutting down, full queue: refused before the body is read
            return await self._infer(name, version, headers, await self._read_body(headers, receive))
        if method != "GET":
            raise NotFound(f"no route for {method} {clip(path)}")
        if action == "":
            return json_response(model_metadata_json(dp.model_metadata(name, version)))
        if action == "/ready":
            return Response(200 if dp.model_ready(name, version) else 503)
        if action == "/config":
            return json_response(cfg.message_to_json(dp.model_config(name, version)))
        if action == "/stats":
            return json_response(statistics_json(dp.statistics(name, version)))
        raise NotFound(f"no route for {method} {clip(path)}")

    async def _infer(self, name: str, version: str, headers: dict[bytes, bytes], body: bytes) -> Response:
        memory.request_done(len(body))  # the trim runs after this request has let go of its body
        header_length = headers.get(HEADER_LENGTH_KEY)
        split = None if header_length is None else parse_length(header_length, "Inference-Header-Content-Length")
        if split is not None and split > len(body):
            raise InvalidArgument(f"Inference-Header-Content-Length {split} is beyond the {len(body)} byte body")
        dp = self.dataplane
        exact = None
        if dp.cache is not None and len(body) <= THREAD_DECODE_BYTES:
            # a byte-identical request to a cached version: the answer sent before, without decoding again
            exact = dp.exact_answer("http", name, version, (b"" if split is None else b"%d" % split, body))
            if exact is not None and exact.answer is not None:
                return exact.answer  # type: ignore[no-any-return]
        if len(body) > THREAD_DECODE_BYTES:  # a large body decodes on a worker thread: health never waits on it
            request = await asyncio.to_thread(decode_body, name, version, body, split)
        else:
            request = decode_body(name, version, body, split)
        response, ticket = await dp.infer_with_ticket(request)
        answer = encode_infer_response(request, response)
        if exact is not None:
            nbytes = len(answer.body) + sum(len(k) + len(v) for k, v in answer.headers)
            dp.remember_answer(exact, ticket, answer, nbytes)
        return answer


def parse_json(raw: bytes | memoryview, allow_empty: bool = False) -> dict[str, Any]:
    if not raw and allow_empty:
        return {}
    try:
        payload = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidArgument(f"malformed JSON in request body: {exc}") from None
    if not isinstance(payload, dict):
        raise InvalidArgument("request body must be a JSON object")
    return payload


def decode_body(name: str, version: str, body: bytes, split: int | None) -> InferRequest:
    """JSON header (+ binary tensor data after `split` bytes) to a request; any failure is the client's."""
    try:
        if split is not None:
            view = memoryview(body)
            payload, binary = parse_json(view[:split]), view[split:]
        else:
            payload, binary = parse_json(body), memoryview(b"")
        return decode_infer_request(name, version, payload, binary)
    except Exception as exc:  # decoding depends on the request alone
        raise client_fault(exc, "cannot decode the inference request") from None


def _parameters(obj: dict[str, Any], kind: str, name: str = "") -> dict[str, Any]:
    params = obj.get("parameters", {})
    if not isinstance(params, dict):
        where = f"{kind} '{name}'" if name else kind
        raise InvalidArgument(f"{where}: parameters must be a JSON object")
    return params


def decode_infer_request(name: str, version: str, payload: dict[str, Any], binary: memoryview) -> InferRequest:
    inputs_json = payload.get("inputs")
    if not isinstance(inputs_json, list):
        raise InvalidArgument("'inputs' must be a list of tensors")
    offset = 0
    inputs: list[InferInput] = []
    for index, item in enumerate(inputs_json):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise InvalidArgument(f"inputs[{index}] must be an object with a string 'name'")
        tensor_name = item["name"]
        label = clip(tensor_name)
        if not isinstance(item.get("datatype"), str):
            raise InvalidArgument(f"input '{label}': 'datatype' must be a string")
        dtype = codecs.datatype(item["datatype"])
        shape = codecs.check_shape(label, item.get("shape"))
        size = _parameters(item, "input", label).get("binary_data_size")
        if size is not None:
            if not isinstance(size, int) or isinstance(size, bool) or size < 0 or offset + size > len(binary):
                raise InvalidArgument(f"input '{label}': binary_data_size {clip(size)} is not within the binary data")
            array = codecs.tensor_from_raw(label, dtype, shape, binary[offset : offset + size])
            offset += size
        elif "data" in item:
            array = codecs.tensor_from_json(label, dtype, shape, item["data"])
        else:
            raise InvalidArgument(f"input '{label}': no 'data' and no binary_data_size")
        inputs.append(InferInput(tensor_name, dtype.v2, shape, array))
    if offset != len(binary):
        raise InvalidArgument(f"{len(binary) - offset} bytes of binary data are not claimed by any input")
    request_params = _parameters(payload, "request")
    binary_default = bool(request_params.get("binary_data_output", False))
    outputs: list[RequestedOutput] = []
    outputs_json = payload.get("outputs", [])
    if not isinstance(outputs_json, list):
        raise InvalidArgument("'outputs' must be a list")
    for index, item in enumerate(outputs_json):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise InvalidArgument(f"outputs[{index}] must be an object with a string 'name'")
        params = _parameters(item, "output", clip(item["name"]))
        outputs.append(RequestedOutput(item["name"], bool(params.get("binary_data", binary_default))))
    return InferRequest(
        model=name,
        version=version,
        id=_request_id(payload.get("id")),
        inputs=inputs,
        outputs=outputs,
        parameters=request_params,
    )


def _request_id(value: Any) -> str:
    """The request `id`: a string as the protocol says; a number is accepted as its text."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    raise InvalidArgument(f"'id' must be a string, got a JSON {type(value).__name__}")


def encode_infer_response(request: InferRequest, response: InferResponse) -> Response:
    binary_default = bool(request.parameters.get("binary_data_output", False))
    wants_binary = {o.name: o.binary for o in request.outputs}
    outputs_json: list[dict[str, Any]] = []
    chunks: list[bytes] = []
    for out in response.outputs:
        entry: dict[str, Any] = {"name": out.name, "datatype": out.datatype, "shape": out.shape}
        if wants_binary.get(out.name, binary_default):
            raw = codecs.tensor_to_raw(out.array)
            entry["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        elif out.array.dtype == np.object_:
            entry["data"] = codecs.tensor_to_json(out.array)
        else:
            entry["data"] = out.array.reshape(-1)
        outputs_json.append(entry)
    body: dict[str, Any] = {"model_name": response.model, "model_version": response.version, "outputs": outputs_json}
    if response.id:
        body["id"] = response.id
    header = orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)
    if not chunks:
        return Response(200, header)
    headers = [
        (b"content-type", b"application/octet-stream"),
        (HEADER_LENGTH.encode(), str(len(header)).encode()),
    ]
    return Response(200, header + b"".join(chunks), headers)


def server_metadata_json(meta: ServerMetadata) -> dict[str, Any]:
    return {"name": meta.name, "version": meta.version, "extensions": list(meta.extensions)}


def _tensor_json(tensor: cfg.TensorSpec) -> dict[str, Any]:
    return {"name": tensor.name, "datatype": tensor.datatype.v2, "shape": list(tensor.shape)}


def model_metadata_json(meta: ModelMetadata) -> dict[str, Any]:
    return {
        "name": meta.name,
        "versions": list(meta.versions),
        "platform": meta.platform,
        "inputs": [_tensor_json(t) for t in meta.inputs],
        "outputs": [_tensor_json(t) for t in meta.outputs],
    }


def index_entry_json(entry: RepositoryEntry) -> dict[str, str]:
    """An index row as Triton writes it: the name, then only the fields that are set."""
    row = {"name": entry.name, "version": entry.version, "state": entry.state, "reason": entry.reason}
    return {key: value for key, value in row.items() if value or key == "name"}


def _duration(d: Duration) -> dict[str, int]:
    return {"count": d.count, "ns": d.ns}


def statistics_json(versions: list[VersionStatistics]) -> dict[str, Any]:
    """Triton's statistics extension answer."""
    return {"model_stats": [_version_stats_json(v) for v in versions]}


def _version_stats_json(v: VersionStatistics) -> dict[str, Any]:
    s = v.stats
    return {
        "name": v.name,
        "version": v.version,
        "last_inference": s.last_inference_ms,
        "inference_count": s.inference_count,
        "execution_count": s.execution_count,
        "inference_stats": {
            "success": _duration(s.success),
            "fail": _duration(s.fail),
            "queue": _duration(s.queue),
            "compute_input": _duration(s.compute_input),
            "compute_infer": _duration(s.compute_infer),
            "compute_output": _duration(s.compute_output),
            "cache_hit": _duration(s.cache_hit),
            "cache_miss": _duration(s.cache_miss),
        },
        "batch_stats": [
            {
                "batch_size": size,
                "compute_input": _duration(b.compute_input),
                "compute_infer": _duration(b.compute_infer),
                "compute_output": _duration(b.compute_output),
            }
            for size, b in sorted(s.batches.items())
        ],
    }


class MetricsApp:
    """GET /metrics on the metrics port."""

    def __init__(self, dataplane: DataPlane) -> None:
        self.dataplane = dataplane

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        from modelserve.metrics import exposition

        if scope["path"] == "/metrics":
            status, body = 200, exposition(self.dataplane.stats_series()).encode()
            content_type = b"text/plain; version=0.0.4; charset=utf-8"
        else:
            status, body, content_type = 404, b"not found: use /metrics\n", b"text/plain"
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", content_type), (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})
