"""gs:// for `modelserve fetch` (google-cloud-storage, the `gcs` extra).

Credentials come the Application Default Credentials ways: GOOGLE_APPLICATION_CREDENTIALS
naming a key file mounted from a Secret, or GKE Workload Identity through the pod's
ServiceAccount. STORAGE_EMULATOR_HOST points it at an emulator. The library's retries are
off: `modelserve fetch` retries with its deadline.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from modelserve.fetchlimits import FetchError, Readable, TransientError, one_line

READ_CHUNK = 8 << 20


def _libraries() -> tuple[Any, Any, Any]:
    try:
        import google.auth.exceptions as auth_errors
        import requests.exceptions as http_errors
        from google.api_core import exceptions as api_errors
        from google.cloud import storage  # noqa: F401
    except ImportError:
        raise FetchError(
            "gs:// needs google-cloud-storage: this serving image was built without the gcs extra"
        ) from None
    return api_errors, auth_errors, http_errors


def classify(exc: BaseException) -> Exception | None:
    """A Google client error as TransientError (retry) or FetchError (final); None when not one."""
    api_errors, auth_errors, http_errors = _libraries()
    if isinstance(exc, api_errors.GoogleAPICallError):
        code = getattr(exc, "code", None) or 0
        message = f"{type(exc).__name__} (HTTP {code}): {one_line(getattr(exc, 'message', exc), 200)}"
        if isinstance(exc, api_errors.ServerError | api_errors.TooManyRequests) or code in (408, 429):
            return TransientError(message)
        return FetchError(message)
    if isinstance(exc, auth_errors.DefaultCredentialsError):
        return FetchError(
            f"no usable Google credentials: {one_line(exc, 160)} (use GKE Workload Identity:"
            " spec.model.storage.serviceAccountName)"
        )
    if isinstance(exc, auth_errors.RefreshError):
        return FetchError(f"Google credentials rejected: {one_line(exc, 200)}")
    if isinstance(exc, auth_errors.TransportError | http_errors.ConnectionError | http_errors.Timeout):
        return TransientError(f"connection failed: {one_line(exc, 200)}")
    if isinstance(exc, http_errors.RequestException | OSError):
        return TransientError(f"connection failed: {one_line(exc, 200)}")
    return None


def _mapped(exc: BaseException) -> Exception:
    mapped = classify(exc)
    return mapped if mapped is not None else FetchError(f"{type(exc).__name__}: {one_line(exc, 200)}")


class GcsStore:
    """List and read the objects of one bucket."""

    def __init__(self, timeout: tuple[float, float]) -> None:
        _libraries()
        from google.cloud import storage

        self._timeout = timeout
        try:
            self._client = storage.Client()
        except Exception as exc:
            raise _mapped(exc) from None

    def list(self, bucket: str, prefix: str) -> list[tuple[str, int]]:
        try:
            blobs = self._client.list_blobs(bucket, prefix=prefix, timeout=self._timeout, retry=None)
            return [(blob.name, int(blob.size or 0)) for blob in blobs]
        except Exception as exc:
            raise _mapped(exc) from None

    @contextmanager
    def open(self, bucket: str, key: str) -> Iterator[tuple[Readable, int | None]]:
        blob = self._client.bucket(bucket).blob(key)
        try:
            blob.reload(timeout=self._timeout, retry=None)
            reader = blob.open("rb", chunk_size=READ_CHUNK, timeout=self._timeout, retry=None)
        except Exception as exc:
            raise _mapped(exc) from None
        try:
            yield reader, blob.size
        finally:
            reader.close()
