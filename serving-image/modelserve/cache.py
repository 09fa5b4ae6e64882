"""Triton's response cache (`--cache-config local,size=BYTES`): an LRU of inference results, bounded in bytes.

A model uses it only when its config says `response_cache { enable: true }` and the server
was started with a non-zero size; one cache is shared by every model, as Triton's `local`
cache is. The key is a BLAKE2b-256 digest of the model name, the version and every input's
name, datatype, shape and data bytes (Triton hashes the same fields into 64 bits); a hit
returns the outputs computed for the first such request. Requested outputs and encoding
parameters (`binary_data_output`, ...) are not part of the key: the whole result (every
output of the model) is cached and the data plane selects from it, so they cannot change
what a hit answers. Only successful results are cached.

Entries hold read-only copies of the output arrays (never views into a batch's larger
arrays), so the byte bound counts what is really held.
"""

from __future__ import annotations

import hashlib
import struct
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

ENTRY_OVERHEAD = 256  # bytes charged per entry beyond its arrays: key, dict slots, array headers


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


def request_key(model: str, version: str, inputs: Iterable[tuple[str, str, list[int], np.ndarray]]) -> bytes:
    """Digest of model, version and each (name, datatype, shape, data), inputs in name order."""
    h = hashlib.blake2b(digest_size=32)

    def text(value: str) -> None:
        raw = value.encode()
        h.update(struct.pack("<I", len(raw)))
        h.update(raw)

    text(model)
    text(version)
    for name, datatype, shape, array in sorted(inputs, key=lambda item: item[0]):
        text(name)
        text(datatype)
        h.update(struct.pack(f"<I{len(shape)}q", len(shape), *shape))
        if array.dtype == np.object_:
            for item in array.reshape(-1):
                raw = item if isinstance(item, bytes) else str(item).encode()
                h.update(struct.pack("<I", len(raw)))
                h.update(raw)
        else:
            h.update(np.ascontiguousarray(array).data)
    return h.digest()


def _nbytes(array: np.ndarray) -> int:
    if array.dtype == np.object_:
        return array.size * 8 + sum(len(x) if isinstance(x, bytes | str) else 64 for x in array.reshape(-1))
    return array.nbytes


class ResponseCache:
    """Least-recently-used results, never more than `capacity` bytes (arrays plus a per-entry overhead)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.used = 0
        self._entries: OrderedDict[bytes, tuple[dict[str, np.ndarray], int]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def keys(self) -> list[bytes]:
        """Keys from least to most recently used."""
        return list(self._entries)

    def get(self, key: bytes) -> dict[str, np.ndarray] | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        self._entries.move_to_end(key)
        return entry[0]

    def put(self, key: bytes, outputs: Mapping[str, np.ndarray]) -> bool:
        """Store a copy of `outputs`, evicting the least recently used; False when it can never fit."""
        size = ENTRY_OVERHEAD + len(key) + sum(_nbytes(a) + len(n) for n, a in outputs.items())
        if size > self.capacity:
            return False
        old = self._entries.pop(key, None)
        if old is not None:
            self.used -= old[1]
        while self.used + size > self.capacity:
            _, (_, evicted) = self._entries.popitem(last=False)
            self.used -= evicted
        frozen: dict[str, np.ndarray] = {}
        for name, array in outputs.items():
            copy = np.array(array, copy=True)
            copy.flags.writeable = False
            frozen[name] = copy
        self._entries[key] = (frozen, size)
        self.used += size
        return True
