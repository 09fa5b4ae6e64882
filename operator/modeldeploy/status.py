"""ModelDeployment status: conditions and fields computed from what the cluster reports.

Pure functions: they take the previous status and the observed children and return the
new status dict (wire format, camelCase). `lastTransitionTime` moves only when a
condition's status changes.
"""

from __future__ import annotations

import datetime
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any, NamedTuple

from modeldeploy.names import pod_revision

READY, PROGRESSING, DEGRADED = "Ready", "Progressing", "Degraded"


def now_rfc3339() -> str:
    return datetime.datetime.now(datetime.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def set_condition(
    conditions: list[dict[str, Any]],
    type_: str,
    status: bool,
    reason: str,
    message: str,
    generation: int | None,
    now: str,
) -> list[dict[str, Any]]:
    """Return conditions with `type_` set; the transition time is kept when status is unchanged."""
    value = "True" if status else "False"
    previous = next((c for c in conditions if c.get("type") == type_), None)
    changed = previous is None or previous.get("status") != value
    condition: dict[str, Any] = {
        "type": type_,
        "status": value,
        "reason": reason,
        "message": message,
        "lastTransitionTime": now
        if changed or not previous.get("lastTransitionTime")
        else previous["lastTransitionTime"],
    }
    if generation is not None:
        condition["observedGeneration"] = generation
    return [c for c in conditions if c.get("type") != type_] + [condition]


@dataclass(frozen=True)
class WorkloadState:
    desired: int
    replicas: int
    ready: int
    updated: int
    available: int
    observed: bool  # the Deployment controller has seen the latest Deployment spec

    @property
    def is_ready(self) -> bool:
        return self.observed and self.updated >= self.desired and self.available >= self.desired

    @property
    def rolled_out(self) -> bool:
        """The Deployment has fully rolled out its template: every pod updated and ready, no old one left."""
        return self.is_ready and self.replicas == self.updated == self.desired and self.ready >= self.desired

    @property
    def summary(self) -> str:
        return f"{self.ready}/{self.desired} serving pods ready, {self.updated} updated"


class PodFact(NamedTuple):
    """What the status needs of one pod of a workload (not terminating)."""

    revision: str | None  # its modeldeploy.io/revision label
    ready: bool  # its Ready condition is True


def pods_state(desired: int, revision: str | None, pods: Collection[PodFact]) -> WorkloadState:
    """A workload's state as its pods show it: what the Deployment controller will report, without
    waiting for it (its status lags by its API rate limit, ~90 s at 1000 Deployments)."""
    updated = [p for p in pods if revision is not None and p.revision == revision]
    return WorkloadState(
        desired=desired,
        replicas=len(pods),
        ready=sum(p.ready for p in pods),
        updated=len(updated),
        available=sum(p.ready for p in updated),
        observed=True,
    )


def workload_state(deployment: dict[str, Any] | None, pods: Collection[PodFact] | None = None) -> WorkloadState:
    """The Deployment's own status; or, when `pods` (its pods, from a watch) are given and show it
    fully rolled out and ready while that status does not yet, the pods' view. Both are evidence;
    the pods are the fresher, and each says ready only of the current template's pods."""
    reported = _reported_state(deployment)
    if not pods or reported.rolled_out or not deployment:
        return reported
    seen = pods_state(reported.desired, pod_revision(deployment), pods)
    return seen if seen.rolled_out else reported


def _reported_state(deployment: dict[str, Any] | None) -> WorkloadState:
    if not deployment:
        return WorkloadState(1, 0, 0, 0, 0, False)
    spec = deployment.get("spec", {})
    st = deployment.get("status", {}) or {}
    generation = deployment.get("metadata", {}).get("generation")
    observed_generation = st.get("observedGeneration")
    observed = generation is None or (observed_generation is not None and observed_generation >= generation)
    return WorkloadState(
        desired=int(spec.get("replicas", 1)),
        replicas=int(st.get("replicas", 0)),
        ready=int(st.get("readyReplicas", 0)),
        updated=int(st.get("updatedReplicas", 0)),
        available=int(st.get("availableReplicas", 0)),
        observed=observed,
    )


def reconciled_status(
    previous: dict[str, Any] | None,
    *,
    generation: int | None,
    revision: str,
    workload: WorkloadState,
    url: str,
    grpc_url: str,
    now: str,
) -> dict[str, Any]:
    """Status after a successful apply of every child."""
    previous = previous or {}
    conditions = list(previous.get("conditions", []))
    ready = workload.is_ready
    conditions = set_condition(
        conditions,
        READY,
        ready,
        "Available" if ready else "PodsNotReady",
        workload.summary,
        generation,
        now,
    )
    conditions = set_condition(
        conditions,
        PROGRESSING,
        not ready,
        "RolloutComplete" if ready else "RollingOut",
        f"revision {revision}: {workload.summary}",
        generation,
        now,
    )
    conditions = set_condition(conditions, DEGRADED, False, "AsExpected", "", generation, now)
    return {
        "observedGeneration": generation,
        "phase": "Succeeded" if ready else "Progressing",
        "conditions": conditions,
        "replicas": workload.replicas,
        "readyReplicas": workload.ready,
        "url": url,
        "grpcUrl": grpc_url,
        "revision": revision,
    }


def failed_status(
    previous: dict[str, Any] | None,
    *,
    generation: int | None,
    reason: str,
    message: str,
    now: str,
) -> dict[str, Any]:
    """Status when the spec is invalid or applying it failed for good: nothing else changes."""
    previous = previous or {}
    conditions = list(previous.get("conditions", []))
    conditions = set_condition(conditions, READY, False, reason, message, generation, now)
    conditions = set_condition(conditions, PROGRESSING, False, reason, message, generation, now)
    conditions = set_condition(conditions, DEGRADED, True, reason, message, generation, now)
    return {"observedGeneration": generation, "phase": "Failed", "conditions": conditions}


def apply_failed_status(
    previous: dict[str, Any] | None, *, generation: int | None, message: str, failures: int, now: str
) -> dict[str, Any]:
    """Status while applying keeps failing (kopf retries): Ready=False, reason ApplyFailed, the API's
    message and how many attempts failed in a row. The phase and everything else are kept."""
    previous = previous or {}
    text = f"{message} (failed {failures} time{'s' if failures != 1 else ''} in a row; retrying)"
    conditions = list(previous.get("conditions", []))
    conditions = set_condition(conditions, READY, False, "ApplyFailed", text, generation, now)
    conditions = set_condition(conditions, DEGRADED, True, "ApplyFailed", text, generation, now)
    return {"conditions": conditions}
