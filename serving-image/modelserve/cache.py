"""Triton's response cache (`--cache-config local,size=BYTES`): an LRU of inference results, bounded in bytes.

A model uses it only when its config says `response_cache { enable: true }` and the server
was started with a non-zero size; one cache is shared by every model, as Triton's `local`
cache is. The key is a BLAKE3-256 digest of the model name, the version and every input's
name, datatype, shape and data bytes (Triton hashes the same fields into 64 bits; BLAKE3 is
a cryptographic hash, so no client can make two inputs share an entry, and it hashes
several GB/s: the data bytes are hashed where they lie, never copied). A hit returns the
outputs computed for the first such request. Requested outputs and encoding parameters
(`binary_data_output`, ...) are not part of the key: the whole result (every output of the
model) is cached and the data plane selects from it, so they cannot change what a hit
answers. Only successful results are cached.

Entries hold read-only copies of the output arrays (never views into a batch's larger
arrays), so the byte bound counts what is really held.

A front end may also keep, with an entry, the exact answer it sent for one exact request
(`remember` / `answer`): the HTTP front end keys it by a digest of the request body as
received, so a byte-identical request is answered without decoding it again (a JSON body of
12,288 floats takes over a millisecond to decode). Such answers are charged to the byte
bound with their entry, at most `MAX_ANSWERS` per entry, and go when their entry goes.
"""

from __future__ import annotations

import struct
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from blake3 import blake3

ENTRY_OVERHEAD = 256  # bytes charged per entry beyond its arrays: key, dict slots, array headers
ANSWER_OVERHEAD = 512  # bytes charged per remembered answer beyond its digest and bytes: the objects holding it
MAX_ANSWERS = 4  # remembered answers per entry (one per exact request form: JSON, binary, ...)


@dataclass(frozen=True)
class CacheConfig:
    """`--cache-config` as tritonserver takes it: `<cache>,<key>=<value>`, repeatable."""

    size: int = 0

    @classmethod
    def parse(cls, values: Iterable[str]) -> CacheConfig:
        size = 0
        for value in values:
            name, sep, setting = value.partition(",")
            if name.strip() != "local" or not sep:
                raise ValueError(f"--cache-config {value!r}: expected local,size=BYTES (only the local cache exists)")
            key, eq, number = setting.partition("=")
            if key.strip() != "size" or not eq:
                raise ValueError(f"--cache-config {value!r}: the local cache takes size=BYTES")
            if not number.strip().isdigit():
                raise ValueError(f"--cache-config {value!r}: size must be a non-negative number of bytes")
            size = int(number)
        return cls(size)


def _text(h: Any, value: str) -> None:
    raw = value.encode()
    h.update(struct.pack("<I", len(raw)))
    h.update(raw)


def byte_view(array: np.ndarray) -> np.ndarray:
    """The array's data bytes as a flat uint8 view (a copy only when the array is not C-contiguous)."""
    return np.ascontiguousarray(array).reshape(-1).view(np.uint8)


def request_key(model: str, version: str, inputs: Iterable[tuple[str, str, list[int], np.ndarray]]) -> bytes:
    """Digest of model, version and each (name, datatype, shape, data), inputs in name order."""
    h = blake3()
    _text(h, model)
    _text(h, version)
    for name, datatype, shape, array in sorted(inputs, key=lambda item: item[0]):
        _text(h, name)
        _text(h, datatype)
        h.update(struct.pack(f"<I{len(shape)}q", len(shape), *shape))
        if array.dtype == np.object_:
            for item in array.reshape(-1):
                raw = item if isinstance(item, bytes) else str(item).encode()
                h.update(struct.pack("<I", len(raw)))
                h.update(raw)
        else:
            h.update(byte_view(array))
    return h.digest()


def exact_request_digest(kind: str, model: str, version: str, parts: Iterable[bytes | memoryview]) -> bytes:
    """Digest of a front end's exact request (`kind` names its form): the key of a remembered answer."""
    h = blake3()
    _text(h, kind)
    _text(h, model)
    _text(h, version)
    for part in parts:
        h.update(struct.pack("<Q", len(part)))
        h.update(part)
    return h.digest()


def _nbytes(array: np.ndarray) -> int:
    if array.dtype == np.object_:
        return array.size * 8 + sum(len(x) if isinstance(x, bytes | str) else 64 for x in array.reshape(-1))
    return array.nbytes


class _Entry:
    __slots__ = ("answers", "outputs", "size")

    def __init__(self, outputs: dict[str, np.ndarray], size: int) -> None:
        self.outputs = outputs
        self.size = size  # bytes charged: outputs, key and overhead, plus every remembered answer
        self.answers: dict[bytes, int] = {}  # digest -> bytes charged for it, oldest first


class ResponseCache:
    """Least-recently-used results, never more than `capacity` bytes (arrays plus a per-entry overhead)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.used = 0
        self._entries: OrderedDict[bytes, _Entry] = OrderedDict()
        self._answers: dict[bytes, tuple[bytes, Any]] = {}  # digest -> (entry key, answer)

    def __len__(self) -> int:
        return len(self._entries)

    def keys(self) -> list[bytes]:
        """Keys from least to most recently used."""
        return list(self._entries)

    def answer_count(self) -> int:
        return len(self._answers)

    def get(self, key: bytes) -> dict[str, np.ndarray] | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        self._entries.move_to_end(key)
        return entry.outputs

    def put(self, key: bytes, outputs: Mapping[str, np.ndarray]) -> bool:
        """Store a copy of `outputs`, evicting the least recently used; False when it can never fit."""
        size = ENTRY_OVERHEAD + len(key) + sum(_nbytes(a) + len(n) for n, a in outputs.items())
        if size > self.capacity:
            return False
        self._drop(key)
        self._make_room(size)
        frozen: dict[str, np.ndarray] = {}
        for name, array in outputs.items():
            copy = np.array(array, copy=True)
            copy.flags.writeable = False
            frozen[name] = copy
        self._entries[key] = _Entry(frozen, size)
        self.used += size
        return True

    def answer(self, digest: bytes) -> Any | None:
        """The answer remembered for this exact request (its entry becomes the most recently used), or None."""
        found = self._answers.get(digest)
        if found is None:
            return None
        self._entries.move_to_end(found[0])
        return found[1]

    def remember(self, key: bytes, digest: bytes, answer: Any, nbytes: int) -> bool:
        """Keep `answer` (`nbytes` long) for the exact request `digest`, with the entry `key`.

        False when there is no such entry or the entry with it could never fit. An entry keeps
        at most MAX_ANSWERS answers (the oldest goes); other entries are evicted to make room.
        """
        entry = self._entries.get(key)
        if entry is None:
            return False
        charge = ANSWER_OVERHEAD + len(digest) + nbytes
        previous = self._answers.get(digest)
        if previous is not None:  # the same request again (after a reload): keep the newest
            self._forget_answer(self._entries[previous[0]], digest)
        elif len(entry.answers) >= MAX_ANSWERS:
            self._forget_answer(entry, next(iter(entry.answers)))
        if entry.size + charge > self.capacity:
            return False
        self._entries.move_to_end(key)
        self._make_room(charge, keep=key)
        entry.answers[digest] = charge
        entry.size += charge
        self.used += charge
        self._answers[digest] = (key, answer)
        return True

    def _forget_answer(self, entry: _Entry, digest: bytes) -> None:
        charge = entry.answers.pop(digest)
        entry.size -= charge
        self.used -= charge
        del self._answers[digest]

    def _drop(self, key: bytes) -> None:
        entry = self._entries.pop(key, None)
        if entry is None:
            return
        self.used -= entry.size
        for digest in entry.answers:
            del self._answers[digest]

    def _make_room(self, size: int, keep: bytes | None = None) -> None:
        """Evict least recently used entries (never `keep`) until `size` more bytes fit."""
        while self.used + size > self.capacity:
            oldest = next(iter(self._entries))
            if oldest == keep:  # only when `keep` is the most recent too, i.e. alone: checked by the caller
                break
            self._drop(oldest)
