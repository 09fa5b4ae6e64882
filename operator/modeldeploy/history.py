"""Revision history in apps/v1 ControllerRevisions owned by the ModelDeployment.

As StatefulSets and DaemonSets do, every revision the stable Deployment has run is kept in a
ControllerRevision: `data.spec` is the full ModelDeployment spec, `revision` a sequence number
(the highest is the stable one). It survives the loss or an edit of the stable Deployment,
which is re-created from it, and is garbage-collected with the ModelDeployment.

A revision is recorded when the stable takes it for good: the first deployment, a canary that
Succeeded (its stable fully rolled out), or a non-canary strategy's new revision. As Deployments
keep `revisionHistoryLimit` old ReplicaSets, only the newest `history_limit` revisions are kept
(the operator setting `revision_history_limit`, default 10): older ones are deleted right after
a new one is recorded, so the list is read only when the history grows past the limit.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from modeldeploy import api, names, render, rollout
from modeldeploy.kube import KubeClient, ObjectRef
from modeldeploy.memory import Entry, StableRevision

KIND = "ControllerRevision"


def _spec_wire(spec: api.ModelDeploymentSpec) -> dict[str, Any]:
    return spec.model_dump(by_alias=True, exclude_none=True, mode="json")


def revision_name(md: api.ModelDeployment, spec: api.ModelDeploymentSpec) -> str:
    data = json.dumps(_spec_wire(spec), sort_keys=True, separators=(",", ":")).encode()
    return f"{md.metadata.name}-{hashlib.sha256(data).hexdigest()[:10]}"


def _parse(obj: dict[str, Any], settings: names.ImageDefault) -> StableRevision | None:
    try:
        spec = api.ModelDeploymentSpec.model_validate((obj.get("data") or {})["spec"])
    except (KeyError, TypeError, ValueError):
        return None
    return StableRevision(names.revision_of(spec, settings), spec, int(obj.get("revision") or 0))


def load(
    kube: KubeClient,
    md: api.ModelDeployment,
    entry: Entry,
    settings: names.ImageDefault,
    *,
    read_annotation: bool = True,
) -> StableRevision | None:
    """The stable revision: remembered, else the newest owned ControllerRevision, else (from an
    operator without history) the spec annotation of the live stable Deployment."""
    if entry.history_loaded:
        return entry.stable
    ns, name = md.metadata.namespace, md.metadata.name
    owned = [o for o in kube.list(KIND, ns, f"{names.LABEL_DEPLOYMENT}={name}") if names.owned_by(o, md)]
    revisions = [r for r in (_parse(o, settings) for o in owned) if r is not None]
    stable = max(revisions, key=lambda r: r.number, default=None)
    if stable is None and read_annotation:
        live = kube.get(ObjectRef("Deployment", ns, names.workload_name(md, "stable")))
        spec = rollout.stable_spec_of(live)
        if spec is not None:
            stable = StableRevision(names.revision_of(spec, settings), spec, 0)
    entry.stable, entry.history_loaded = stable, True
    return stable


def record(
    kube: KubeClient,
    md: api.ModelDeployment,
    entry: Entry,
    spec: api.ModelDeploymentSpec,
    revision: str,
    history_limit: int = 10,
) -> bool:
    """Record that the stable now runs `revision` (a no-op when it already is the stable one)."""
    if entry.stable is not None and entry.stable.revision == revision:
        return False
    number = (entry.stable.number if entry.stable else 0) + 1
    obj: dict[str, Any] = {
        "apiVersion": "apps/v1",
        "kind": KIND,
        "metadata": {
            "name": revision_name(md, spec),
            "namespace": md.metadata.namespace,
            "labels": {
                **md.metadata.labels,  # the owner's labels under the operator's, as on every child
                **names.MANAGED,
                names.LABEL_DEPLOYMENT: md.metadata.name,
                names.LABEL_REVISION: revision,
            },
            "ownerReferences": [render.owner_reference(md)],
        },
        "data": {"spec": _spec_wire(spec)},
        "revision": number,
    }
    kube.apply(obj)
    entry.stable, entry.history_loaded = StableRevision(revision, spec, number), True
    if number > history_limit:
        prune(kube, md, number - history_limit)
    return True


def prune(kube: KubeClient, md: api.ModelDeployment, up_to: int) -> list[str]:
    """Delete the owned revisions numbered `up_to` or lower; returns their names."""
    ns, name = md.metadata.namespace, md.metadata.name
    pruned = []
    for obj in kube.list(KIND, ns, f"{names.LABEL_DEPLOYMENT}={name}"):
        if names.owned_by(obj, md) and int(obj.get("revision") or 0) <= up_to:
            kube.delete(ObjectRef(KIND, ns, obj["metadata"]["name"]))
            pruned.append(obj["metadata"]["name"])
    return pruned
