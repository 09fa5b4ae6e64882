"""`spec.autoscaling.engine: KEDA`: a ScaledObject on the adapter's series instead of an HPA."""

from __future__ import annotations

from typing import Any

from modeldeploy import keda, render
from tests.unit.test_render import by_kind, md_from_spec

MODEL = {"name": "m", "storageUri": "s3://b/m"}


def scaled(**autoscaling: Any) -> dict[str, Any]:
    md = md_from_spec({"model": MODEL, "autoscaling": {"engine": "KEDA", "maxReplicas": 5, **autoscaling}})
    objects = by_kind(render.render(md, render.RenderSettings(prometheus_url="http://prom.monitoring:9090")))
    assert "HorizontalPodAutoscaler" not in objects, "KEDA makes its own HPA: ours would fight it"
    return objects


def test_scale_to_zero_on_inference_rate() -> None:
    objects = scaled(minReplicas=0, targetInferenceRate=25.5, scaleDownStabilizationSeconds=120)
    spec = objects["ScaledObject"]["spec"]
    assert spec["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "m1"}
    assert (spec["minReplicaCount"], spec["maxReplicaCount"], spec["cooldownPeriod"]) == (0, 5, 120)
    assert spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleDown"] == {
        "stabilizationWindowSeconds": 120
    }
    (trigger,) = spec["triggers"]
    assert trigger["type"] == "prometheus" and trigger["metricType"] == "AverageValue"
    assert trigger["metadata"] == {
        "serverAddress": "http://prom.monitoring:9090",
        "query": 'sum(rate(nv_inference_count{namespace="ns",modeldeploy_deployment="m1",'
        'modeldeploy_track="stable"}[1m]))',
        "threshold": "25.5",
    }
    assert "replicas" not in objects["Deployment"]["spec"], "the scaler owns the replica count"
    assert objects["ScaledObject"]["metadata"]["ownerReferences"][0]["kind"] == "ModelDeployment"


def test_every_target_becomes_a_trigger() -> None:
    objects = scaled(targetQueueTimeMs=40, targetCPUUtilization=70, targetMemoryUtilization=80)
    triggers = objects["ScaledObject"]["spec"]["triggers"]
    assert [(t["type"], t["metricType"]) for t in triggers] == [
        ("prometheus", "Value"),
        ("cpu", "Utilization"),
        ("memory", "Utilization"),
    ]
    assert triggers[0]["metadata"]["query"].startswith("sum(rate(nv_inference_queue_duration_us{")
    assert triggers[1]["metadata"] == {"value": "70"}


def test_hpa_stays_the_default() -> None:
    md = md_from_spec({"model": MODEL, "autoscaling": {"maxReplicas": 5, "targetInferenceRate": 3}})
    objects = by_kind(render.render(md))
    assert "ScaledObject" not in objects and "HorizontalPodAutoscaler" in objects


def test_queries_select_only_the_stable_track() -> None:
    md = md_from_spec({"model": MODEL})
    assert keda.stable_selector(md).endswith('modeldeploy_track="stable"')
