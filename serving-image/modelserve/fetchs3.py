"""s3:// for `modelserve fetch` (boto3, the `s3` extra): AWS, or MinIO / Ceph RGW via an endpoint.

Credentials come the usual boto3 ways: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (from a
Secret, spec.model.storage.env), or IRSA's web identity token through the pod's
ServiceAccount. boto3's own retries are off: `modelserve fetch` retries with its deadline.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from modelserve.fetchlimits import FetchError, Readable, TransientError, one_line

_TRANSIENT_CODES = {
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "RequestTimeout",
    "InternalError",
    "ServiceUnavailable",
}


@dataclass(frozen=True)
class S3Settings:
    endpoint: str | None = None
    region: str | None = None
    connect_timeout: float = 10.0
    read_timeout: float = 60.0


def _botocore() -> Any:
    try:
        import boto3  # noqa: F401
        import botocore.exceptions
    except ImportError:
        raise FetchError("s3:// needs boto3: this serving image was built without the s3 extra") from None
    return botocore.exceptions


def classify(exc: BaseException) -> Exception | None:
    """A botocore error as TransientError (retry) or FetchError (final); None when not botocore's."""
    errors = _botocore()
    if isinstance(exc, errors.ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", "Error"))
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        message = f"{code}: {one_line(error.get('Message') or exc, 200)}"
        if status >= 500 or status == 429 or code in _TRANSIENT_CODES:
            return TransientError(message)
        if code in ("404", "NoSuchKey"):
            return FetchError(f"NoSuchKey: no such object (HTTP {status or 404})")
        return FetchError(message)
    if isinstance(exc, errors.NoCredentialsError | errors.PartialCredentialsError):
        return FetchError(
            "no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY from a Secret"
            " (spec.model.storage.env) or use IRSA (spec.model.storage.serviceAccountName)"
        )
    if isinstance(exc, errors.EndpointConnectionError):
        return TransientError(f"cannot connect to {exc.kwargs.get('endpoint_url', 'the S3 endpoint')}")
    if isinstance(exc, errors.ConnectTimeoutError | errors.ReadTimeoutError):
        return TransientError("timed out")
    if isinstance(exc, errors.ConnectionError | errors.ResponseStreamingError | errors.IncompleteReadError):
        return TransientError(f"connection failed: {one_line(exc, 200)}")
    if isinstance(exc, errors.ParamValidationError):
        return FetchError(f"invalid request: {one_line(exc, 200)}")
    if isinstance(exc, errors.BotoCoreError):
        return FetchError(one_line(exc, 200))
    if isinstance(exc, OSError):
        return TransientError(f"connection failed: {one_line(exc, 200)}")
    return None


def _mapped(exc: BaseException) -> Exception:
    mapped = classify(exc)
    return mapped if mapped is not None else FetchError(f"{type(exc).__name__}: {one_line(exc, 200)}")


class S3Store:
    """List and read the objects of one bucket."""

    def __init__(self, settings: S3Settings) -> None:
        _botocore()
        import boto3
        from botocore.config import Config

        config = Config(
            connect_timeout=settings.connect_timeout,
            read_timeout=settings.read_timeout,
            retries={"max_attempts": 1, "mode": "standard"},
            s3={"addressing_style": "path"} if settings.endpoint else {},
            user_agent_extra="modelserve-fetch",
        )
        try:
            # A session of its own: boto3's default session would keep credentials it resolved earlier.
            session = boto3.session.Session()
            self._client = session.client(
                "s3", endpoint_url=settings.endpoint, region_name=settings.region, config=config
            )
        except Exception as exc:
            raise _mapped(exc) from None

    def list(self, bucket: str, prefix: str) -> list[tuple[str, int]]:
        try:
            pages = self._client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
            return [(o["Key"], int(o.get("Size", 0))) for page in pages for o in page.get("Contents", [])]
        except Exception as exc:
            raise _mapped(exc) from None

    @contextmanager
    def open(self, bucket: str, key: str) -> Iterator[tuple[Readable, int | None]]:
        try:
            response = self._client.get_object(Bucket=bucket, Key=key)
        except Exception as exc:
            raise _mapped(exc) from None
        body = response["Body"]
        try:
            yield body, response.get("ContentLength")
        finally:
            body.close()
