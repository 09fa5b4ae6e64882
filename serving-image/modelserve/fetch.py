"""`modelserve fetch`: download a storage URI into a Triton-layout model directory.

Used by the init container the operator renders. A `.onnx` file becomes
`<model-dir>/<version>/model.onnx`; a `.tar.gz`/`.tgz`/`.tar`/`.zip` archive or an s3/gs
prefix is a whole Triton model directory (`config.pbtxt`, `<version>/model.onnx`).

Everything is written into a staging directory beside `<model-dir>` on the same volume
(never /tmp) and renamed into place only when complete, so a failed fetch leaves no partial
model. Sizes are bounded (by flags whose defaults come from the volume's sizeLimit), the whole
fetch by a deadline; transient failures are retried with backoff; every refusal is a
one-line `FetchError` naming the URI.
"""

from __future__ import annotations

import logging
import os
import random
import re
import shutil
import tempfile
import time
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from modelserve import fetchhttp
from modelserve.fetcharchive import TAR_SUFFIXES, ZIP_SUFFIXES, extract_tar_stream, extract_zip, member_path
from modelserve.fetchlimits import (
    CHUNK,
    DEFAULT_MAX_FILES,
    BoundedReader,
    Deadline,
    FetchError,
    Limits,
    Readable,
    TransientError,
    human,
    one_line,
)

__all__ = ["FetchError", "FetchOptions", "fetch"]

log = logging.getLogger(__name__)
ONNX_SUFFIX = ".onnx"
_CHECKSUM = re.compile(r"^sha256:([0-9a-f]{64})$")
T = TypeVar("T")
Opener = Callable[[], AbstractContextManager[tuple[Readable, int | None]]]
Classifier = Callable[[BaseException], Exception | None]


@dataclass(frozen=True)
class FetchOptions:
    """How far a fetch may go; sizes in bytes (None: derived from the volume's size limit)."""

    timeout: float = 60.0
    deadline: float = 1800.0
    volume_size_limit: int | None = None
    max_download_bytes: int | None = None
    max_unpacked_bytes: int | None = None
    max_files: int = DEFAULT_MAX_FILES
    checksum: str | None = None
    retries: int = 4
    retry_backoff: float = 1.0
    s3_endpoint: str | None = None
    s3_region: str | None = None


def redact(uri: str) -> str:
    """The URI for messages: no password, no query string (presigned URLs carry signatures)."""
    parts = urllib.parse.urlsplit(uri)
    netloc = parts.netloc.rsplit("@", 1)[-1]
    query = "…" if parts.query else ""
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def fetch(uri: str, model_dir: Path, version: int = 1, options: FetchOptions | None = None) -> None:
    """Fetch `uri` into `model_dir`; raise FetchError (one line, naming the URI) on any failure."""
    started = time.monotonic()
    try:
        size = _Fetch(uri, Path(model_dir), version, options or FetchOptions()).run()
    except (FetchError, TransientError) as exc:
        raise FetchError(f"fetch {redact(uri)}: {one_line(exc)}") from None
    except Exception as exc:
        log.debug("fetch %s failed", redact(uri), exc_info=True)
        raise FetchError(f"fetch {redact(uri)}: {type(exc).__name__}: {one_line(exc)}") from None
    log.info("fetched %s into %s (%s in %.1fs)", redact(uri), model_dir, human(size), time.monotonic() - started)


def _kind(name: str) -> str:
    if name.endswith(ONNX_SUFFIX):
        return "onnx"
    if name.endswith(TAR_SUFFIXES):
        return "tar"
    if name.endswith(ZIP_SUFFIXES):
        return "zip"
    raise FetchError(f"expected a .onnx file or a {'/'.join(TAR_SUFFIXES + ZIP_SUFFIXES)} archive of a model directory")


def _write(reader: Readable, dest: Path) -> None:
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        with dest.open("wb") as out:
            while chunk := reader.read(CHUNK):
                out.write(chunk)
    except OSError as exc:
        raise FetchError(f"cannot write the model: {exc.strerror or exc}") from None


def _local_errors(exc: BaseException) -> Exception | None:
    return FetchError(f"cannot read: {exc.strerror or exc}") if isinstance(exc, OSError) else None


class _Fetch:
    """One fetch: limits, deadline and staging directory shared by its steps."""

    def __init__(self, uri: str, model_dir: Path, version: int, options: FetchOptions) -> None:
        self.uri, self.model_dir, self.version, self.options = uri, model_dir, version, options
        self.limits = Limits.resolve(
            options.volume_size_limit, options.max_download_bytes, options.max_unpacked_bytes, options.max_files
        )
        self.deadline = Deadline(options.deadline)
        self.expected: str | None = None
        if options.checksum is not None:
            match = _CHECKSUM.match(options.checksum)
            if match is None:
                raise FetchError(f"invalid checksum {options.checksum[:80]!r}: use sha256:<64 lowercase hex digits>")
            self.expected = match.group(1)
        self.staging = Path()
        self.staged = Path()

    # -- the whole fetch ---------------------------------------------------------------
    def run(self) -> int:
        parsed = urllib.parse.urlsplit(self.uri)
        if parsed.scheme == "pvc":
            raise FetchError("pvc:// models are mounted into the pod, not fetched")
        if parsed.scheme not in ("", "file", "http", "https", "s3", "gs"):
            raise FetchError(f"unsupported storage URI scheme '{parsed.scheme}'")
        parent = self.model_dir.parent
        parent.mkdir(parents=True, exist_ok=True)
        self._remove_leftovers()
        self.staging = Path(tempfile.mkdtemp(prefix=f".{self.model_dir.name}.fetch-", dir=parent))
        self.staged = self.staging / "model"
        try:
            size = self._dispatch(parsed)
            if not (self.staged / str(self.version)).is_dir():
                found = sorted(p.name for p in self.staged.iterdir()) if self.staged.is_dir() else []
                raise FetchError(f"fetched, but {self.model_dir}/{self.version}/ does not exist (found: {found})")
            self._swap()
            return size
        finally:
            shutil.rmtree(self.staging, ignore_errors=True)

    def _dispatch(self, parsed: urllib.parse.SplitResult) -> int:
        if parsed.scheme in ("http", "https"):
            name = parsed.path
            return self._single(name, self._http_opener, fetchhttp.classify)
        if parsed.scheme in ("", "file"):
            source = Path(urllib.parse.unquote(parsed.path) if parsed.scheme else self.uri)
            if source.is_dir():
                return self._local_dir(source)
            if not source.is_file():
                raise FetchError("no such file or directory")
            return self._single(source.name, lambda: _open_local(source), _local_errors)
        return self._bucket(parsed.scheme, parsed.netloc, parsed.path.lstrip("/"))

    def _remove_leftovers(self) -> None:
        """Staging directories of an earlier, interrupted fetch take room on the volume."""
        for stale in self.model_dir.parent.glob(f".{self.model_dir.name}.fetch-*"):
            shutil.rmtree(stale, ignore_errors=True)

    def _swap(self) -> None:
        if self.model_dir.exists() or self.model_dir.is_symlink():
            old = self.staging / "previous"
            os.replace(self.model_dir, old)
        os.replace(self.staged, self.model_dir)

    def _fresh_staged(self) -> None:
        shutil.rmtree(self.staged, ignore_errors=True)
        for leftover in self.staging.iterdir():
            shutil.rmtree(leftover, ignore_errors=True) if leftover.is_dir() else leftover.unlink()
        self.staged.mkdir()

    # -- retries ---------------------------------------------------------------------------
    def _retrying(self, step: Callable[[], T]) -> T:
        attempts = self.options.retries + 1
        for attempt in range(1, attempts + 1):
            try:
                return step()
            except TransientError as exc:
                if attempt == attempts:
                    raise FetchError(f"{exc} (gave up after {attempt} attempts)") from None
                delay = min(self.options.retry_backoff * 2 ** (attempt - 1), 30.0) * random.uniform(0.5, 1.0)
                if delay >= self.deadline.remaining():
                    reached = f"deadline of {self.deadline.seconds:g}s reached after {attempt} attempts"
                    raise FetchError(f"{exc} ({reached})") from None
                log.warning(
                    "fetch %s: %s; retry %d of %d in %.1fs", redact(self.uri), exc, attempt, attempts - 1, delay
                )
                time.sleep(delay)
        raise AssertionError("unreachable")

    # -- one file: a model or an archive -----------------------------------------------------
    def _http_opener(self) -> AbstractContextManager[tuple[Readable, int | None]]:
        return _with_length(
            fetchhttp.open_http(self.uri, self.options.timeout, self.deadline, self.limits.max_download)
        )

    def _single(self, name: str, opener: Opener, classify: Classifier) -> int:
        kind = _kind(name)

        def attempt() -> int:
            self._fresh_staged()
            archive = self.staging / "download.zip"
            with opener() as (raw, length):
                if length is not None and length > self.limits.max_download:
                    raise FetchError(
                        f"is {human(length)}, over the download limit of {human(self.limits.max_download)}"
                        " (--max-download-bytes)"
                    )
                reader = BoundedReader(raw, self.limits.max_download, self.deadline, classify)
                if kind == "onnx":
                    _write(reader, self.staged / str(self.version) / "model.onnx")
                elif kind == "tar":
                    cap, what = self._unpack_cap(0)
                    extract_tar_stream(reader, self.staged, cap, self.limits.max_files, what)
                    reader.drain()
                else:
                    _write(reader, archive)
            self._verify(reader.sha256.hexdigest())
            if kind == "zip":
                cap, what = self._unpack_cap(reader.count)
                extract_zip(archive, self.staged, cap, self.limits.max_files, what)
                archive.unlink()
            return reader.count

        return self._retrying(attempt)

    def _unpack_cap(self, archive_bytes: int) -> tuple[int, str]:
        volume = self.limits.volume
        if volume is not None and volume - archive_bytes <= self.limits.max_unpacked:
            return max(0, volume - archive_bytes), f"the model volume's {human(volume)} sizeLimit, archive included"
        return self.limits.max_unpacked, "--max-unpacked-bytes"

    def _verify(self, digest: str) -> None:
        if self.expected is not None and digest != self.expected:
            raise FetchError(f"checksum mismatch: expected sha256:{self.expected}, got sha256:{digest}")

    # -- a directory: local, or an s3/gs prefix ----------------------------------------------
    def _local_dir(self, source: Path) -> int:
        if self.expected is not None:
            raise FetchError("--checksum needs a URI naming one file, not a directory")
        self._fresh_staged()
        total, files = 0, 0
        for root, _dirs, names in os.walk(source):
            for name in names:
                path = Path(root) / name
                if path.is_symlink() or not path.is_file():
                    raise FetchError(f"{path.relative_to(source)} is a link or special file (refused)")
                files += 1
                if files > self.limits.max_files:
                    raise FetchError(f"more than {self.limits.max_files} files (--max-files)")
                with path.open("rb") as raw:
                    reader = BoundedReader(raw, self.limits.max_download, self.deadline, _local_errors, total)
                    _write(reader, self.staged / path.relative_to(source))
                    total = reader.count
        return total

    def _bucket(self, scheme: str, bucket: str, key: str) -> int:
        store, classify = self._store(scheme)
        if key and not key.endswith("/") and re.search(r"\.(onnx|tar\.gz|tgz|tar|zip)$", key):
            return self._single(key, lambda: store.open(bucket, key), classify)
        if self.expected is not None:
            raise FetchError("--checksum needs a URI naming one file (.onnx or an archive), not a prefix")
        prefix = key if not key or key.endswith("/") else key + "/"
        objects = [(k, s) for k, s in self._retrying(lambda: store.list(bucket, prefix)) if not k.endswith("/")]
        if not objects:
            raise FetchError(f"no objects under {scheme}://{bucket}/{prefix}")
        if len(objects) > self.limits.max_files:
            raise FetchError(f"{len(objects)} objects, more than {self.limits.max_files} (--max-files)")
        declared = sum(size for _, size in objects)
        if declared > self.limits.max_download:
            raise FetchError(
                f"objects total {human(declared)}, over the download limit of {human(self.limits.max_download)}"
                " (--max-download-bytes)"
            )
        self._fresh_staged()
        total = 0
        for object_key, _size in objects:
            dest = member_path(self.staged, object_key[len(prefix) :])
            if dest is None:
                continue

            def one(object_key: str = object_key, dest: Path = dest, before: int = total) -> int:
                with store.open(bucket, object_key) as (raw, _length):
                    reader = BoundedReader(raw, self.limits.max_download, self.deadline, classify, before)
                    _write(reader, dest)
                return reader.count

            total = self._retrying(one)
        return total

    def _store(self, scheme: str) -> tuple[object, Classifier]:
        if scheme == "s3":
            from modelserve import fetchs3

            settings = fetchs3.S3Settings(
                self.options.s3_endpoint, self.options.s3_region, min(10.0, self.options.timeout), self.options.timeout
            )
            return fetchs3.S3Store(settings), fetchs3.classify
        from modelserve import fetchgcs

        return fetchgcs.GcsStore((min(10.0, self.options.timeout), self.options.timeout)), fetchgcs.classify


@contextmanager
def _open_local(path: Path) -> Iterator[tuple[Readable, int | None]]:
    with path.open("rb") as raw:
        yield raw, path.stat().st_size


@contextmanager
def _with_length(
    response_cm: AbstractContextManager[fetchhttp.CheckedBody],
) -> Iterator[tuple[Readable, int | None]]:
    with response_cm as response:
        yield response, None
