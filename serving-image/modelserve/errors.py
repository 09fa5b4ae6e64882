"""Errors the data plane raises; REST and gRPC map each to their own status."""

from __future__ import annotations

import grpc


class ServeError(Exception):
    """An error a client should see, with its HTTP status and gRPC code."""

    http_status = 500
    grpc_code = grpc.StatusCode.INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(ServeError):
    http_status = 400
    grpc_code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(ServeError):
    http_status = 404
    grpc_code = grpc.StatusCode.NOT_FOUND


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
