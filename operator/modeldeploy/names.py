"""Names, labels and the revision identity of what the operator makes: one home for each.

Below the renderer, the rollout planner, the revision history and the analysis (which all
read from here), above only `api` and modelserve's dependency-free `contract` (ports and
the default image, shared with the server). Nothing here talks to Kubernetes.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal, Protocol

from modeldeploy import api
from modelserve.contract import DEFAULT_SERVING_IMAGE, GRPC_PORT, HTTP_PORT, METRICS_PORT

__all__ = ["DEFAULT_SERVING_IMAGE", "GRPC_PORT", "HTTP_PORT", "METRICS_PORT"]  # re-exported for the operator

# Container and Service ports by name (the PodMonitor and the NetworkPolicy name "metrics").
PORTS: dict[str, int] = {"http": HTTP_PORT, "grpc": GRPC_PORT, "metrics": METRICS_PORT}

Track = Literal["stable", "canary"]
TRACKS: tuple[Track, ...] = ("stable", "canary")

# Labels on every child (and on the pods: the analysis and the monitoring select by them).
LABEL_DEPLOYMENT = "modeldeploy.io/deployment"
LABEL_MODEL = "modeldeploy.io/model"
LABEL_TRACK = "modeldeploy.io/track"
LABEL_REVISION = "modeldeploy.io/revision"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "modeldeploy-operator"
MANAGED = {MANAGED_BY_LABEL: MANAGED_BY}  # the selector of the children the operator watches

# The same pod labels in Prometheus, after the relabelling of modeldeploy.monitoring.
PROM_LABEL_DEPLOYMENT = "modeldeploy_deployment"
PROM_LABEL_TRACK = "modeldeploy_track"
PROM_LABEL_REVISION = "modeldeploy_revision"


def series_selector(namespace: str, name: str, track: str) -> str:
    """PromQL label matchers for one track's series of one ModelDeployment."""
    return f'namespace="{namespace}",{PROM_LABEL_DEPLOYMENT}="{name}",{PROM_LABEL_TRACK}="{track}"'


SPEC_ANNOTATION = "modeldeploy.io/spec"  # the full spec a Deployment runs (the stable's, during a canary)
COMMAND_ANNOTATION = "modeldeploy.io/rollout"  # promote, abort, pause, resume


def workload_name(md: api.ModelDeployment, track: Track) -> str:
    """The serving Deployment of a track: the stable one takes the ModelDeployment's name."""
    return md.metadata.name if track == "stable" else f"{md.metadata.name}-canary"


def track_service_name(md: api.ModelDeployment, track: Track) -> str:
    """The Service of one track (Gateway API backends); the Service of every track is `md`'s name."""
    return f"{md.metadata.name}-{track}"


def owned_by(obj: dict[str, Any] | None, md: api.ModelDeployment) -> bool:
    """`obj` carries an owner reference to this very ModelDeployment (its uid, not only its name)."""
    refs = (obj or {}).get("metadata", {}).get("ownerReferences") or []
    return md.metadata.uid is not None and any(ref.get("uid") == md.metadata.uid for ref in refs)


def pod_revision(deployment: dict[str, Any] | None) -> str | None:
    """The revision a Deployment's pod template runs (its revision label), None when unknown."""
    template = (deployment or {}).get("spec", {}).get("template", {})
    return template.get("metadata", {}).get("labels", {}).get(LABEL_REVISION)


class ImageDefault(Protocol):
    """What a revision needs of the operator's settings: the image when spec.runtime.image is unset."""

    @property
    def serving_image(self) -> str: ...


def pod_spec_fields(spec: api.ModelDeploymentSpec) -> dict[str, Any]:
    """The parts of the spec that change the pods; a change here is a new revision."""
    return {
        "model": spec.model.to_wire(),
        "runtime": spec.runtime.to_wire(),
        "resources": spec.resources.to_wire(),
        "gpu": spec.gpu.to_wire() if spec.gpu else None,
        "pod": spec.pod.to_wire(),
    }


def revision_of(spec: api.ModelDeploymentSpec, settings: ImageDefault) -> str:
    """A short stable hash of what the pods run (the default image included)."""
    fields = pod_spec_fields(spec)
    fields["image"] = spec.runtime.image or settings.serving_image
    digest = hashlib.sha256(json.dumps(fields, sort_keys=True, separators=(",", ":")).encode())
    return digest.hexdigest()[:10]
