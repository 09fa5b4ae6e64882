"""The operator counts every Kubernetes API request its reconciles send, retries included, by
method and answer (the figure the 1000-object benchmark reads for the idle request rate)."""

from __future__ import annotations

from typing import Any

from prometheus_client import generate_latest

from modeldeploy.kube import KubeClient, ObjectRef, RetryPolicy
from modeldeploy.opmetrics import OperatorMetrics


class Answer:
    def __init__(self, status: int, data: bytes) -> None:
        self.status, self.data, self.reason = status, data, "fake"

    def read(self) -> bytes:
        return self.data

    def getheader(self, name: str, default: Any = None) -> Any:
        return default


class ScriptedApi:
    """Stands in for kubernetes.client.ApiClient: answers each call with the next scripted status."""

    def __init__(self, *statuses: int) -> None:
        self.statuses = list(statuses)

    def param_serialize(self, **request: Any) -> tuple[str, str]:
        return (request["method"], request["resource_path"])

    def call_api(self, method: str, path: str, _request_timeout: Any = None) -> Answer:
        status = self.statuses.pop(0)
        return Answer(status, b'{"kind": "Deployment", "metadata": {"name": "fraud"}}' if status == 200 else b"{}")


def test_every_attempt_is_counted_by_method_and_status() -> None:
    metrics = OperatorMetrics()
    kube = KubeClient(ScriptedApi(503, 200, 404), retry=RetryPolicy(base_seconds=0.001))  # type: ignore[arg-type]
    kube.on_request = metrics.kube_request
    assert kube.get(ObjectRef("Deployment", "ml", "fraud")) is not None  # a 503, retried, then 200
    assert kube.get(ObjectRef("Deployment", "ml", "gone")) is None
    text = generate_latest(metrics.registry).decode()
    assert 'modeldeploy_kube_requests_total{code="503",method="GET"} 1.0' in text
    assert 'modeldeploy_kube_requests_total{code="200",method="GET"} 1.0' in text
    assert 'modeldeploy_kube_requests_total{code="404",method="GET"} 1.0' in text
