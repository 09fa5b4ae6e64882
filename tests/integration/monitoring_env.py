"""Helpers of the monitoring tests: a real Prometheus from a given config, its HTTP API, and the
queries the project ships (canary analysis templates, prometheus-adapter rules, dashboard panels)
filled in the way their consumers fill them."""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from modeldeploy import prometheus
from modelserve.launcher import free_port
from tests.integration.prometheus_env import PROMETHEUS

ROOT = Path(__file__).parents[2]
DASHBOARD = ROOT / "charts" / "modeldeploy" / "files" / "dashboard.json"
ADAPTER_VALUES = ROOT / "examples" / "monitoring" / "prometheus-adapter-values.yaml"
SCRAPE_CONFIG = ROOT / "examples" / "monitoring" / "prometheus-scrape-config.yaml"
# A 1 s scrape interval in the tests: Grafana's $__rate_interval would be at least 4 of them.
GRAFANA_VARIABLES = {"$__rate_interval": "10s", "$__range": "5m", "$__interval": "2s"}


class QueryError(AssertionError):
    pass


@dataclass
class Prometheus:
    url: str

    def _get(self, path: str, params: list[tuple[str, str]]) -> Any:
        query = urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(f"{self.url}{path}?{query}", timeout=10) as response:
                body = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            raise QueryError(f"{path} {params}: HTTP {exc.code}: {exc.read().decode()[:500]}") from None
        if body.get("status") != "success":
            raise QueryError(f"{path} {params}: {body}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query's vector (a scalar comes back as one unlabelled sample)."""
        data = self._get("/api/v1/query", [("query", expr)])
        if data["resultType"] == "scalar":
            return [{"metric": {}, "value": data["result"]}]
        return data["result"]

    def series(self, match: str) -> list[dict[str, str]]:
        return self._get("/api/v1/series", [("match[]", match)])

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False


def wait_until(check: Callable[[], Any], timeout: float, what: str, every: float = 0.25) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except (QueryError, KeyError, IndexError) as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what}: {last!r}")


@contextlib.contextmanager
def running_prometheus(workdir: Path, scrape_configs: list[dict[str, Any]]) -> Iterator[Prometheus]:
    """A real Prometheus on loopback with these scrape jobs (1 s scrapes unless a job says otherwise)."""
    assert PROMETHEUS is not None, "prometheus is installed by `make install`"
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "prometheus.yml"
    config.write_text(
        yaml.safe_dump({"global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                        "scrape_configs": scrape_configs})
    )  # fmt: skip
    port = free_port()
    log = (workdir / "prometheus.log").open("wb")
    process = subprocess.Popen(
        [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={workdir / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{port}", "--log.level=info"],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    prom = Prometheus(f"http://127.0.0.1:{port}")
    try:
        wait_until(lambda: prom.ready() or process.poll() is not None, 30, "prometheus to start")
        assert process.poll() is None, (workdir / "prometheus.log").read_text()[-2000:]
        yield prom
    finally:
        process.terminate()
        process.wait(10)
        log.close()


# --- the queries the project ships ---


def analysis_queries(namespace: str, name: str, track: str, interval: str = "10s") -> dict[str, str]:
    context = prometheus.QueryContext(name=name, namespace=namespace, track=track, revision="r", interval=interval)
    return {
        "requests": context.render(prometheus.REQUESTS),
        "error-rate": context.render(prometheus.ERROR_RATE),
        "latency-p99-ms": context.render(prometheus.LATENCY_P99_MS),
    }


def adapter_rules() -> list[dict[str, Any]]:
    return yaml.safe_load(ADAPTER_VALUES.read_text())["rules"]["custom"]


def fill_adapter_query(template: str, series: str, label_matchers: str, group_by: str) -> str:
    """As prometheus-adapter fills a metricsQuery (Go text/template with << >> delimiters)."""
    filled = template.replace("<<.Series>>", series).replace("<<.LabelMatchers>>", label_matchers)
    filled = filled.replace("<<.GroupBy>>", group_by)
    assert "<<" not in filled, f"unfilled template field in {template!r}"
    return filled


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title / refId, expr) of every panel target."""
    return [
        (f"{panel['title']} / {target['refId']}", target["expr"])
        for panel in dashboard()["panels"]
        for target in panel.get("targets", [])
    ]


_LABEL_VALUES = re.compile(r"^label_values\((?P<selector>.+),\s*(?P<label>\w+)\)$")


def dashboard_variable_queries() -> list[tuple[str, str]]:
    """The query variables' label_values(selector, label), as the PromQL Grafana runs for them."""
    out = []
    for variable in dashboard()["templating"]["list"]:
        if variable["type"] != "query":
            continue
        found = _LABEL_VALUES.match(variable["query"]["query"])
        assert found, f"unsupported variable query {variable['query']!r}"
        out.append((variable["name"], f"count by ({found['label']}) ({found['selector']})"))
    return out


def fill_dashboard(expr: str, variables: dict[str, str]) -> str:
    for key, value in sorted({**GRAFANA_VARIABLES, **{f"${k}": v for k, v in variables.items()}}.items(),
                             key=lambda kv: -len(kv[0])):  # fmt: skip
        expr = expr.replace(key, value)
    assert "$" not in expr, f"unsubstituted variable in {expr!r}"
    return expr


# --- what the queries use ---

_SELECTOR = re.compile(r"(?P<metric>[A-Za-z_:][A-Za-z0-9_:]*)(?:\{(?P<matchers>[^}]*)\}|(?=\[))")
_MATCHER = re.compile(r"(?P<label>[A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)")
_BY = re.compile(r"\bby\s*\((?P<labels>[^)]*)\)")


def used_names(expr: str) -> dict[str, set[str]]:
    """metric name -> the labels the query matches or groups by (a metric is a name before {…} or […])."""
    used: dict[str, set[str]] = {}
    grouped = {label.strip() for by in _BY.finditer(expr) for label in by["labels"].split(",") if label.strip()}
    for selector in _SELECTOR.finditer(expr):
        labels = {m["label"] for m in _MATCHER.finditer(selector["matchers"] or "")}
        used.setdefault(selector["metric"], set()).update(labels | grouped)
    return used
