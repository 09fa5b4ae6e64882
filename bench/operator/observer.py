"""The benchmark's view of the cluster, kept current by watches instead of polls.

Polling LISTs of 1000 objects every second costs the API server a large share of its CPU on a
2-core machine (measured: 359 ms per LIST of the Deployments under load), and that load would
be charged to the operator. A watch costs one LIST, then only the events that happen anyway.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from typing import Any, Protocol

Key = tuple[str, str]


class Getter(Protocol):
    def get(self, path: str, query: list[tuple[str, str]] | None = None, timeout: float | None = 60) -> Any:
        """A GET's urllib3 response, its body not read yet."""


class Watched:
    """Every object at a collection path (with a label selector), as of the latest event."""

    def __init__(self, api: Getter, path: str, selector: str | None = None, prefix: str = "bench-") -> None:
        self.api, self.path, self.selector, self.prefix = api, path, selector, prefix
        self.objects: dict[Key, dict[str, Any]] = {}
        self.guard = threading.Lock()
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True, name=f"watch {path}")

    def start(self) -> Watched:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stopped.set()

    def snapshot(self) -> list[dict[str, Any]]:
        with self.guard:
            return list(self.objects.values())

    def _get(self, query: list[tuple[str, str]], timeout: float | None) -> Any:
        if self.selector:
            query = [*query, ("labelSelector", self.selector)]
        return self.api.get(self.path, query, timeout)

    def _keep(self, obj: dict[str, Any]) -> Key | None:
        meta = obj.get("metadata") or {}
        namespace = meta.get("namespace") or ""
        return (namespace, meta.get("name", "")) if namespace.startswith(self.prefix) else None

    def _run(self) -> None:
        while not self.stopped.is_set():
            try:
                version = self._list()
                while not self.stopped.is_set() and version is not None:
                    version = self._watch(version)
            except Exception:  # a dropped connection: list and watch again
                time.sleep(0.5)

    def _list(self) -> str:
        found = json.loads(self._get([], 120).data)
        objects = {key: obj for obj in found.get("items") or [] if (key := self._keep(obj))}
        with self.guard:
            self.objects = objects
        return found["metadata"]["resourceVersion"]

    def _watch(self, version: str) -> str | None:
        """Events from `version` on; the version to go on from, None when it expired (relist)."""
        query = [("watch", "1"), ("resourceVersion", version), ("allowWatchBookmarks", "true"),
                 ("timeoutSeconds", "240")]  # fmt: skip
        response = self._get(query, None)
        buffer = b""
        with contextlib.closing(response):
            for chunk in response.stream(65536, decode_content=True):
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    if not line.strip():
                        continue
                    event = json.loads(line)
                    obj = event.get("object") or {}
                    if event.get("type") == "ERROR":
                        return None
                    version = (obj.get("metadata") or {}).get("resourceVersion") or version
                    key = self._keep(obj)
                    if key is None:
                        continue
                    with self.guard:
                        if event.get("type") == "DELETED":
                            self.objects.pop(key, None)
                        else:
                            self.objects[key] = obj
                if self.stopped.is_set():
                    return None
        return version
