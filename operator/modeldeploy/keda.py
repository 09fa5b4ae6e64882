"""KEDA autoscaling: a ScaledObject (keda.sh/v1alpha1) in place of the HorizontalPodAutoscaler.

`spec.autoscaling.engine: KEDA` asks for it. KEDA reads the same series the prometheus-adapter
rules serve to the HPA (examples/monitoring/prometheus-adapter-values.yaml), straight from
Prometheus, so no adapter is needed, and it can take a model down to zero pods
(`minReplicas: 0`) and back up when its Prometheus trigger shows traffic again.
"""

from __future__ import annotations

from typing import Any

from modeldeploy import api, names

# Per-pod averages come from KEDA dividing a total by the replica count (metricType
# AverageValue); the queue time is already an average over requests (metricType Value).
INFERENCE_RATE_QUERY = "sum(rate(nv_inference_count{{{selector}}}[1m]))"
QUEUE_TIME_MS_QUERY = (
    "sum(rate(nv_inference_queue_duration_us{{{selector}}}[1m])) / 1000"
    " / clamp_min(sum(rate(nv_inference_request_success{{{selector}}}[1m])), 1e-9)"
)


def stable_selector(md: api.ModelDeployment) -> str:
    """The stable track's series: the ScaledObject scales the stable Deployment only."""
    return names.series_selector(md.metadata.namespace, md.metadata.name, "stable")


def _number(value: float) -> str:
    return f"{value:g}"


def triggers(md: api.ModelDeployment, autoscaling: api.AutoscalingSpec, prometheus_url: str) -> list[dict[str, Any]]:
    selector = stable_selector(md)
    found: list[dict[str, Any]] = []
    for query, target, metric_type in (
        (INFERENCE_RATE_QUERY, autoscaling.target_inference_rate, "AverageValue"),
        (QUEUE_TIME_MS_QUERY, autoscaling.target_queue_time_ms, "Value"),
    ):
        if target is not None:
            found.append(
                {
                    "type": "prometheus",
                    "metricType": metric_type,
                    "metadata": {
                        "serverAddress": prometheus_url,
                        "query": query.format(selector=selector),
                        "threshold": _number(target),
                    },
                }
            )
    for resource, target in (
        ("cpu", autoscaling.target_cpu_utilization),
        ("memory", autoscaling.target_memory_utilization),
    ):
        if target is not None:
            found.append({"type": resource, "metricType": "Utilization", "metadata": {"value": str(target)}})
    return found


def build_scaled_object_context(
    md: api.ModelDeployment, autoscaling: api.AutoscalingSpec, labels: dict[str, str], target: str, prometheus_url: str
) -> dict[str, Any]:
    return {
        "name": md.metadata.name,
        "namespace": md.metadata.namespace,
        "labels": labels,
        "target": target,
        "min_replicas": autoscaling.min_replicas,
        "max_replicas": autoscaling.max_replicas,
        "cooldown_seconds": autoscaling.scale_down_stabilization_seconds,
        "scale_down_stabilization_seconds": autoscaling.scale_down_stabilization_seconds,
        "triggers": triggers(md, autoscaling, prometheus_url),
    }
