"""Where kopf keeps its own state: nothing is written to a ModelDeployment unless a handler fails.

kopf decides create / update / nothing by comparing an object's essence (spec, labels,
annotations) with the essence it last handled. Its default stores that essence in an annotation:
one extra PATCH of every ModelDeployment after each create and each spec change, and a write the
user's object carries for ever. Nothing here needs it to outlive the process:

- the reconcile is level-triggered (it renders from the current spec and reads the stable
  revision from its ControllerRevision history), so after a restart it is enough that every object
  is reconciled once: kopf, finding no stored essence, calls it a create, and the handler tells a
  truly new object from one it handled before by `status.observedGeneration` (`is_new`);
- annotations under the operator's own prefix (`modeldeploy.io/rollout` commands, any storage
  left by an older version) are no spec change: commands are acted on from the event handler.

A handler's progress (retries, back-off) stays in annotations, where it must survive a restart, but
they are written only while a handler fails: kopf's "kopf-managed" marker, which it would add to
every object once, is left out (it tells other kopf operators to ignore the prefix; the essence
built here ignores it already).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import kopf

from modeldeploy import api
from modeldeploy.memory import Memory

OWN_PREFIX = f"{api.GROUP}/"


class MemoryDiffBaseStorage(kopf.DiffBaseStorage):
    """The essence of each object, in its `Memory` entry (dropped with it when the object goes)."""

    def __init__(self, memory: Memory) -> None:
        super().__init__()
        self._memory = memory

    def build(self, *, body: kopf.Body, extra_fields: Iterable[Any] | None = None) -> kopf.BodyEssence:
        essence = super().build(body=body, extra_fields=extra_fields)
        annotations = essence.get("metadata", {}).get("annotations")
        if annotations:
            for key in [k for k in annotations if k.startswith(OWN_PREFIX)]:
                del annotations[key]
            self.remove_empty_stanzas(essence)
        return essence

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return self._memory.entry(dict(body)).handled_essence

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        self._memory.entry(dict(body)).handled_essence = essence


class FailureOnlyProgressStorage(kopf.AnnotationsProgressStorage):
    """kopf's annotation progress storage without its marker annotation."""

    def _store_marker(self, prefix: str, patch: kopf.Patch, body: kopf.Body) -> None:
        return None


def is_new(body: dict[str, Any], reason: str) -> bool:
    """A create that is really one: kopf says "create" for every object after a restart too."""
    return reason == "create" and not (body.get("status") or {}).get("observedGeneration")
