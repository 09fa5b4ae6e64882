"""The one data plane behind REST and gRPC: they decode, call this, and encode its typed answers.

Requests arrive with tensors already decoded (codecs); here they are checked against the
model's signature (signature.py), batched, run, and turned into responses; statistics are
recorded. Health and draining live in lifecycle.py, the repository extension in control.py,
statistics in statistics.py; this module ties them to the models.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Iterable
from typing import Any

import numpy as np

from modelserve import __version__, signature
from modelserve import config as cfg
from modelserve.batching import BatchTiming
from modelserve.cache import ResponseCache, exact_request_digest, request_key
from modelserve.control import RepositoryControl
from modelserve.errors import InferenceFailed, ServeError, Unavailable
from modelserve.faults import FaultInjector
from modelserve.lifecycle import Lifecycle
from modelserve.messages import (
    InferRequest,
    InferResponse,
    ModelMetadata,
    RepositoryEntry,
    ServerMetadata,
)
from modelserve.metrics import Key, ModelStats
from modelserve.repository import ModelVersion, Repository
from modelserve.statistics import Statistics, VersionStatistics
from modelserve.workerstate import WorkerState

EXTENSIONS = ("binary_tensor_data", "model_configuration", "model_repository", "statistics")


class CacheTicket:
    """Where a cached version's result lies in the response cache: a front end remembers its answer there."""

    __slots__ = ("key", "model")  # a plain class: a frozen dataclass costs a microsecond to build

    def __init__(self, model: ModelVersion, key: bytes) -> None:
        self.model = model
        self.key = key


class ExactRequest:
    """A front end's exact request for a cached version (its digest), and the answer remembered for it, if any."""

    __slots__ = ("answer", "digest", "model")

    def __init__(self, model: ModelVersion, digest: bytes, answer: Any | None) -> None:
        self.model = model
        self.digest = digest
        self.answer = answer


class DataPlane:
    def __init__(
        self, repository: Repository, faults: FaultInjector | None = None, cache: ResponseCache | None = None
    ) -> None:
        self.repository = repository
        self.cache = cache  # used only for versions whose config enables response_cache (stats.cached)
        self.faults = faults or FaultInjector()
        self.lifecycle = Lifecycle()  # modelserve.server starts it, modelserve.shutdown drains it
        self.control = RepositoryControl(repository)
        self.stats = Statistics(repository)
        self._workers: WorkerState | None = None

    @property
    def workers(self) -> WorkerState | None:
        """With --workers N > 1: the other workers' readiness and statistics."""
        return self._workers

    @workers.setter
    def workers(self, workers: WorkerState | None) -> None:
        self._workers = workers
        self.stats.workers = workers
        self.control.multi_worker = workers is not None

    # --- health and metadata ---

    def live(self) -> bool:
        return True

    def ready(self) -> bool:
        return self.ready_here() and (self._workers is None or self._workers.others_ready())

    def ready_here(self) -> bool:
        """This process is ready (with --workers, the server is ready when every worker is)."""
        return self.lifecycle.serving and self.repository.all_ready()

    def server_metadata(self) -> ServerMetadata:
        return ServerMetadata(name="modelserve", version=__version__, extensions=EXTENSIONS)

    def model_ready(self, name: str, version: str = "") -> bool:
        return self.repository.ready(name, version)

    def model_metadata(self, name: str, version: str = "") -> ModelMetadata:
        config = self.repository.get(name, version).config
        entry = self.repository.models[name]

        def tensor(t: cfg.mc.ModelInput | cfg.mc.ModelOutput) -> cfg.TensorSpec:
            return cfg.TensorSpec(t.name, cfg.datatype_of(t.data_type), tuple(cfg.full_shape(config, t.dims)))

        return ModelMetadata(
            name=name,
            versions=tuple(str(v) for v in sorted(entry.versions)),
            platform=config.platform,
            inputs=tuple(tensor(t) for t in config.input),
            outputs=tuple(tensor(t) for t in config.output),
        )

    def model_config(self, name: str, version: str = "") -> cfg.ModelConfig:
        """The completed config as Triton's ModelConfig message (its typed schema)."""
        return self.repository.get(name, version).config

    # --- repository and statistics extensions ---

    def repository_index(self, ready_only: bool = False) -> list[RepositoryEntry]:
        return self.control.index(ready_only)

    async def load_model(self, name: str) -> None:
        await self.control.load(name)

    async def unload_model(self, name: str) -> None:
        await self.control.unload(name)

    def statistics(self, name: str = "", version: str = "") -> list[VersionStatistics]:
        return self.stats.of(name, version)

    def stats_series(self) -> list[tuple[Key, ModelStats]]:
        return list(self.stats.combined().items())

    def own_stats_series(self) -> list[tuple[Key, ModelStats]]:
        return self.stats.own()

    # --- inference ---

    def admit(self, name: str, version: str = "") -> None:
        """Refuse what would be refused anyway before the body is read or decoded."""
        self.lifecycle.refuse_when_stopped()
        batcher = self.repository.get(name, version).batcher
        if batcher.queued >= batcher.max_queue_size:
            raise Unavailable(f"request queue is full ({batcher.max_queue_size} waiting); retry later")

    def exact_answer(
        self, kind: str, name: str, version: str, parts: Iterable[bytes | memoryview]
    ) -> ExactRequest | None:
        """Look up the answer a front end remembered for this exact request (`parts`, in its form `kind`).

        None when the version does not use the response cache (or faults are injected: every request
        then takes the whole path). A remembered answer is a cache hit, counted as one; it is only
        ever found for the very version (the same load) that produced it, and never keeps an unloaded one alive.
        """
        cache = self.cache
        if cache is None or self.faults.active:
            return None
        self.lifecycle.refuse_when_stopped()
        mv = self.repository.get(name, version)
        if not mv.stats.cached:
            return None
        started = time.perf_counter_ns()
        digest = exact_request_digest(kind, name, version, parts)
        found = cache.answer(digest)
        if found is not None and found[0]() is mv:
            elapsed = time.perf_counter_ns() - started
            mv.stats.cache_hit_done(duration_ns=elapsed, lookup_ns=elapsed)
            return ExactRequest(mv, digest, found[1])
        return ExactRequest(mv, digest, None)

    def remember_answer(self, exact: ExactRequest, ticket: CacheTicket | None, answer: Any, nbytes: int) -> None:
        """Keep a front end's `answer` (`nbytes` long) to `exact`, with the cache entry `ticket` names."""
        if self.cache is not None and ticket is not None and ticket.model is exact.model:
            self.cache.remember(ticket.key, exact.digest, (weakref.ref(ticket.model), answer), nbytes)

    async def infer(self, request: InferRequest) -> InferResponse:
        return (await self.infer_with_ticket(request))[0]

    async def infer_with_ticket(self, request: InferRequest) -> tuple[InferResponse, CacheTicket | None]:
        """`infer`, and where its result lies in the response cache (None when the version does not use it)."""
        self.lifecycle.refuse_when_stopped()
        mv = self.repository.get(request.model, request.version)
        started = time.perf_counter_ns()
        self.lifecycle.enter()
        mv.stats.pending += 1
        rows = 1
        ticket: CacheTicket | None = None
        try:
            feeds, rows = signature.check_inputs(mv.config, request.inputs)
            wanted = signature.requested_outputs(mv.config, request.outputs)
            await self.faults.before_inference()
            if self.cache is not None and mv.stats.cached:
                outputs, timing, ticket = await self._cached_run(mv, request, feeds)
            else:
                outputs, timing = await mv.batcher.submit(feeds)
            response = InferResponse(
                model=mv.name,
                version=str(mv.version),
                id=request.id,
                outputs=[signature.output_tensor(mv.config, name, outputs[name]) for name in wanted],
            )
            self.faults.after_inference()
        except Exception as exc:
            mv.stats.request_done(ok=False, duration_ns=time.perf_counter_ns() - started)
            if isinstance(exc, ServeError):
                raise
            raise InferenceFailed(f"inference failed: {exc}") from exc
        finally:
            mv.stats.pending -= 1
            self.lifecycle.leave()
        if isinstance(timing, int):  # answered from the response cache in `timing` ns
            mv.stats.cache_hit_done(duration_ns=time.perf_counter_ns() - started, lookup_ns=timing)
            return response, ticket
        mv.stats.request_timing(
            timing.queue_ns, timing.compute_input_ns, timing.compute_infer_ns, timing.compute_output_ns
        )
        mv.stats.request_done(ok=True, duration_ns=time.perf_counter_ns() - started, rows=rows)
        return response, ticket

    async def _cached_run(
        self, mv: ModelVersion, request: InferRequest, feeds: dict[str, np.ndarray]
    ) -> tuple[dict[str, np.ndarray], BatchTiming | int, CacheTicket | None]:
        """The response cache in front of the batcher: a hit returns (outputs, lookup ns, ticket)."""
        assert self.cache is not None
        t0 = time.perf_counter_ns()
        # The load, not only the version number: a reload with new weights must not hit old results.
        version = f"{mv.version}/{mv.load_id}"
        key = request_key(mv.name, version, ((i.name, i.datatype, i.shape, i.array) for i in request.inputs))
        found = self.cache.get(key)
        lookup_ns = time.perf_counter_ns() - t0
        if found is not None:
            return found, lookup_ns, CacheTicket(mv, key)
        outputs, timing = await mv.batcher.submit(feeds)
        t1 = time.perf_counter_ns()
        stored = self.cache.put(key, outputs)
        mv.stats.cache_miss.add(lookup_ns + time.perf_counter_ns() - t1)
        return outputs, timing, CacheTicket(mv, key) if stored else None
