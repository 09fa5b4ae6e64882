"""A Triton-layout model repository: `<repo>/<model>/<version>/model.onnx` (+ config.pbtxt).

Loading one model never stops the others: a model that fails to load is recorded as
UNAVAILABLE with the reason, and the index reports it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from dataclasses import dataclass, field
from pathlib import Path

from modelserve import config as cfg
from modelserve import contract, optimize, repopaths, runtime
from modelserve.batching import BatchTiming, DynamicBatcher
from modelserve.errors import InvalidArgument, ModelLoadError, NotFound, ServeError, Unavailable, clip
from modelserve.metrics import ModelStats

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RepositorySettings:
    root: Path
    strict_config: bool = False
    control_mode: str = "none"  # none | explicit
    startup_models: tuple[str, ...] = ()
    overrides: cfg.Overrides = field(default_factory=cfg.Overrides)
    runtime: runtime.RuntimeSettings = field(default_factory=runtime.RuntimeSettings)
    cache_dir: Path | None = None
    response_cache: bool = False  # --cache-config gave the response cache a size


_LOADS = itertools.count(1)


@dataclass
class ModelVersion:
    name: str
    version: int
    config: cfg.ModelConfig
    model: runtime.OnnxModel
    batcher: DynamicBatcher
    stats: ModelStats
    # This load of the version, unique in the process: a reload (new weights under the same version
    # number) gets another, so the response cache never answers with the previous load's results.
    load_id: int = field(default_factory=lambda: next(_LOADS))

    @property
    def key(self) -> tuple[str, str]:
        return (self.name, str(self.version))


@dataclass
class ModelEntry:
    name: str
    state: str = "UNAVAILABLE"  # UNAVAILABLE | LOADING | READY | UNLOADING
    reason: str = ""
    required: bool = False  # readiness waits for it: a start-up model, or one loaded and not unloaded
    versions: dict[int, ModelVersion] = field(default_factory=dict)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


def _available_versions(root: Path, model_dir: Path, filename: str) -> list[int]:
    """Version directories holding the model file; ones that lead outside the repository do not count."""
    resolved_root = root.resolve()
    return sorted(
        int(p.name)
        for p in model_dir.iterdir()
        if p.name.isdigit()
        and len(p.name) < 19
        and repopaths.inside(resolved_root, p / filename)
        and p.is_dir()
        and (p / filename).is_file()
    )


def select_versions(policy: cfg.mc.ModelVersionPolicy, available: list[int]) -> list[int]:
    """Triton's version_policy: latest (default 1), all, or specific."""
    choice = policy.WhichOneof("policy_choice")
    if choice == "all":
        return available
    if choice == "specific":
        wanted = set(policy.specific.versions)
        missing = wanted - set(available)
        if missing:
            raise ModelLoadError(f"version_policy.specific: version(s) {sorted(missing)} not found")
        return [v for v in available if v in wanted]
    count = policy.latest.num_versions if choice == "latest" and policy.latest.num_versions > 0 else 1
    return available[-count:]


class Repository:
    def __init__(self, settings: RepositorySettings) -> None:
        self.settings = settings
        self.models: dict[str, ModelEntry] = {}

    def scan(self) -> list[str]:
        root = self.settings.root
        if not root.is_dir():
            raise ModelLoadError(f"--model-repository {root} is not a directory")
        resolved = root.resolve()
        return sorted(
            p.name
            for p in root.iterdir()
            if not p.name.startswith(".") and repopaths.inside(resolved, p) and p.is_dir()
        )

    async def load_startup_models(self) -> None:
        names = self.scan() if self.settings.control_mode == "none" else list(self.settings.startup_models)
        for name in names:
            self.models.setdefault(name, ModelEntry(name)).required = True
            await self.load(name, raise_errors=False)

    def _load_sync(self, name: str) -> list[tuple[int, cfg.ModelConfig, runtime.OnnxModel]]:
        try:
            return self._load_versions(name)
        except ModelLoadError:
            raise
        except Exception as exc:  # whatever a bad model does, it is that model's load error
            raise ModelLoadError(f"model '{name}': {type(exc).__name__}: {clip(str(exc), 300)}") from None

    def _load_versions(self, name: str) -> list[tuple[int, cfg.ModelConfig, runtime.OnnxModel]]:
        root = self.settings.root
        model_dir = repopaths.model_dir(root, name)
        declared = cfg.load_config_file(model_dir) or cfg.ModelConfig()
        filename = declared.default_model_filename or "model.onnx"
        available = _available_versions(root, model_dir, filename)
        if not available:
            raise ModelLoadError(f"{model_dir}: no version directory with {filename} (expected {name}/1/{filename})")
        loaded = []
        for version in select_versions(declared.version_policy, available):
            path = repopaths.regular_file_inside(root, model_dir / str(version) / filename)
            io = runtime.probe_io(path)
            config = cfg.complete_and_check(
                declared,
                io,
                name=name,
                strict=self.settings.strict_config,
                overrides=self.settings.overrides,
                source=str(model_dir / "config.pbtxt"),
            )
            served = optimize.optimized_model_path(path, config, io, self.settings.cache_dir, f"{name}-{version}")
            loaded.append((version, config, runtime.OnnxModel(served, config, self.settings.runtime)))
        return loaded

    def _batcher(self, config: cfg.ModelConfig, model: runtime.OnnxModel, stats: ModelStats) -> DynamicBatcher:
        batching = config.dynamic_batching
        queue_size = (
            batching.default_queue_policy.max_queue_size
            or self.settings.overrides.max_queue_size
            or contract.DEFAULT_MAX_QUEUE_SIZE
        )

        def on_batch(size: int, timing: BatchTiming) -> None:
            stats.batch_done(size, timing.compute_input_ns, timing.compute_infer_ns, timing.compute_output_ns)

        return DynamicBatcher(
            model.run,
            max_batch_size=config.max_batch_size,
            preferred_batch_sizes=tuple(batching.preferred_batch_size),
            max_queue_delay_us=batching.max_queue_delay_microseconds,
            max_queue_size=queue_size,
            instances=model.instances,
            on_batch=on_batch,
        )

    async def load(self, name: str, *, raise_errors: bool = True) -> None:
        """(Re)load a model; its old versions keep serving until the new ones are ready."""
        try:
            repopaths.check_model_name(name)
        except ServeError as exc:
            log.error("refused to load model %r: %s", clip(name), exc.message)
            if name in self.models:
                self.models[name].reason = exc.message
            if raise_errors:
                raise
            return
        entry = self.models.setdefault(name, ModelEntry(name))
        async with entry.lock:
            previous_state = entry.state
            entry.state = "LOADING"
            try:
                loaded = await asyncio.to_thread(self._load_sync, name)
            except ModelLoadError as exc:
                entry.state = previous_state if entry.versions else "UNAVAILABLE"
                entry.reason = str(exc)
                if not entry.required and not repopaths.is_model_dir(self.settings.root, name):
                    del self.models[name]
                log.error("failed to load model '%s': %s", name, exc)
                if raise_errors:
                    raise
                return
            old = entry.versions
            entry.versions = {}
            wants_cache = any(config.response_cache.enable for _, config, _ in loaded)
            if wants_cache and not self.settings.response_cache:
                log.warning("model '%s' enables response_cache but the server has none (--cache-config)", name)
            for version, config, model in loaded:
                stats = ModelStats(cached=self.settings.response_cache and config.response_cache.enable)
                entry.versions[version] = ModelVersion(
                    name, version, config, model, self._batcher(config, model, stats), stats
                )
            entry.state, entry.reason, entry.required = "READY", "", True
            log.info("model '%s' ready, versions %s", name, sorted(entry.versions))
            for version in old.values():
                await version.batcher.close("model was reloaded")

    async def unload(self, name: str) -> None:
        entry = self.models.get(name)
        if entry is None:
            raise NotFound(f"model '{clip(name)}' is not loaded")
        async with entry.lock:
            entry.state = "UNLOADING"
            versions, entry.versions = entry.versions, {}
            for version in versions.values():
                await version.batcher.close("model was unloaded")
            entry.state, entry.reason, entry.required = "UNAVAILABLE", "unloaded", False

    async def close(self) -> None:
        for entry in self.models.values():
            for version in entry.versions.values():
                await version.batcher.close("server is shutting down")

    def get(self, name: str, version: str = "") -> ModelVersion:
        entry = self.models.get(name)
        if entry is None:
            raise NotFound(f"unknown model '{clip(name)}'")
        if not entry.versions:
            detail = f": {entry.reason}" if entry.reason else ""
            raise Unavailable(f"model '{name}' is not ready ({entry.state}){detail}")
        if not version:
            return entry.versions[max(entry.versions)]
        if not version.isdigit() or len(version) > 18:
            raise InvalidArgument(f"model version must be a positive integer, got '{clip(version)}'")
        found = entry.versions.get(int(version))
        if found is None:
            raise NotFound(f"unknown version {clip(version)} of model '{name}' (loaded: {sorted(entry.versions)})")
        return found

    def ready(self, name: str, version: str = "") -> bool:
        try:
            self.get(name, version)
        except (NotFound, Unavailable, InvalidArgument):
            return False
        return True

    def all_ready(self) -> bool:
        return all(entry.state == "READY" for entry in self.models.values() if entry.required)

    def index(self, ready_only: bool = False) -> list[dict[str, str]]:
        rows: list[dict[str, str]] = []
        known = set(self.models)
        with contextlib.suppress(ModelLoadError):
            known |= set(self.scan())
        for name in sorted(known):
            entry = self.models.get(name)
            if entry is None:
                if not ready_only:
                    rows.append({"name": name})
                continue
            if entry.versions:
                rows += [{"name": name, "version": str(v), "state": entry.state} for v in sorted(entry.versions)]
            elif not ready_only:
                rows.append({"name": name, "state": entry.state, "reason": entry.reason})
        return rows

    def loaded_versions(self) -> list[ModelVersion]:
        return [v for entry in self.models.values() for v in entry.versions.values()]
