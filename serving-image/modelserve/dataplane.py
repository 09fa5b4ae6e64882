"""The one data plane behind REST and gRPC: they decode, call this, and encode.

Requests arrive with tensors already decoded (codecs); here they are checked against
the model's config, batched, run, and turned into responses; statistics are recorded.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from modelserve import __version__
from modelserve import config as cfg
from modelserve.batching import BatchTiming
from modelserve.cache import ResponseCache, request_key
from modelserve.errors import ControlModeRefused, InferenceFailed, InvalidArgument, ServeError, Unavailable, clip
from modelserve.faults import FaultInjector
from modelserve.metrics import Key, ModelStats
from modelserve.repository import ModelVersion, Repository
from modelserve.workerstate import WorkerState, combined

EXTENSIONS = ["binary_tensor_data", "model_configuration", "model_repository", "statistics"]


@dataclass
class InferInput:
    name: str
    datatype: str
    shape: list[int]
    array: np.ndarray


@dataclass
class RequestedOutput:
    name: str
    binary: bool = False


@dataclass
class InferRequest:
    model: str
    version: str = ""
    id: str = ""
    inputs: list[InferInput] = field(default_factory=list)
    outputs: list[RequestedOutput] = field(default_factory=list)
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass
class InferOutput:
    name: str
    datatype: str
    shape: list[int]
    array: np.ndarray


@dataclass
class InferResponse:
    model: str
    version: str
    id: str
    outputs: list[InferOutput]


def _shape_matches(shape: list[int], expected: list[int]) -> bool:
    return len(shape) == len(expected) and all(e == -1 or s == e for s, e in zip(shape, expected, strict=True))


class DataPlane:
    def __init__(
        self, repository: Repository, faults: FaultInjector | None = None, cache: ResponseCache | None = None
    ) -> None:
        self.repository = repository
        self.cache = cache  # used only for versions whose config enables response_cache (stats.cached)
        self.workers: WorkerState | None = None  # --workers N > 1: the other workers' readiness and statistics
        self.faults = faults or FaultInjector()
        self.shutting_down = False  # draining is over: refuse what still arrives
        self.terminating = False  # SIGTERM received: not ready, still serving (modelserve.shutdown)
        self.started = False
        self.inflight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    # --- health and metadata ---

    def live(self) -> bool:
        return True

    def ready(self) -> bool:
        return self.ready_here() and (self.workers is None or self.workers.others_ready())

    def ready_here(self) -> bool:
        """This process is ready (with --workers, the server is ready when every worker is)."""
        return self.started and not self.terminating and not self.shutting_down and self.repository.all_ready()

    def server_metadata(self) -> dict[str, Any]:
        return {"name": "modelserve", "version": __version__, "extensions": list(EXTENSIONS)}

    def model_ready(self, name: str, version: str = "") -> bool:
        return self.repository.ready(name, version)

    def model_metadata(self, name: str, version: str = "") -> dict[str, Any]:
        mv = self.repository.get(name, version)
        entry = self.repository.models[name]
        config = mv.config
        return {
            "name": name,
            "versions": [str(v) for v in sorted(entry.versions)],
            "platform": config.platform,
            "inputs": [self._tensor_meta(config, t) for t in config.input],
            "outputs": [self._tensor_meta(config, t) for t in config.output],
        }

    @staticmethod
    def _tensor_meta(config: cfg.ModelConfig, tensor: Any) -> dict[str, Any]:
        dims = list(tensor.dims)
        return {
            "name": tensor.name,
            "datatype": cfg.datatype_of(tensor.data_type).v2,
            "shape": [-1, *dims] if config.max_batch_size > 0 else dims,
        }

    def model_config(self, name: str, version: str = "") -> cfg.ModelConfig:
        return self.repository.get(name, version).config

    # --- repository extension ---

    def repository_index(self, ready_only: bool = False) -> list[dict[str, str]]:
        return self.repository.index(ready_only)

    async def load_model(self, name: str) -> None:
        self._check_explicit("load")
        try:
            await self.repository.load(name)
        except ServeError:
            raise
        except Exception as exc:
            raise InvalidArgument(f"failed to load '{clip(name)}': {exc}") from None

    async def unload_model(self, name: str) -> None:
        self._check_explicit("unload")
        await self.repository.unload(name)

    def _check_explicit(self, what: str) -> None:
        if self.workers is not None:
            raise ControlModeRefused(
                f"explicit model load / unload is not supported with --workers > 1 (refused {what}); models load"
                " at start with --load-model"
            )
        if self.repository.settings.control_mode != "explicit":
            raise ControlModeRefused(
                f"explicit model load / unload is not allowed unless --model-control-mode=explicit (refused {what})"
            )

    # --- statistics extension ---

    def statistics(self, name: str = "", version: str = "") -> dict[str, Any]:
        versions = [self.repository.get(name, version)] if name else self.repository.loaded_versions()
        totals = self._combined()
        return {"model_stats": [self._stats(v, totals.get(v.key, v.stats)) for v in versions]}

    def _combined(self) -> dict[Key, ModelStats]:
        """Statistics per loaded version, every worker's added up."""
        own = [(mv.key, mv.stats) for mv in self.repository.loaded_versions()]
        return dict(own) if self.workers is None else combined(own, self.workers.others())

    @staticmethod
    def _stats(mv: ModelVersion, s: ModelStats) -> dict[str, Any]:

        def duration(d: Any) -> dict[str, int]:
            return {"count": d.count, "ns": d.ns}

        return {
            "name": mv.name,
            "version": str(mv.version),
            "last_inference": s.last_inference_ms,
            "inference_count": s.inference_count,
            "execution_count": s.execution_count,
            "inference_stats": {
                "success": duration(s.success),
                "fail": duration(s.fail),
                "queue": duration(s.queue),
                "compute_input": duration(s.compute_input),
                "compute_infer": duration(s.compute_infer),
                "compute_output": duration(s.compute_output),
                "cache_hit": duration(s.cache_hit),
                "cache_miss": duration(s.cache_miss),
            },
            "batch_stats": [
                {
                    "batch_size": size,
                    "compute_input": duration(b.compute_input),
                    "compute_infer": duration(b.compute_infer),
                    "compute_output": duration(b.compute_output),
                }
                for size, b in sorted(s.batches.items())
            ],
        }

    def stats_series(self) -> list[tuple[tuple[str, str], ModelStats]]:
        return list(self._combined().items())

    def own_stats_series(self) -> list[tuple[tuple[str, str], ModelStats]]:
        return [(mv.key, mv.stats) for mv in self.repository.loaded_versions()]

    # --- inference ---

    def admit(self, name: str, version: str = "") -> None:
        """Refuse what would be refused anyway before the body is read or decoded."""
        if self.shutting_down:
            raise Unavailable("server is shutting down")
        batcher = self.repository.get(name, version).batcher
        if batcher.queued >= batcher.max_queue_size:
            raise Unavailable(f"request queue is full ({batcher.max_queue_size} waiting); retry later")

    async def infer(self, request: InferRequest) -> InferResponse:
        if self.shutting_down:
            raise Unavailable("server is shutting down")
        mv = self.repository.get(request.model, request.version)
        started = time.perf_counter_ns()
        self.inflight += 1
        self._idle.clear()
        mv.stats.pending += 1
        rows = 1
        try:
            feeds, rows = self._feeds(mv, request)
            wanted = self._requested_outputs(mv, request)
            await self.faults.before_inference()
            if self.cache is not None and mv.stats.cached:
                outputs, timing = await self._cached_run(mv, request, feeds)
            else:
                outputs, timing = await mv.batcher.submit(feeds)
            response = InferResponse(
                model=mv.name,
                version=str(mv.version),
                id=request.id,
                outputs=[self._output(mv.config, name, outputs[name]) for name in wanted],
            )
            self.faults.after_inference()
        except Exception as exc:
            mv.stats.request_done(ok=False, duration_ns=time.perf_counter_ns() - started)
            if isinstance(exc, ServeError):
                raise
            raise InferenceFailed(f"inference failed: {exc}") from exc
        finally:
            mv.stats.pending -= 1
            self.inflight -= 1
            if self.inflight == 0:
                self._idle.set()
        if isinstance(timing, int):  # answered from the response cache in `timing` ns
            mv.stats.cache_hit_done(duration_ns=time.perf_counter_ns() - started, lookup_ns=timing)
            return response
        mv.stats.request_timing(
            timing.queue_ns, timing.compute_input_ns, timing.compute_infer_ns, timing.compute_output_ns
        )
        mv.stats.request_done(ok=True, duration_ns=time.perf_counter_ns() - started, rows=rows)
        return response

    async def _cached_run(
        self, mv: ModelVersion, request: InferRequest, feeds: dict[str, np.ndarray]
    ) -> tuple[dict[str, np.ndarray], BatchTiming | int]:
        """The response cache in front of the batcher: a hit returns (outputs, lookup ns)."""
        assert self.cache is not None
        t0 = time.perf_counter_ns()
        key = request_key(mv.name, str(mv.version), ((i.name, i.datatype, i.shape, i.array) for i in request.inputs))
        found = self.cache.get(key)
        lookup_ns = time.perf_counter_ns() - t0
        if found is not None:
            return found, lookup_ns
        outputs, timing = await mv.batcher.submit(feeds)
        t1 = time.perf_counter_ns()
        self.cache.put(key, outputs)
        mv.stats.cache_miss.add(lookup_ns + time.perf_counter_ns() - t1)
        return outputs, timing

    def _feeds(self, mv: ModelVersion, request: InferRequest) -> tuple[dict[str, np.ndarray], int]:
        config = mv.config
        declared = {t.name: t for t in config.input}
        given = {i.name: i for i in request.inputs}
        if len(given) != len(request.inputs):
            raise InvalidArgument("the same input name appears more than once")
        unknown = set(given) - set(declared)
        if unknown:
            raise InvalidArgument(
                f"unexpected input {clip(sorted(unknown)[0])!r} for model '{mv.name}' (expects: {', '.join(declared)})"
            )
        missing = [n for n, t in declared.items() if n not in given and not t.optional]
        if missing:
            raise InvalidArgument(f"missing input {missing[0]!r} for model '{mv.name}'")
        batched = config.max_batch_size > 0
        feeds: dict[str, np.ndarray] = {}
        rows: int | None = None
        for name, item in given.items():
            spec = declared[name]
            expected_type = cfg.datatype_of(spec.data_type)
            if item.datatype != expected_type.v2:
                raise InvalidArgument(
                    f"input '{name}': datatype {item.datatype} does not match the model's {expected_type.v2}"
                )
            dims = list(spec.dims)
            expected = [-1, *dims] if batched else dims
            if not _shape_matches(item.shape, expected):
                raise InvalidArgument(f"input '{name}': shape {item.shape} does not match the model's {expected}")
            array = item.array
            if batched:
                if not 1 <= item.shape[0] <= config.max_batch_size:
                    raise InvalidArgument(
                        f"input '{name}': batch size {item.shape[0]} is outside 1..{config.max_batch_size}"
                    )
                if rows is not None and item.shape[0] != rows:
                    raise InvalidArgument(
                        f"input '{name}': batch size {item.shape[0]} differs from other inputs' {rows}"
                    )
                rows = item.shape[0]
            if spec.HasField("reshape"):
                array = array.reshape([rows, *spec.reshape.shape] if batched else list(spec.reshape.shape))
            if array.dtype == np.object_:
                array = np.vectorize(lambda b: b.decode("utf-8", errors="replace"), otypes=[object])(array)
            feeds[name] = array
        return feeds, rows or 1

    @staticmethod
    def _requested_outputs(mv: ModelVersion, request: InferRequest) -> list[str]:
        names = [o.name for o in mv.config.output]
        if not request.outputs:
            return names
        for out in request.outputs:
            if out.name not in names:
                raise InvalidArgument(
                    f"unknown output '{clip(out.name)}' for model '{mv.name}' (has: {', '.join(names)})"
                )
        return [o.name for o in request.outputs]

    @staticmethod
    def _output(config: cfg.ModelConfig, name: str, array: np.ndarray) -> InferOutput:
        spec = next(o for o in config.output if o.name == name)
        if spec.HasField("reshape"):
            dims = list(spec.dims)
            array = array.reshape([array.shape[0], *dims] if config.max_batch_size > 0 else dims)
        datatype = cfg.datatype_of(spec.data_type).v2
        return InferOutput(name=name, datatype=datatype, shape=list(array.shape), array=array)

    async def drain(self, timeout: float) -> bool:
        """Wait for in-flight requests, then refuse any more. True when all finished in time."""
        self.terminating = True
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        finally:
            self.shutting_down = True
        return True
