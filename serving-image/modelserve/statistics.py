"""Triton's statistics extension, read from the same per-version records the metrics export.

With --workers N every worker's records are added up (workerstate), so one answer covers the server.
"""

from __future__ import annotations

from dataclasses import dataclass

from modelserve.metrics import Key, ModelStats
from modelserve.repository import ModelVersion, Repository
from modelserve.workerstate import WorkerState, combined


@dataclass(frozen=True)
class VersionStatistics:
    """One loaded version's statistics; each front end encodes `stats` in its own wire form."""

    name: str
    version: str
    stats: ModelStats


class Statistics:
    def __init__(self, repository: Repository) -> None:
        self.repository = repository
        self.workers: WorkerState | None = None  # --workers N > 1: the other workers' records

    def of(self, name: str = "", version: str = "") -> list[VersionStatistics]:
        """One version's (or every loaded version's) statistics, every worker's added up."""
        versions = [self.repository.get(name, version)] if name else self.repository.loaded_versions()
        totals = self.combined()
        return [_answer(mv, totals.get(mv.key, mv.stats)) for mv in versions]

    def combined(self) -> dict[Key, ModelStats]:
        own = self.own()
        return dict(own) if self.workers is None else combined(own, self.workers.others())

    def own(self) -> list[tuple[Key, ModelStats]]:
        """This process's records only (what a worker publishes to the others)."""
        return [(mv.key, mv.stats) for mv in self.repository.loaded_versions()]


def _answer(mv: ModelVersion, stats: ModelStats) -> VersionStatistics:
    return VersionStatistics(name=mv.name, version=str(mv.version), stats=stats)
