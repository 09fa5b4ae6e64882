"""Bounds of one `modelserve fetch`: sizes, the overall deadline, and a reader that enforces them.

Every byte a fetch receives goes through a `BoundedReader`: it counts the bytes against the
download limit, hashes them for the checksum, stops at the deadline, and turns the backend's
network errors into `TransientError` (retried) or `FetchError` (final).
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

GiB = 1 << 30
DEFAULT_VOLUME_BYTES = 10 * GiB
DEFAULT_MAX_FILES = 10_000
CHUNK = 1 << 20
_SIZE = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(Ki|Mi|Gi|Ti|Pi|Ei|k|K|M|G|T|P|E)?$")
_FACTORS = {
    None: 1,
    "k": 10**3,
    "K": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "P": 10**15,
    "E": 10**18,
    "Ki": 1 << 10,
    "Mi": 1 << 20,
    "Gi": 1 << 30,
    "Ti": 1 << 40,
    "Pi": 1 << 50,
    "Ei": 1 << 60,
}


class FetchError(Exception):
    """A fetch that cannot succeed; the message is one line."""


class TransientError(Exception):
    """A failure worth retrying: 5xx, 429, a reset, a timeout, a refused connection."""


def one_line(text: object, limit: int = 300) -> str:
    """Collapse whitespace and clip, so every error stays on one line."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def parse_size(text: str) -> int:
    """Bytes in `10Gi`, `500M`, `1.5Gi` or `1048576` (Kubernetes quantity suffixes)."""
    match = _SIZE.match(text.strip())
    if match is None:
        raise ValueError(f"invalid size {text!r}: use e.g. 1048576, 500Mi, 10Gi")
    return int(float(match.group(1)) * _FACTORS[match.group(2)])


def human(size: int) -> str:
    for unit, factor in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= factor:
            return f"{size / factor:.1f} {unit}"
    return f"{size} B"


class Deadline:
    """The wall-clock end of the whole fetch, retries and backoff included."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._end = time.monotonic() + seconds

    def remaining(self) -> float:
        return max(0.0, self._end - time.monotonic())

    @property
    def expired(self) -> bool:
        return time.monotonic() >= self._end

    def check(self, done: str = "") -> None:
        if self.expired:
            raise FetchError(f"deadline of {self.seconds:g}s exceeded{done}")


@dataclass(frozen=True)
class Limits:
    """Resolved size limits; the volume's, when known, bounds what lies in it at once."""

    max_download: int
    max_unpacked: int
    max_files: int = DEFAULT_MAX_FILES
    volume: int | None = None

    @classmethod
    def resolve(
        cls,
        volume: int | None,
        max_download: int | None = None,
        max_unpacked: int | None = None,
        max_files: int = DEFAULT_MAX_FILES,
    ) -> Limits:
        default = volume if volume is not None else DEFAULT_VOLUME_BYTES
        download = max_download if max_download is not None else default
        unpacked = max_unpacked if max_unpacked is not None else default
        if volume is not None:
            download, unpacked = min(download, volume), min(unpacked, volume)
        return cls(max_download=download, max_unpacked=unpacked, max_files=max_files, volume=volume)


class Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


class BoundedReader:
    """A readable that enforces the download limit and the deadline and hashes what passes."""

    def __init__(
        self,
        raw: Readable,
        limit: int,
        deadline: Deadline,
        classify: Callable[[BaseException], Exception | None],
        already: int = 0,
    ) -> None:
        self._raw = raw
        self._limit = limit
        self._deadline = deadline
        self._classify = classify
        self.count = already
        self.sha256 = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        self._deadline.check(f" after {human(self.count)}")
        want = CHUNK if size is None or size < 0 else min(size, CHUNK)
        try:
            data = self._raw.read(want)
        except Exception as exc:
            self._deadline.check(f" after {human(self.count)}")
            mapped = self._classify(exc)
            if mapped is None:
                raise
            raise mapped from None
        self.count += len(data)
        if self.count > self._limit:
            raise FetchError(f"download exceeds the limit of {human(self._limit)} (--max-download-bytes)")
        self.sha256.update(data)
        return data

    def drain(self) -> None:
        """Read to the end (what follows a tar's end marker still counts for the checksum)."""
        while self.read(CHUNK):
            pass
