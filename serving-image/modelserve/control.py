"""Triton's model repository extension: the index, and load / unload with the rules that allow them."""

from __future__ import annotations

from modelserve.errors import ControlModeRefused, InvalidArgument, ServeError, clip
from modelserve.messages import RepositoryEntry
from modelserve.repository import Repository


class RepositoryControl:
    def __init__(self, repository: Repository) -> None:
        self.repository = repository
        self.multi_worker = False  # --workers N > 1: every worker must hold the same models

    def index(self, ready_only: bool = False) -> list[RepositoryEntry]:
        return [RepositoryEntry(**row) for row in self.repository.index(ready_only)]

    async def load(self, name: str) -> None:
        self._check_explicit("load")
        try:
            await self.repository.load(name)
        except ServeError:
            raise
        except Exception as exc:
            raise InvalidArgument(f"failed to load '{clip(name)}': {exc}") from None

    async def unload(self, name: str) -> None:
        self._check_explicit("unload")
        await self.repository.unload(name)

    def _check_explicit(self, what: str) -> None:
        if self.multi_worker:
            raise ControlModeRefused(
                f"explicit model load / unload is not supported with --workers > 1 (refused {what}); models load"
                " at start with --load-model"
            )
        if self.repository.settings.control_mode != "explicit":
            raise ControlModeRefused(
                f"explicit model load / unload is not allowed unless --model-control-mode=explicit (refused {what})"
            )
