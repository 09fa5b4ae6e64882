"""The operator's own Prometheus metrics: reconciles (count, errors, duration), canary analyses and weights,
API requests.

Per-ModelDeployment labels are `modeldeploy_namespace` and `modeldeploy_deployment`: a scrape
sets `namespace` to the operator's own namespace, so that name would be renamed away.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from modeldeploy.names import PROM_LABEL_DEPLOYMENT

OUTCOMES = ("success", "invalid_spec", "transient_error", "error")


class OperatorMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.reconciles = Counter(
            "modeldeploy_reconcile", "Reconciles of ModelDeployments by outcome", ["outcome"], registry=self.registry
        )
        self.errors = Counter(
            "modeldeploy_reconcile_errors", "Failed reconciles by kind of error", ["kind"], registry=self.registry
        )
        self.duration = Histogram(
            "modeldeploy_reconcile_duration_seconds",
            "Time to reconcile one ModelDeployment",
            ["outcome"],
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )

        self.analyses = Counter(
            "modeldeploy_canary_analyses", "Canary analyses by outcome", ["outcome"], registry=self.registry
        )
        self.rollbacks = Counter("modeldeploy_canary_rollbacks", "Canaries rolled back", registry=self.registry)
        self.promotions = Counter("modeldeploy_canary_promotions", "Canaries promoted", registry=self.registry)
        self.canary_weight = Gauge(
            "modeldeploy_canary_weight",
            "Traffic share of the running canary in percent; 0 when none runs",
            ["modeldeploy_namespace", PROM_LABEL_DEPLOYMENT],  # the serving series' label (the dashboard joins on it)
            registry=self.registry,
        )

        self.kube_requests = Counter(
            "modeldeploy_kube_requests",
            "Kubernetes API requests the operator's reconciles sent (each attempt), by method and HTTP status "
            "(0: no answer); kopf's own watches and patches are not counted",
            ["method", "code"],
            registry=self.registry,
        )

    def kube_request(self, method: str, code: int) -> None:
        self.kube_requests.labels(method, str(code)).inc()

    def record_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        """The canary weight a reconcile left in a ModelDeployment's status."""
        weight = (status.get("canary") or {}).get("weight") or 0
        self.canary_weight.labels(namespace, name).set(float(weight))

    @contextmanager
    def reconcile(self) -> Iterator[dict[str, str]]:
        """Time one reconcile; the body sets result['outcome'] (default success, error on raise)."""
        result = {"outcome": "success"}
        started = time.perf_counter()
        try:
            yield result
        except Exception:
            if result["outcome"] == "success":
                result["outcome"] = "error"
            raise
        finally:
            outcome = result["outcome"]
            self.reconciles.labels(outcome).inc()
            if outcome != "success":
                self.errors.labels(outcome).inc()
            self.duration.labels(outcome).observe(time.perf_counter() - started)

    def serve(self, port: int) -> None:
        start_http_server(port, registry=self.registry)
