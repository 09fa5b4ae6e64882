"""The canary's state as one typed value: decoded from `status` once per reconcile, encoded once.

`status.phase` carries the canary's phase while one runs and `status.canary` the rest
(camelCase on the wire). Nothing else reads or writes those keys: the reconcile decodes a
`RolloutState`, the pure machine (`canary.next_state`) and the analysis schedule work on it,
and `encode` turns the result back into the `status.canary` block.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from modeldeploy import canary


def parse_time(value: str | None) -> datetime.datetime | None:
    if not value:
        return None
    try:
        return datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


@dataclass(frozen=True)
class AnalysisRecord:
    """One check of one analysis, with the time that analysis ran."""

    result: canary.CheckResult
    time: str | None

    def encode(self) -> dict[str, Any]:
        r = self.result
        out: dict[str, Any] = {"check": r.check, "query": r.query, "outcome": r.outcome.value}
        for key in ("value", "min", "max"):
            if getattr(r, key) is not None:
                out[key] = getattr(r, key)
        if self.time:
            out["time"] = self.time
        return out

    @classmethod
    def decode(cls, item: Mapping[str, Any]) -> AnalysisRecord | None:
        try:
            result = canary.CheckResult(
                str(item["check"]), str(item.get("query", "")), item.get("value"), item.get("min"), item.get("max"),
                canary.Outcome(item["outcome"]),
            )  # fmt: skip
        except (KeyError, ValueError, TypeError):
            return None
        return cls(result, item.get("time"))


@dataclass(frozen=True)
class RolloutState:
    """A running canary: the revision under test and where its rollout stands."""

    revision: str
    phase: canary.Phase = "Progressing"
    step: int = 0
    weight: int = 0
    failures: int = 0
    inconclusive: int = 0
    step_started_at: str | None = None  # when the canary was ready for this step (its clock)
    last_command: str | None = None  # the modeldeploy.io/rollout value last acted on
    last_analysis: tuple[AnalysisRecord, ...] = ()
    reason: str = field(default="", compare=False)  # why the last transition happened (not persisted)

    @classmethod
    def decode(cls, status: Mapping[str, Any] | None) -> RolloutState | None:
        """The running canary in a status, or None when there is none."""
        block = (status or {}).get("canary")
        if not block or not block.get("revision"):
            return None
        phase = (status or {}).get("phase")
        records = (AnalysisRecord.decode(item) for item in block.get("lastAnalysis") or [])
        return cls(
            revision=str(block["revision"]),
            phase=phase if phase in canary.ACTIVE_PHASES else "Progressing",
            step=int(block.get("step", 0)),
            weight=int(block.get("weight", 0)),
            failures=int(block.get("failures", 0)),
            inconclusive=int(block.get("inconclusive", 0)),
            step_started_at=block.get("stepStartedAt"),
            last_command=block.get("lastCommand"),
            last_analysis=tuple(r for r in records if r is not None),
        )

    def encode(self) -> dict[str, Any]:
        """The `status.canary` block (the phase goes to `status.phase`)."""
        return {
            "revision": self.revision,
            "step": self.step,
            "weight": self.weight,
            "failures": self.failures,
            "inconclusive": self.inconclusive,
            "stepStartedAt": self.step_started_at,
            "lastCommand": self.last_command,
            "lastAnalysis": [r.encode() for r in self.last_analysis],
        }

    @property
    def active(self) -> bool:
        return self.phase in canary.ACTIVE_PHASES

    @property
    def machine(self) -> canary.CanaryState:
        """The pure phase machine's view of this state."""
        return canary.CanaryState(
            phase=self.phase,
            step=self.step,
            failures=self.failures,
            inconclusive=self.inconclusive,
            reason=self.reason,
            last_results=tuple(r.result for r in self.last_analysis),
        )

    def last_analysis_at(self) -> datetime.datetime | None:
        times = [t for t in (parse_time(r.time) for r in self.last_analysis) if t is not None]
        return max(times) if times else None

    def analysis_due_at(self, interval_seconds: float) -> datetime.datetime | None:
        """When the next analysis is due: one interval after the step's clock started or after the
        last analysis, whichever is later, so each analysis covers its own window. None: nothing
        is due (not Progressing, or the canary is not ready yet)."""
        started = parse_time(self.step_started_at)
        if self.phase != "Progressing" or started is None:
            return None
        last = self.last_analysis_at()
        since = max(started, last) if last is not None else started
        return since + datetime.timedelta(seconds=interval_seconds)

    def transition_from(self, before: RolloutState | None) -> bool:
        """A real phase or step transition (a new canary counts as one)."""
        return (
            before is None
            or before.revision != self.revision
            or (before.phase, before.step)
            != (
                self.phase,
                self.step,
            )
        )

    def after(self, machine: canary.CanaryState, steps: list[int]) -> RolloutState:
        """This state moved to what the phase machine decided."""
        return replace(
            self,
            phase=machine.phase,
            step=machine.step,
            weight=machine.weight(steps),
            failures=machine.failures,
            inconclusive=machine.inconclusive,
            reason=machine.reason,
        )
