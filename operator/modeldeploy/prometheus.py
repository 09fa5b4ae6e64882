"""Metrics providers for canary analysis, and the queries the built-in checks run.

`MetricsProvider` is the interface (`run_query`, `is_online`); `PrometheusProvider` is
the implementation on `prometheus-api-client`. A query answered with no series, or
with NaN, returns `NO_VALUES`, distinct from any number: the canary logic treats it as
inconclusive. An unreachable or failing Prometheus raises `ProviderError`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Final, Protocol

import requests
from prometheus_api_client import PrometheusApiClientException, PrometheusConnect
from urllib3.util.retry import Retry

from modeldeploy.names import series_selector


class _NoValues:
    """The query ran and returned nothing to judge (no series, or NaN)."""

    _instance: _NoValues | None = None

    def __new__(cls) -> _NoValues:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "NO_VALUES"


NO_VALUES: Final = _NoValues()
QueryResult = float | _NoValues


class ProviderError(Exception):
    """The metrics provider could not answer (unreachable, bad query, several series)."""


class MetricsProvider(Protocol):
    def run_query(self, query: str) -> QueryResult: ...

    def is_online(self) -> bool: ...


class PrometheusProvider:
    def __init__(self, url: str, timeout: float = 10.0) -> None:
        self.url = url
        self.timeout = timeout
        # One quick retry: an outage must surface as an error within the analysis interval.
        retry = Retry(total=1, backoff_factor=0.2, status_forcelist=(502, 503, 504), allowed_methods=("GET", "POST"))
        self._client = PrometheusConnect(url=url, disable_ssl=True, timeout=timeout, retry=retry)

    def is_online(self) -> bool:
        try:
            return bool(self._client.check_prometheus_connection())
        except (requests.RequestException, PrometheusApiClientException):
            return False

    def run_query(self, query: str) -> QueryResult:
        try:
            result = self._client.custom_query(query=query)
        except (requests.RequestException, PrometheusApiClientException) as exc:
            raise ProviderError(f"Prometheus at {self.url} failed on {query!r}: {exc}") from None
        if not result:
            return NO_VALUES
        if len(result) > 1:
            raise ProviderError(f"query returned {len(result)} series, expected one: {query!r}")
        try:
            value = float(result[0]["value"][1])
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise ProviderError(f"unexpected Prometheus answer {result!r}: {exc}") from None
        return NO_VALUES if math.isnan(value) else value


# --- query templates (separate from the state machine) ---

_VARIABLE = re.compile(r"\{\{\s*(\w+)\s*\}\}")
SELECTOR = series_selector("{{namespace}}", "{{name}}", "{{track}}")

REQUESTS = (
    f"sum(increase(nv_inference_request_success{{{SELECTOR}}}[{{{{interval}}}}]))"
    f" + sum(increase(nv_inference_request_failure{{{SELECTOR}}}[{{{{interval}}}}]))"
)
ERROR_RATE = f"sum(increase(nv_inference_request_failure{{{SELECTOR}}}[{{{{interval}}}}])) / ({REQUESTS})"
LATENCY_P99_MS = (
    "1000 * histogram_quantile(0.99, sum by (le) "
    f"(rate(modelserve_inference_request_duration_seconds_bucket{{{SELECTOR}}}[{{{{interval}}}}])))"
)


@dataclass(frozen=True)
class QueryContext:
    name: str
    namespace: str
    track: str
    revision: str
    interval: str

    def render(self, template: str) -> str:
        """Fill {{name}}, {{namespace}}, {{track}}, {{revision}}, {{interval}}; others are errors."""
        values = {
            "name": self.name,
            "namespace": self.namespace,
            "track": self.track,
            "revision": self.revision,
            "interval": self.interval,
        }

        def fill(match: re.Match[str]) -> str:
            key = match.group(1)
            if key not in values:
                raise ProviderError(f"unknown variable {{{{{key}}}}} in query template; use one of {sorted(values)}")
            return values[key]

        return _VARIABLE.sub(fill, template)
