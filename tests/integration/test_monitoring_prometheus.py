"""Monitoring against a real Prometheus: two real modelserve processes under load (a stable and a
canary pod of one ModelDeployment, labelled as the PodMonitor / scrape job label them; the
relabelling itself runs against a real API server in tests/e2e/test_monitoring_e2e.py) and the
real operator's metrics endpoint, with the operator on kmock running a canary through it.

- prometheus-adapter: each rule's metricsQuery, filled as the adapter fills it, gives one value
  per pod, under the names the HPA asks for;
- the Grafana dashboard: every panel's query and every variable returns data, none errors;
- the contract: every metric and label the analysis queries, the adapter rules and the dashboard
  use is exported by modelserve or the operator and present in Prometheus.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kmock
import numpy as np
import pytest
import tritonclient.http as httpclient
from prometheus_client import start_http_server

from modeldeploy import api, keda, render
from modeldeploy.opmetrics import OperatorMetrics
from modelserve import examples
from modelserve.launcher import ServingProcess, free_port
from tests.integration.monitoring_env import (
    Prometheus,
    adapter_rules,
    analysis_queries,
    dashboard_queries,
    dashboard_variable_queries,
    fill_adapter_query,
    fill_dashboard,
    running_prometheus,
    used_names,
    wait_until,
)
from tests.integration.operator_env import eventually
from tests.integration.prometheus_env import PROMETHEUS
from tests.integration.test_canary_prometheus import phase, rollout_to_v2

pytestmark = [
    pytest.mark.skipif(PROMETHEUS is None, reason="prometheus is installed by `make install`"),
    pytest.mark.timeout(360),  # bounds a run on a loaded 2-core machine; the waits below are what they need
]
NS, NAME = "ml", "watched"
PODS = {"stable": f"{NAME}-6d8f9c7b5-x2k4q", "canary": f"{NAME}-canary-7f5d6c8b9-p9zrt"}
OPERATOR_METRICS = {"modeldeploy_canary_analyses_total", "modeldeploy_canary_promotions_total",
                    "modeldeploy_canary_rollbacks_total", "modeldeploy_canary_weight"}  # fmt: skip
OPERATOR_COUNTERS = sorted(name for name in OPERATOR_METRICS if name.endswith("_total"))  # the dashboard's increase()


@pytest.fixture(scope="module")
def _inference_inputs() -> list[httpclient.InferInput]:
    inputs = []
    for name in ("INPUT0", "INPUT1"):
        tensor = httpclient.InferInput(name, [1, 16], "FP32")
        tensor.set_data_from_numpy(np.ones((1, 16), np.float32))
        inputs.append(tensor)
    return inputs


def _load(server: ServingProcess, inputs: list[httpclient.InferInput], stop: threading.Event) -> None:
    client = httpclient.InferenceServerClient(server.http_url, concurrency=1)
    while not stop.is_set():
        with contextlib.suppress(Exception):
            client.infer("simple", inputs)
        time.sleep(0.01)


@pytest.fixture(scope="module")
def serving(
    tmp_path_factory: pytest.TempPathFactory, _inference_inputs: list[httpclient.InferInput]
) -> Iterator[tuple[Prometheus, dict[str, ServingProcess], int]]:
    """(Prometheus, track -> modelserve under load, the port the operator's metrics will be on)."""
    workdir = tmp_path_factory.mktemp("monitoring")
    repo = examples.write_repository(workdir / "models", ["simple"])
    servers = {track: ServingProcess(repo, args=["--max-batch-size=8"]).start() for track in PODS}
    operator_port = free_port()
    static = [
        {"targets": [f"127.0.0.1:{server.metrics_port}"],
         "labels": {"namespace": NS, "pod": PODS[track], "modeldeploy_deployment": NAME,
                    "modeldeploy_track": track, "modeldeploy_revision": f"rev-{track}"}}
        for track, server in servers.items()
    ]  # fmt: skip
    jobs = [
        {"job_name": "modelserve", "static_configs": static},
        {"job_name": "modeldeploy-operator", "static_configs": [{"targets": [f"127.0.0.1:{operator_port}"]}]},
    ]
    stop = threading.Event()
    loaders = [threading.Thread(target=_load, args=(s, _inference_inputs, stop), daemon=True) for s in servers.values()]
    try:
        with running_prometheus(workdir / "prometheus", jobs) as prom:
            for loader in loaders:
                loader.start()
            wait_until(lambda: len(prom.query('up{job="modelserve"} == 1')) == 2, 60, "both modelserve targets scraped")
            # Enough samples under load for every 10 s window the queries use.
            wait_until(
                lambda: len(prom.query("rate(nv_inference_count[10s]) > 5")) == 2, 60, "both pods' load in Prometheus"
            )
            wait_until(  # a few more samples in each 10 s window the queries use
                lambda: len(prom.query("count_over_time(nv_inference_count[10s]) >= 5")) == 2, 60, "5 samples per pod"
            )
            yield prom, servers, operator_port
    finally:
        stop.set()
        for loader in loaders:
            loader.join(5)
        for server in servers.values():
            server.stop()


def values_by(result: list[dict[str, Any]], label: str) -> dict[str, float]:
    return {sample["metric"].get(label, ""): float(sample["value"][1]) for sample in result}


def test_adapter_rules_serve_the_hpa_metrics_per_pod(serving: tuple[Prometheus, dict[str, Any], int]) -> None:
    prom, _, _ = serving
    rules = {rule["name"]["as"]: rule for rule in adapter_rules()}
    autoscaling = {"maxReplicas": 4, "targetInferenceRate": 50, "targetQueueTimeMs": 20}
    md = api.parse_model_deployment({"apiVersion": api.API_VERSION, "kind": api.KIND,
                                     "metadata": {"name": NAME, "namespace": NS},
                                     "spec": {"model": {"name": "simple", "storageUri": "s3://b/s"},
                                              "autoscaling": autoscaling}})  # fmt: skip
    assert md.spec.autoscaling is not None
    hpa = render.build_hpa_context(md, md.spec.autoscaling)
    asked = {m["pods"]["metric"]["name"] for m in hpa["metrics"] if m["type"] == "Pods"}
    assert asked == set(rules), f"the HPA asks for {asked}, the adapter serves {set(rules)}"
    for name, rule in rules.items():
        found = prom.series(rule["seriesQuery"])
        assert found, f"{name}: seriesQuery {rule['seriesQuery']!r} finds no series"
        series_names = {s["__name__"] for s in found}
        assert len(series_names) == 1 and rule["name"]["matches"].strip("^$") in series_names
        overrides = rule["resources"]["overrides"]
        assert overrides == {"namespace": {"resource": "namespace"}, "pod": {"resource": "pod"}}
        # What the adapter sends for `kubectl get --raw .../namespaces/ml/pods/*/<name>`.
        pods = "|".join(sorted(PODS.values()))
        query = fill_adapter_query(rule["metricsQuery"], series_names.pop(), f'namespace="{NS}",pod=~"{pods}"', "pod")
        per_pod = values_by(prom.query(query), "pod")
        assert set(per_pod) == set(PODS.values()), f"{name}: {query} gave {per_pod}"
        assert all(math.isfinite(v) and v >= 0 for v in per_pod.values()), f"{name}: {per_pod}"
        if name == "modeldeploy_inference_rate":
            assert all(v > 5 for v in per_pod.values()), f"loaded pods serve more than 5/s: {per_pod}"
        # One pod alone, as for a single-pod lookup.
        one = fill_adapter_query(rule["metricsQuery"], rule["name"]["matches"].strip("^$"),
                                 f'namespace="{NS}",pod="{PODS["canary"]}"', "pod")  # fmt: skip
        assert set(values_by(prom.query(one), "pod")) == {PODS["canary"]}


def test_keda_triggers_read_the_stable_tracks_series(serving: tuple[Prometheus, dict[str, Any], int]) -> None:
    """What KEDA's prometheus scaler sends: one number for the stable track, from the same series."""
    prom, _, _ = serving
    autoscaling = {
        "engine": "KEDA",
        "minReplicas": 0,
        "maxReplicas": 4,
        "targetInferenceRate": 50,
        "targetQueueTimeMs": 20,
    }
    md = api.parse_model_deployment({"apiVersion": api.API_VERSION, "kind": api.KIND,
                                     "metadata": {"name": NAME, "namespace": NS},
                                     "spec": {"model": {"name": "simple", "storageUri": "s3://b/s"},
                                              "autoscaling": autoscaling}})  # fmt: skip
    assert md.spec.autoscaling is not None
    rate, queue = (t["metadata"]["query"] for t in keda.triggers(md, md.spec.autoscaling, prom.url))
    (total,) = prom.query(rate)
    stable_only = prom.query(f'sum(rate(nv_inference_count{{namespace="{NS}",pod="{PODS["stable"]}"}}[1m]))')
    assert float(total["value"][1]) == pytest.approx(float(stable_only[0]["value"][1]), rel=0.05)
    assert float(total["value"][1]) > 5, "the loaded stable pod serves more than 5/s"
    (queue_ms,) = prom.query(queue)
    assert math.isfinite(float(queue_ms["value"][1])) and float(queue_ms["value"][1]) >= 0


def test_queue_time_rule_is_milliseconds_per_request(serving: tuple[Prometheus, dict[str, Any], int]) -> None:
    prom, _, _ = serving
    rule = next(r for r in adapter_rules() if r["name"]["as"] == "modeldeploy_queue_time_ms")
    query = fill_adapter_query(rule["metricsQuery"], "nv_inference_queue_duration_us", f'namespace="{NS}"', "pod")
    adapter = values_by(prom.query(query), "pod")
    manual = values_by(
        prom.query(f'sum by (pod) (rate(nv_inference_queue_duration_us{{namespace="{NS}"}}[1m])) / 1000'
                   f' / sum by (pod) (rate(nv_inference_request_success{{namespace="{NS}"}}[1m]))'), "pod"
    )  # fmt: skip
    for pod, value in adapter.items():
        assert value == pytest.approx(manual[pod], rel=0.05, abs=0.01)


async def test_dashboard_panels_and_contract(
    kmock: kmock.KubernetesEmulator, serving: tuple[Prometheus, dict[str, ServingProcess], int]
) -> None:
    """The operator on kmock runs a canary judged by this Prometheus; its metrics endpoint is scraped;
    then every dashboard query returns data and every name used is exported."""
    prom, servers, operator_port = serving
    async with rollout_to_v2(kmock, prom.url, NAME) as memo:
        metrics: OperatorMetrics = memo.metrics
        server, thread = start_http_server(operator_port, addr="127.0.0.1", registry=metrics.registry)
        try:
            await eventually(lambda: phase(kmock, NAME) == "Succeeded", what="the canary promoted", timeout=120)
            # increase() over the dashboard's range needs two samples of a series; the endpoint starts after
            # the analyses ran, so wait for a second scrape of every operator counter, with the promotion in it.
            for counter in OPERATOR_COUNTERS:
                wait_until(
                    lambda c=counter: prom.query(f"min(count_over_time({c}[5m])) >= 2"), 60, f"{counter} scraped twice"
                )
            wait_until(lambda: prom.query("modeldeploy_canary_promotions_total > 0"), 60, "promotion scraped")

            variables = {"namespace": NS, "deployment": NAME}
            failures = []
            for name, expr in dashboard_variable_queries():
                if not prom.query(fill_dashboard(expr, variables)):
                    failures.append(f"variable {name}: {expr} returned nothing")
            for title, expr in dashboard_queries():
                filled = fill_dashboard(expr, variables)
                try:
                    if not prom.query(filled):
                        failures.append(f"{title}: {filled} returned nothing")
                except AssertionError as exc:
                    failures.append(f"{title}: {exc}")
            assert not failures, "\n".join(failures)

            for track in PODS:
                for check, query in analysis_queries(NS, NAME, track).items():
                    (sample,) = prom.query(query)
                    assert math.isfinite(float(sample["value"][1])), f"{track} {check}: {sample}"

            contract(prom, servers["stable"].metrics_text(), metrics)
        finally:
            server.shutdown()
            thread.join(5)


def contract(prom: Prometheus, modelserve_text: str, metrics: OperatorMetrics) -> None:
    """Every metric the shipped queries use is exported, with every label they select or group by."""
    from prometheus_client import generate_latest

    operator_text = generate_latest(metrics.registry).decode()
    queries = [expr for _, expr in dashboard_queries()] + [expr for _, expr in dashboard_variable_queries()]
    queries += [q for track in PODS for q in analysis_queries(NS, NAME, track).values()]
    queries += [fill_adapter_query(r["metricsQuery"], r["name"]["matches"].strip("^$"), 'namespace="ml"', "pod")
                for r in adapter_rules()] + [r["seriesQuery"] for r in adapter_rules()]  # fmt: skip
    used: dict[str, set[str]] = {}
    for query in queries:
        for metric, labels in used_names(query).items():
            used.setdefault(metric, set()).update(labels)
    assert {"nv_inference_count", "modelserve_inference_request_duration_seconds_bucket"} <= set(used)
    assert set(used) >= OPERATOR_METRICS, f"dashboard misses operator metrics: {OPERATOR_METRICS - set(used)}"
    problems = []
    for metric, labels in sorted(used.items()):
        if metric == "up":
            pass  # Prometheus' own, one per target
        elif metric.startswith("modeldeploy_"):
            if f"\n{metric}{{" not in f"\n{operator_text}" and f"\n{metric} " not in f"\n{operator_text}":
                problems.append(f"{metric}: not exported by the operator")
        elif f"\n{metric}{{" not in f"\n{modelserve_text}":
            problems.append(f"{metric}: not exported by modelserve")
        matchers = ",".join(f'{label}!=""' for label in sorted(labels))
        if not prom.query(f"{metric}{{{matchers}}}"):
            problems.append(f"{metric}: no series in Prometheus with every label of {sorted(labels)}")
    assert not problems, "\n".join(problems)


def test_chart_ships_the_dashboard_only_when_enabled() -> None:
    import json
    import subprocess
    import sys

    import yaml

    from tests.integration.monitoring_env import DASHBOARD, ROOT

    helm = str(Path(sys.executable).parent / "helm")

    def config_maps(*values: str) -> list[dict[str, Any]]:
        out = subprocess.run([helm, "template", "md", str(ROOT / "charts" / "modeldeploy"), *values],
                             capture_output=True, text=True, check=True).stdout  # fmt: skip
        return [d for d in yaml.safe_load_all(out) if d and d["kind"] == "ConfigMap"]

    assert config_maps() == []
    (cm,) = config_maps("--set", "dashboard.enabled=true", "--set", "dashboard.namespace=grafana")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1" and cm["metadata"]["namespace"] == "grafana"
    assert json.loads(cm["data"]["modeldeploy-serving.json"]) == json.loads(DASHBOARD.read_text())
