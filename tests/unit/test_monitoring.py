"""The opt-in PodMonitor and the plain-Prometheus scrape job carry the same relabel rules."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from modeldeploy import api, monitoring, names, prometheus, reconcile, render

ROOT = Path(__file__).parents[2]
SCRAPE_CONFIG = ROOT / "examples" / "monitoring" / "prometheus-scrape-config.yaml"


def md(**spec: Any) -> api.ModelDeployment:
    return api.parse_model_deployment(
        {"apiVersion": api.API_VERSION, "kind": api.KIND, "metadata": {"name": "fraud", "namespace": "ml"},
         "spec": {"model": {"name": "fraud", "storageUri": "s3://b/fraud"}, "replicas": 2, **spec}}
    )  # fmt: skip


def pod_monitors(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == "PodMonitor"]


@pytest.mark.parametrize("monitoring_spec", [None, {}, {"podMonitor": False}])
def test_no_pod_monitor_unless_asked(monitoring_spec: dict[str, Any] | None) -> None:
    spec = {} if monitoring_spec is None else {"monitoring": monitoring_spec}
    assert pod_monitors(render.render(md(**spec))) == []


def test_pod_monitor_selects_both_tracks_and_relabels() -> None:
    (pm,) = pod_monitors(render.render(md(monitoring={"podMonitor": True, "interval": "5s",
                                                      "labels": {"release": "kube-prometheus-stack"}})))  # fmt: skip
    assert pm["apiVersion"] == "monitoring.coreos.com/v1"
    assert pm["metadata"]["name"] == "fraud" and pm["metadata"]["namespace"] == "ml"
    assert pm["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert pm["metadata"]["labels"][names.LABEL_DEPLOYMENT] == "fraud"
    assert pm["spec"]["selector"] == {"matchLabels": {names.LABEL_DEPLOYMENT: "fraud"}}, "no track: both tracks"
    assert pm["spec"]["namespaceSelector"] == {"matchNames": ["ml"]}
    (endpoint,) = pm["spec"]["podMetricsEndpoints"]
    assert endpoint["port"] == "metrics" and endpoint["path"] == "/metrics" and endpoint["interval"] == "5s"
    deployment = next(o for o in render.render(md()) if o["kind"] == "Deployment")
    ports = deployment["spec"]["template"]["spec"]["containers"][0]["ports"]
    assert {"name": "metrics", "containerPort": names.METRICS_PORT, "protocol": "TCP"} in ports
    targets = {r["targetLabel"]: r["sourceLabels"] for r in endpoint["relabelings"]}
    assert targets["modeldeploy_deployment"] == ["__meta_kubernetes_pod_label_modeldeploy_io_deployment"]
    assert targets["modeldeploy_track"] == ["__meta_kubernetes_pod_label_modeldeploy_io_track"]


def test_labels_the_analysis_selects_are_produced() -> None:
    produced = {target for _, target in monitoring.LABEL_SOURCES}
    for label in ("namespace", "modeldeploy_deployment", "modeldeploy_track"):
        assert f'{label}="' in prometheus.SELECTOR and label in produced
    pod_labels = next(o for o in render.render(md()) if o["kind"] == "Deployment")["spec"]["template"]["metadata"]
    for source, _ in monitoring.LABEL_SOURCES:
        if source.startswith("__meta_kubernetes_pod_label_"):
            key = source.removeprefix("__meta_kubernetes_pod_label_")
            assert any(k.replace(".", "_").replace("/", "_") == key for k in pod_labels["labels"]), key


def test_scrape_config_file_carries_the_same_rules() -> None:
    (job,) = yaml.safe_load(SCRAPE_CONFIG.read_text())["scrape_configs"]
    assert job["kubernetes_sd_configs"] == [{"role": "pod"}]
    rules = job["relabel_configs"]
    assert rules[-len(monitoring.RELABEL_CONFIGS) :] == monitoring.RELABEL_CONFIGS
    camel = [{"sourceLabels": r["source_labels"], "targetLabel": r["target_label"], "action": r["action"]}
             for r in monitoring.RELABEL_CONFIGS]  # fmt: skip
    assert camel == monitoring.pod_monitor_relabelings()


def test_monitoring_is_no_new_revision_and_is_pruned_when_dropped() -> None:
    assert names.revision_of(md().spec, render.RenderSettings()) == names.revision_of(
        md(monitoring={"podMonitor": True}).spec, render.RenderSettings()
    )
    refs = reconcile.managed_refs(md())
    assert reconcile.ObjectRef("PodMonitor", "ml", "fraud") in refs


def test_bad_interval_is_refused() -> None:
    with pytest.raises(api.SpecError):
        md(monitoring={"podMonitor": True, "interval": "often"})
