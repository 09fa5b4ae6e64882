"""What the operator remembers per ModelDeployment: one object, owned by the handlers, passed in.

- the latest body seen by the watch (for the resync and rollout loops and child events);
- the status it last gave the object: only the operator writes status, so this is never older
  than what a watched body carries and often newer (a second reconcile right after the first
  must not decide from the snapshot the first already moved past);
- the stable revision read from its ControllerRevision history (read once, then kept);
- one lock, so reconciles and status writes of one object never overlap or reorder;
- how many applies in a row failed (the retry count shown in status);
- the children the last reconcile applied (what a later one may have to prune);
- the pods of each workload, as far as the status needs them (revision, ready);
- the essence kopf last handled (`kopfstorage.MemoryDiffBaseStorage`: no annotation on the object).

`slim()` cuts what nobody reads from every watched object before kopf keeps it (kopf, its
per-object queues and this memory hold the bodies of 1000s of objects).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from modeldeploy import api, names
from modeldeploy.status import PodFact

Key = tuple[str, str]  # (namespace, name)
WorkloadKey = tuple[str, str, str]  # (namespace, ModelDeployment name, track)


def slim(obj: dict[str, Any]) -> dict[str, Any]:
    """A watched object without `metadata.managedFields` (often half of an object), and for a
    Deployment without its pod spec: of a child Deployment the operator reads its metadata,
    `spec.replicas`, the pod template's labels and its status; it renders the rest itself."""
    meta = obj.get("metadata")
    if isinstance(meta, dict):
        meta.pop("managedFields", None)
    if obj.get("kind") == "Deployment":
        template = (obj.get("spec") or {}).get("template")
        if isinstance(template, dict):
            template.pop("spec", None)
    return obj


def child_summary(deployment: dict[str, Any]) -> dict[str, Any]:
    """What a reconcile reads of a live child Deployment (identity, replicas, pod labels, status)."""
    meta, spec = deployment.get("metadata", {}), deployment.get("spec") or {}
    keep = ("name", "namespace", "uid", "generation", "resourceVersion", "labels", "ownerReferences")
    return {
        "metadata": {k: meta[k] for k in keep if k in meta},
        "spec": {
            "replicas": spec.get("replicas"),
            "template": {"metadata": (spec.get("template") or {}).get("metadata") or {}},
        },
        "status": deployment.get("status") or {},
    }


@dataclass(frozen=True)
class StableRevision:
    revision: str
    spec: api.ModelDeploymentSpec
    number: int  # the ControllerRevision's sequence number


@dataclass
class Entry:
    # Reentrant: a handler holds it across a reconcile and the status write that follows.
    lock: threading.RLock = field(default_factory=threading.RLock)
    last_status: dict[str, Any] | None = None
    stable: StableRevision | None = None
    history_loaded: bool = False
    apply_failures: int = 0
    command_pending: bool = False  # a modeldeploy.io/rollout command is being acted on
    applied: set[Any] | None = None  # the children (ObjectRefs) the last reconcile applied; None: unknown
    # Watched children (ObjectRef -> (digest of what was applied, resourceVersion the apply answered)):
    # while the live child still has that resourceVersion, re-applying the same object changes nothing.
    applied_versions: dict[Any, tuple[str, str]] = field(default_factory=dict)
    handled_essence: Any = None  # kopf's BodyEssence of the last handled spec; None: not handled yet

    def freshest(self, observed: dict[str, Any]) -> dict[str, Any]:
        """The remembered status unless the observed one is about a newer generation."""
        remembered = self.last_status
        if remembered is None:
            return observed
        if (remembered.get("observedGeneration") or 0) < (observed.get("observedGeneration") or 0):
            return observed
        return remembered

    def remember(self, written: dict[str, Any], base: dict[str, Any]) -> None:
        self.last_status = {**base, **written}


class Memory:
    """Per-object memory of one operator process."""

    def __init__(self) -> None:
        self.known: dict[Key, dict[str, Any]] = {}
        self.children: dict[Key, dict[str, Any]] = {}  # watched child Deployments, as `child_summary` keeps them
        self.pods: dict[WorkloadKey, dict[str, PodFact]] = {}  # watched pods (not terminating) by workload
        self._entries: dict[str, Entry] = {}
        self._guard = threading.Lock()

    def entry(self, body: dict[str, Any]) -> Entry:
        meta = body.get("metadata", {})
        key = meta.get("uid") or f"{meta.get('namespace')}/{meta.get('name')}"
        with self._guard:
            found = self._entries.get(key)
            if found is None:
                found = self._entries[key] = Entry()
            return found

    def seen(self, body: dict[str, Any]) -> None:
        meta = body.get("metadata", {})
        self.known[(meta.get("namespace") or "default", meta["name"])] = body

    def forget(self, body: dict[str, Any]) -> None:
        meta = body.get("metadata", {})
        self.known.pop((meta.get("namespace") or "default", meta.get("name")), None)
        with self._guard:
            self._entries.pop(meta.get("uid") or f"{meta.get('namespace')}/{meta.get('name')}", None)

    def saw_child(self, child: dict[str, Any], *, deleted: bool = False) -> None:
        meta = child.get("metadata", {})
        key = (meta.get("namespace") or "default", meta.get("name"))
        if deleted or meta.get("deletionTimestamp"):
            self.children.pop(key, None)
        else:
            self.children[key] = child_summary(child)

    def saw_pod(self, pod: dict[str, Any], *, deleted: bool = False) -> WorkloadKey | None:
        """Keep a pod's revision and readiness; the workload whose pods changed in that, if any."""
        meta = pod.get("metadata", {})
        labels = meta.get("labels") or {}
        owner, track, name = labels.get(names.LABEL_DEPLOYMENT), labels.get(names.LABEL_TRACK), meta.get("name")
        if not owner or not track or not name:
            return None
        key = (meta.get("namespace") or "default", owner, track)
        gone = deleted or meta.get("deletionTimestamp")
        after = None if gone else PodFact(labels.get(names.LABEL_REVISION), _ready(pod))
        with self._guard:
            pods = self.pods.setdefault(key, {})
            before = pods.pop(name, None)
            if after is not None:
                pods[name] = after
            elif not pods:
                del self.pods[key]
        return key if before != after else None

    def pods_of(self, namespace: str, name: str, track: names.Track) -> list[PodFact]:
        """The watched pods of one track of a ModelDeployment (empty where nothing watches pods)."""
        with self._guard:
            return list(self.pods.get((namespace, name, track), {}).values())

    def owner(self, key: Key) -> dict[str, Any] | None:
        return self.known.get(key)

    def status_of(self, body: dict[str, Any]) -> dict[str, Any]:
        """The freshest status known for a body."""
        return self.entry(body).freshest(body.get("status") or {})


def _ready(pod: dict[str, Any]) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)
