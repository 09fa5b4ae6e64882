"""How Prometheus must label the serving pods' series, and the PodMonitor that does it.

The canary analysis (modeldeploy.prometheus), the prometheus-adapter rules and the dashboard
(examples/monitoring/, charts/modeldeploy/files/) select modelserve's series by
`namespace`, `pod`, `modeldeploy_deployment`, `modeldeploy_track` (and `modeldeploy_revision`
for custom checks). `RELABEL_CONFIGS` turns the pod metadata Kubernetes service discovery
gives into exactly those labels; the plain-Prometheus scrape job in
examples/monitoring/prometheus-scrape-config.yaml carries the same rules (a unit test keeps
them equal), and the opt-in PodMonitor (`spec.monitoring.podMonitor`) carries them in the
Prometheus Operator's spelling.
"""

from __future__ import annotations

import re
from typing import Any

from modeldeploy import api, names

METRICS_PORT_NAME = "metrics"
POD_MONITOR_API_VERSION = "monitoring.coreos.com/v1"


# (pod metadata from kubernetes_sd_configs role pod, the label the queries select)
def _pod_label(label: str) -> str:
    """The meta label Kubernetes service discovery gives a pod label (unsupported characters become _)."""
    return "__meta_kubernetes_pod_label_" + re.sub(r"[^a-zA-Z0-9_]", "_", label)


LABEL_SOURCES: tuple[tuple[str, str], ...] = (
    ("__meta_kubernetes_namespace", "namespace"),
    ("__meta_kubernetes_pod_name", "pod"),
    (_pod_label(names.LABEL_DEPLOYMENT), names.PROM_LABEL_DEPLOYMENT),
    (_pod_label(names.LABEL_TRACK), names.PROM_LABEL_TRACK),
    (_pod_label(names.LABEL_REVISION), names.PROM_LABEL_REVISION),
)

# Prometheus' relabel_configs spelling (scrape jobs).
RELABEL_CONFIGS: list[dict[str, Any]] = [
    {"source_labels": [source], "target_label": target, "action": "replace"} for source, target in LABEL_SOURCES
]


def pod_monitor_relabelings() -> list[dict[str, Any]]:
    """`RELABEL_CONFIGS` in the Prometheus Operator's spelling (RelabelConfig of monitoring.coreos.com/v1)."""
    return [{"sourceLabels": [source], "targetLabel": target, "action": "replace"} for source, target in LABEL_SOURCES]


def wants_pod_monitor(spec: api.ModelDeploymentSpec) -> bool:
    return spec.monitoring is not None and spec.monitoring.pod_monitor


def build_pod_monitor_context(
    md: api.ModelDeployment, labels: dict[str, str], selector: dict[str, str]
) -> dict[str, Any]:
    """One PodMonitor for both tracks of a ModelDeployment, in its namespace."""
    monitoring = md.spec.monitoring or api.MonitoringSpec()
    return {
        "api_version": POD_MONITOR_API_VERSION,
        "name": md.metadata.name,
        "namespace": md.metadata.namespace,
        "labels": {**monitoring.labels, **labels},
        "selector": selector,
        "endpoint": {
            "port": METRICS_PORT_NAME,
            "path": "/metrics",
            "interval": monitoring.interval,
            "relabelings": pod_monitor_relabelings(),
        },
    }
