"""One reconcile of one ModelDeployment: render, apply, prune, compute the status.

Called by the kopf handlers (create, update, resume, periodic resync, a child deleted).
The new status is returned, not written: the handlers hand it to kopf's own patch (one
write after the handler, to the status subresource), the resync loop writes it itself.
Raises `api.SpecError` for an invalid spec and `kube.KubeError` for API failures; the
handlers turn those into kopf's permanent and temporary errors.
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import kopf

from modeldeploy import api, render, status
from modeldeploy.kube import KubeClient, ObjectRef
from modeldeploy.settings import OperatorSettings

log = logging.getLogger(__name__)

# One reconcile at a time per ModelDeployment (timers, child events and spec changes race).
_locks: defaultdict[str, threading.Lock] = defaultdict(threading.Lock)


@dataclass
class Outcome:
    applied: list[ObjectRef] = field(default_factory=list)
    pruned: list[ObjectRef] = field(default_factory=list)
    status: dict[str, Any] = field(default_factory=dict)
    status_changed: bool = False
    scaled: tuple[int, int] | None = None  # (before, after) ready replicas, when they changed


def parse_body(body: dict[str, Any]) -> api.ModelDeployment:
    """The ModelDeployment in a watched body; SpecError names the field when it is invalid."""
    meta = body.get("metadata", {})
    return api.parse_model_deployment(
        {
            "apiVersion": api.API_VERSION,
            "kind": api.KIND,
            "metadata": {
                "name": meta.get("name"),
                "namespace": meta.get("namespace") or "default",
                "uid": meta.get("uid"),
                "generation": meta.get("generation"),
                "labels": meta.get("labels") or {},
            },
            "spec": body.get("spec"),
        }
    )


def desired_objects(body: dict[str, Any], md: api.ModelDeployment, settings: OperatorSettings) -> list[dict[str, Any]]:
    objects = render.render(md, settings.render)
    kopf.adopt(objects, owner=body)
    return objects


def managed_refs(md: api.ModelDeployment) -> list[ObjectRef]:
    """Every child the operator may have made for this ModelDeployment."""
    ns, name = md.metadata.namespace, md.metadata.name
    return [
        ObjectRef("Deployment", ns, render.workload_name(md, "stable")),
        ObjectRef("Service", ns, name),
        ObjectRef("HorizontalPodAutoscaler", ns, name),
        ObjectRef("PodDisruptionBudget", ns, name),
    ]


def _owned_by(obj: dict[str, Any], uid: str | None) -> bool:
    return any(ref.get("uid") == uid for ref in obj.get("metadata", {}).get("ownerReferences", []))


def record_invalid_spec(kube: KubeClient, body: dict[str, Any], error: api.SpecError) -> dict[str, Any]:
    meta = body["metadata"]
    new_status = status.failed_status(
        body.get("status"),
        generation=meta.get("generation"),
        reason="InvalidSpec",
        message="; ".join(error.problems),
        now=status.now_rfc3339(),
    )
    kube.patch_status(meta.get("namespace") or "default", meta["name"], new_status)
    return new_status


def reconcile(body: dict[str, Any], kube: KubeClient, settings: OperatorSettings, *, created: bool = False) -> Outcome:
    """`created`: the ModelDeployment is new, so its children are created and nothing is pruned."""
    md = parse_body(body)
    with _locks[md.metadata.uid or f"{md.metadata.namespace}/{md.metadata.name}"]:
        return _reconcile_locked(body, md, kube, settings, created)


def _reconcile_locked(
    body: dict[str, Any], md: api.ModelDeployment, kube: KubeClient, settings: OperatorSettings, created: bool
) -> Outcome:
    outcome = Outcome()
    results: dict[ObjectRef, dict[str, Any]] = {}
    for obj in desired_objects(body, md, settings):
        ref = ObjectRef.of(obj)
        results[ref] = kube.apply(obj, probably_new=created)
        outcome.applied.append(ref)
    for ref in managed_refs(md):
        if created or ref in results:
            continue
        existing = kube.get(ref)
        if existing is not None and _owned_by(existing, md.metadata.uid) and kube.delete(ref):
            outcome.pruned.append(ref)
    deployment = results[ObjectRef("Deployment", md.metadata.namespace, render.workload_name(md, "stable"))]
    workload = status.workload_state(deployment)
    url, grpc_url = render.service_urls(md)
    previous = body.get("status") or {}
    outcome.status = status.reconciled_status(
        previous,
        generation=md.metadata.generation,
        revision=render.revision_of(md.spec, settings.render),
        workload=workload,
        url=url,
        grpc_url=grpc_url,
        now=status.now_rfc3339(),
    )
    if previous.get("readyReplicas") is not None and previous.get("readyReplicas") != workload.ready:
        outcome.scaled = (int(previous["readyReplicas"]), workload.ready)
    outcome.status_changed = any(previous.get(key) != value for key, value in outcome.status.items())
    return outcome
