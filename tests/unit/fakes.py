"""In-memory stand-ins for the operator's clients: a KubeClient and a MetricsProvider.

They keep the contract the reconcile layer relies on (server-side apply merges and returns
the object, get returns None for a missing one, delete says whether it deleted, a status
patch merges into status) and record every call, so the middle is tested in-process.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from modeldeploy import api
from modeldeploy.kube import KubeError, ObjectRef
from modeldeploy.prometheus import (
    ERROR_RATE,
    LATENCY_P99_MS,
    NO_VALUES,
    REQUESTS,
    ProviderError,
    QueryContext,
    QueryResult,
)


@dataclass
class FakeKube:
    """Objects by ObjectRef; `fail_apply` makes every apply of a kind fail with that error."""

    objects: dict[ObjectRef, dict[str, Any]] = field(default_factory=dict)
    statuses: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    events: list[tuple[str, str, str]] = field(default_factory=list)
    calls: list[tuple[str, str, str]] = field(default_factory=list)  # (verb, kind, name)
    fail_apply: dict[str, KubeError] = field(default_factory=dict)

    def get(self, ref: ObjectRef) -> dict[str, Any] | None:
        self.calls.append(("get", ref.kind, ref.name))
        found = self.objects.get(ref)
        return copy.deepcopy(found) if found is not None else None

    def list(self, kind: str, namespace: str, label_selector: str) -> list[dict[str, Any]]:
        self.calls.append(("list", kind, label_selector))
        key, _, value = label_selector.partition("=")
        return [
            copy.deepcopy(obj)
            for ref, obj in self.objects.items()
            if ref.kind == kind and ref.namespace == namespace and obj["metadata"].get("labels", {}).get(key) == value
        ]

    def apply(self, obj: dict[str, Any], *, probably_new: bool = False) -> dict[str, Any]:
        ref = ObjectRef.of(obj)
        self.calls.append(("apply", ref.kind, ref.name))
        if ref.kind in self.fail_apply:
            raise self.fail_apply[ref.kind]
        merged = copy.deepcopy(obj)
        live = self.objects.get(ref, {})
        if "status" in live and live.get("spec") == obj.get("spec"):
            merged["status"] = live["status"]  # a changed spec waits for the controllers again
        self.objects[ref] = merged
        return copy.deepcopy(merged)

    def apply_all(self, objs: list[dict[str, Any]], *, probably_new: bool = False) -> list[dict[str, Any]]:
        return [self.apply(obj, probably_new=probably_new) for obj in objs]  # in order: calls stay comparable

    def delete(self, ref: ObjectRef) -> bool:
        self.calls.append(("delete", ref.kind, ref.name))
        return self.objects.pop(ref, None) is not None

    def post_event(self, involved: dict[str, Any], type_: str, reason: str, message: str) -> None:
        self.events.append((type_, reason, message))

    def patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        self.calls.append(("patch_status", "ModelDeployment", name))
        self.statuses[(namespace, name)] = {**self.statuses.get((namespace, name), {}), **status}

    # --- what the tests do in the cluster's place ---

    def names(self, kind: str) -> set[str]:
        return {ref.name for ref in self.objects if ref.kind == kind}

    def set_ready(self, name: str, namespace: str = "ml") -> None:
        """The Deployment's pods all became ready and up to date (what the controllers would report)."""
        obj = self.objects[ObjectRef("Deployment", namespace, name)]
        replicas = obj["spec"].get("replicas", 1)
        obj["metadata"]["generation"] = 1
        obj["status"] = {
            "observedGeneration": 1,
            "replicas": replicas,
            "readyReplicas": replicas,
            "updatedReplicas": replicas,
            "availableReplicas": replicas,
        }


@dataclass
class FakeProvider:
    """Answers by query text; unknown queries have no data. `error` makes every query fail."""

    answers: dict[str, QueryResult] = field(default_factory=dict)
    online: bool = True
    error: str | None = None
    queries: list[str] = field(default_factory=list)

    def is_online(self) -> bool:
        return self.online

    def run_query(self, query: str) -> QueryResult:
        self.queries.append(query)
        if self.error is not None:
            raise ProviderError(self.error)
        return self.answers.get(query, NO_VALUES)

    def answer(
        self,
        md: api.ModelDeployment,
        revision: str,
        *,
        requests: float | None = None,
        error_rate: float | None = None,
        latency_ms: float | None = None,
    ) -> FakeProvider:
        """Set what the built-in checks of `md`'s canary get (None: no data)."""
        context = QueryContext(md.metadata.name, md.metadata.namespace, "canary", revision, md.spec.rollout.interval)
        for template, value in ((REQUESTS, requests), (ERROR_RATE, error_rate), (LATENCY_P99_MS, latency_ms)):
            self.answers[context.render(template)] = NO_VALUES if value is None else value
        return self
