"""Per-version statistics, exported as Prometheus metrics with Triton's names and labels.

One `ModelStats` per (model, version) is the single record both the Prometheus
endpoint and Triton's statistics extension (`/v2/models/<m>/stats`) read. The text
exposition is written by hand: Triton's counters carry no `_total` suffix, which client
libraries add. Everything is updated from the event loop thread.

Beyond Triton's set: a request-latency histogram (canary p99 queries need one) and
the pending-request gauge autoscaling reads.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

PENDING = "nv_inference_pending_request_count"
HISTOGRAM = "modelserve_inference_request_duration_seconds"
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

Key = tuple[str, str]  # (model, version)


@dataclass
class Duration:
    count: int = 0
    ns: int = 0

    def add(self, ns: int, count: int = 1) -> None:
        self.count += count
        self.ns += ns


@dataclass
class BatchStats:
    compute_input: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    compute_output: Duration = field(default_factory=Duration)


@dataclass
class ModelStats:
    success: Duration = field(default_factory=Duration)
    fail: Duration = field(default_factory=Duration)
    queue: Duration = field(default_factory=Duration)
    compute_input: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    compute_output: Duration = field(default_factory=Duration)
    cache_hit: Duration = field(default_factory=Duration)
    cache_miss: Duration = field(default_factory=Duration)
    cached: bool = False  # the response cache serves this version: its nv_cache_* series are exported
    inference_count: int = 0
    execution_count: int = 0
    last_inference_ms: int = 0
    pending: int = 0
    batches: dict[int, BatchStats] = field(default_factory=dict)
    latency_buckets: list[int] = field(default_factory=lambda: [0] * (len(BUCKETS) + 1))
    latency_sum_s: float = 0.0

    def request_done(self, *, ok: bool, duration_ns: int, rows: int = 1) -> None:
        (self.success if ok else self.fail).add(duration_ns)
        if ok:
            self.inference_count += rows
        self.last_inference_ms = int(time.time() * 1000)
        seconds = duration_ns / 1e9
        self.latency_buckets[bisect.bisect_left(BUCKETS, seconds)] += 1
        self.latency_sum_s += seconds

    def cache_hit_done(self, *, duration_ns: int, lookup_ns: int) -> None:
        """Answered from the response cache: a success; as in Triton, no inference or execution is counted."""
        self.cache_hit.add(lookup_ns)
        self.request_done(ok=True, duration_ns=duration_ns, rows=0)

    def request_timing(self, queue_ns: int, input_ns: int, infer_ns: int, output_ns: int) -> None:
        """A successful request's share: Triton counts compute time per request."""
        self.queue.add(queue_ns)
        self.compute_input.add(input_ns)
        self.compute_infer.add(infer_ns)
        self.compute_output.add(output_ns)

    def batch_done(self, size: int, input_ns: int, infer_ns: int, output_ns: int) -> None:
        self.execution_count += 1
        stats = self.batches.setdefault(size, BatchStats())
        stats.compute_input.add(input_ns)
        stats.compute_infer.add(infer_ns)
        stats.compute_output.add(output_ns)


# name -> (help, how to read it from ModelStats)
COUNTERS: dict[str, tuple[str, Callable[[ModelStats], float]]] = {
    "nv_inference_request_success": (
        "Number of successful inference requests, all batch sizes",
        lambda s: s.success.count,
    ),
    "nv_inference_request_failure": ("Number of failed inference requests, all batch sizes", lambda s: s.fail.count),
    "nv_inference_count": ("Number of inferences performed", lambda s: s.inference_count),
    "nv_inference_exec_count": ("Number of model executions performed", lambda s: s.execution_count),
    "nv_inference_request_duration_us": (
        "Cumulative inference request duration in microseconds",
        lambda s: (s.success.ns + s.fail.ns) // 1000,
    ),
    "nv_inference_queue_duration_us": (
        "Cumulative inference queuing duration in microseconds",
        lambda s: s.queue.ns // 1000,
    ),
    "nv_inference_compute_input_duration_us": (
        "Cumulative compute input duration in microseconds",
        lambda s: s.compute_input.ns // 1000,
    ),
    "nv_inference_compute_infer_duration_us": (
        "Cumulative compute inference duration in microseconds",
        lambda s: s.compute_infer.ns // 1000,
    ),
    "nv_inference_compute_output_duration_us": (
        "Cumulative inference compute output duration in microseconds",
        lambda s: s.compute_output.ns // 1000,
    ),
}


# Triton's response cache series, for versions that use the cache (durations in microseconds)
CACHE_COUNTERS: dict[str, tuple[str, Callable[[ModelStats], float]]] = {
    "nv_cache_num_hits_per_model": ("Number of cache hits per model", lambda s: s.cache_hit.count),
    "nv_cache_num_misses_per_model": ("Number of cache misses per model", lambda s: s.cache_miss.count),
    "nv_cache_hit_duration_per_model": (
        "Total cache hit duration per model, in microseconds",
        lambda s: s.cache_hit.ns // 1000,
    ),
    "nv_cache_miss_duration_per_model": (
        "Total cache miss (lookup and insert) duration per model, in microseconds",
        lambda s: s.cache_miss.ns // 1000,
    ),
}


def exposition(series: Iterable[tuple[Key, ModelStats]]) -> str:
    """The Prometheus text format for every loaded version."""
    items = sorted(series, key=lambda kv: kv[0])
    lines: list[str] = []
    for name, (help_text, read) in COUNTERS.items():
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} counter"]
        lines += [f"{name}{_labels(key)} {_number(read(stats))}" for key, stats in items]
    cached = [(key, stats) for key, stats in items if stats.cached]
    for name, (help_text, read) in CACHE_COUNTERS.items() if cached else ():
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} counter"]
        lines += [f"{name}{_labels(key)} {_number(read(stats))}" for key, stats in cached]
    lines += [
        f"# HELP {PENDING} Instantaneous number of pending requests awaiting execution per-model.",
        f"# TYPE {PENDING} gauge",
    ]
    lines += [f"{PENDING}{_labels(key)} {stats.pending}" for key, stats in items]
    lines += [
        f"# HELP {HISTOGRAM} Inference request latency, receipt to response, in seconds",
        f"# TYPE {HISTOGRAM} histogram",
    ]
    for key, stats in items:
        cumulative = 0
        for bound, count in zip((*BUCKETS, None), stats.latency_buckets, strict=True):
            cumulative += count
            le = "+Inf" if bound is None else repr(bound)
            lines.append(f"{HISTOGRAM}_bucket{_labels(key, le=le)} {cumulative}")
        lines.append(f"{HISTOGRAM}_sum{_labels(key)} {_number(stats.latency_sum_s)}")
        lines.append(f"{HISTOGRAM}_count{_labels(key)} {stats.success.count + stats.fail.count}")
    return "\n".join(lines) + "\n"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(key: Key, **extra: str) -> str:
    pairs = {"model": key[0], "version": key[1], **extra}
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in pairs.items()) + "}"


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))
