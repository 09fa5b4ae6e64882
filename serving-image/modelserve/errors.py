"""Errors the data plane raises; REST and gRPC map each to their own status.

This is the one error mapping: every client mistake is a `ServeError` subclass with a
4xx status and an INVALID_ARGUMENT-class gRPC code; only the server's own faults are
5xx / INTERNAL. Messages are one line, and whatever a client sent is echoed clipped.
"""

from __future__ import annotations

import logging

import grpc

log = logging.getLogger(__name__)

ECHO_LIMIT = 100  # characters of a client-supplied name or value echoed in a message
MESSAGE_LIMIT = 1000  # characters of any error message


def clip(value: object, limit: int = ECHO_LIMIT) -> str:
    """A client-supplied value as it may appear in a message: one line, at most `limit` characters."""
    if isinstance(value, str) and len(value) <= limit and value.isprintable():
        return value  # the usual short name, as it is (every request's tensor names pass here)
    if isinstance(value, bytes | bytearray | memoryview):
        text = bytes(value[: limit * 4]).decode("utf-8", errors="replace")
    else:
        text = value if isinstance(value, str) else _safe_repr(value, limit)
    text = one_line(text[: limit + 1])
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


def _safe_repr(value: object, limit: int) -> str:
    try:
        text = repr(value)
    except (RecursionError, ValueError):  # a ~1000-deep list, a huge int
        return f"<{type(value).__name__}>"
    return text[: limit * 4]


def one_line(text: str) -> str:
    return "".join(" " if ch in "\r\n\t\v\f\0" else ch for ch in text)


class ServeError(Exception):
    """An error a client should see, with its HTTP status and gRPC code."""

    http_status = 500
    grpc_code = grpc.StatusCode.INTERNAL

    def __init__(self, message: str) -> None:
        message = one_line(message)
        if len(message) > MESSAGE_LIMIT:
            message = f"{message[: MESSAGE_LIMIT - 3]}..."
        super().__init__(message)
        self.message = message


class InvalidArgument(ServeError):
    http_status = 400
    grpc_code = grpc.StatusCode.INVALID_ARGUMENT


class PayloadTooLarge(ServeError):
    """A body or message (compressed or inflated) over the configured limit."""

    http_status = 413
    grpc_code = grpc.StatusCode.RESOURCE_EXHAUSTED


class UnsupportedMediaType(ServeError):
    """A Content-Encoding the server does not decode."""

    http_status = 415
    grpc_code = grpc.StatusCode.UNIMPLEMENTED


class Unimplemented(ServeError):
    """A gRPC method or message encoding the server does not serve."""

    http_status = 501
    grpc_code = grpc.StatusCode.UNIMPLEMENTED


class DeadlineExceeded(ServeError):
    """A gRPC call still running when its grpc-timeout ran out."""

    http_status = 504
    grpc_code = grpc.StatusCode.DEADLINE_EXCEEDED


class NotFound(ServeError):
    http_status = 404
    grpc_code = grpc.StatusCode.NOT_FOUND


class Forbidden(ServeError):
    """A restricted API called without the configured header key and value."""

    http_status = 403
    grpc_code = grpc.StatusCode.PERMISSION_DENIED


class Unauthenticated(ServeError):
    """An API behind --auth-token-file called without a valid token."""

    http_status = 401
    grpc_code = grpc.StatusCode.UNAUTHENTICATED


class RequestTimeout(ServeError):
    """A request body that did not arrive within --http-body-timeout-secs."""

    http_status = 408
    grpc_code = grpc.StatusCode.DEADLINE_EXCEEDED


class ControlModeRefused(ServeError):
    """Load/unload outside --model-control-mode=explicit: permanent, so never 503.

    HTTP 400; over gRPC Triton answers UNAVAILABLE, and tritonclient users match on it.
    """

    http_status = 400
    grpc_code = grpc.StatusCode.UNAVAILABLE


class Unavailable(ServeError):
    """Overloaded, not ready, or shutting down: retry later."""

    http_status = 503
    grpc_code = grpc.StatusCode.UNAVAILABLE


class InferenceFailed(ServeError):
    """The model itself failed on a request (bad values, runtime error)."""

    http_status = 500
    grpc_code = grpc.StatusCode.INTERNAL


class ModelLoadError(Exception):
    """A model (or its config) could not be loaded; the message names the field or file."""


def client_fault(exc: BaseException, what: str) -> ServeError:
    """An error raised while decoding a client's request: the request's fault, never the server's.

    Decoding depends on nothing but the request, so whatever escapes the codecs' own checks
    (a numpy limit, a recursion limit) is still a 400 / INVALID_ARGUMENT.
    """
    if isinstance(exc, ServeError):
        return exc
    if isinstance(exc, MemoryError):
        return PayloadTooLarge(f"{what}: the request needs more memory than the server grants one request")
    return InvalidArgument(f"{what}: {type(exc).__name__}: {clip(str(exc), 200)}")


class InternalError(ServeError):
    """A bug on the server's side: it costs the one call, never the server."""


def to_serve_error(exc: BaseException) -> ServeError:
    """The one mapping of any exception to what a client sees; call it inside the `except` block.

    A `ServeError` is answered as it is; anything else is logged with its traceback and
    answered as an internal error (500 / INTERNAL) naming the exception's type.
    """
    if isinstance(exc, ServeError):
        return exc
    log.exception("unhandled error while answering a request")
    return InternalError(f"internal error: {type(exc).__name__}: {clip(str(exc), 300)}")
