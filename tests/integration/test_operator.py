"""The real kopf handlers against kmock's Kubernetes emulator over HTTP."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import kmock
import pytest

from modeldeploy.names import LABEL_DEPLOYMENT, LABEL_REVISION, LABEL_TRACK, MANAGED
from tests.integration.operator_env import (
    MD_RESOURCE,
    create,
    eventually,
    model_deployment,
    obj,
    patch,
    running_operator,
)

pytestmark = pytest.mark.timeout(60)
DEPLOY, SVC, HPA, PDB = (
    "apps/v1/deployments",
    "v1/services",
    "autoscaling/v2/horizontalpodautoscalers",
    "policy/v1/poddisruptionbudgets",
)


def md_status(emulator: kmock.KubernetesEmulator, name: str, ns: str = "ml") -> dict[str, Any]:
    return (obj(emulator, MD_RESOURCE, ns, name) or {}).get("status", {})


def cond(status: dict[str, Any], type_: str) -> dict[str, Any]:
    return next(c for c in status.get("conditions", []) if c["type"] == type_)


def events_for(emulator: kmock.KubernetesEmulator, name: str) -> list[dict[str, Any]]:
    found = []
    for request in emulator[kmock.method("post")]:
        data = request.data or {}
        if (
            request.url.path.endswith("/events")
            and isinstance(data, dict)
            and data.get("involvedObject", {}).get("name") == name
        ):
            found.append(data)
    return found


async def test_create_renders_children_with_owner_references_and_status(
    kmock: kmock.KubernetesEmulator, caplog
) -> None:
    caplog.set_level(logging.INFO)
    async with running_operator(kmock):
        body = model_deployment("iris", autoscaling={"minReplicas": 2, "maxReplicas": 5, "targetCPUUtilization": 60})
        await create(kmock, body)
        deployment = await eventually(lambda: obj(kmock, DEPLOY, "ml", "iris"), what="Deployment")
        service = await eventually(lambda: obj(kmock, SVC, "ml", "iris"), what="Service")
        hpa = await eventually(lambda: obj(kmock, HPA, "ml", "iris"), what="HPA")
        await eventually(lambda: obj(kmock, PDB, "ml", "iris"), what="PDB")
        for child in (deployment, service, hpa):
            (owner,) = child["metadata"]["ownerReferences"]
            assert owner["uid"] == "uid-ml-iris" and owner["kind"] == "ModelDeployment" and owner["controller"] is True
            assert child["metadata"]["labels"][LABEL_DEPLOYMENT] == "iris"
        assert deployment["spec"]["template"]["metadata"]["labels"][LABEL_TRACK] == "stable"
        assert "replicas" not in deployment["spec"], "an autoscaled Deployment must leave replicas to the HPA"
        status = await eventually(
            lambda: md_status(kmock, "iris").get("observedGeneration") == 1 and md_status(kmock, "iris")
        )
        assert cond(status, "Ready")["status"] == "False" and cond(status, "Progressing")["status"] == "True"
        assert cond(status, "Ready")["observedGeneration"] == 1
        assert status["url"] == "http://iris.ml.svc.cluster.local:8000/v2/models/mlp"
        assert status["grpcUrl"] == "iris.ml.svc.cluster.local:8001" and len(status["revision"]) == 10
        await eventually(lambda: any(e["reason"] == "Applied" for e in events_for(kmock, "iris")), what="Applied event")
        status_writes = [
            r for r in kmock[kmock.method("patch")] if r.url.path.endswith("/modeldeployments/iris/status")
        ]
        assert status_writes, "status must be written through the status subresource"
        spec_writes = [r for r in kmock[kmock.method("patch")] if r.url.path.endswith("/modeldeployments/iris")]
        assert all("spec" not in (r.data or {}) for r in spec_writes), "the operator must never write spec"


async def test_spec_change_patches_children_and_observed_generation(kmock: kmock.KubernetesEmulator) -> None:
    async with running_operator(kmock):
        await create(kmock, model_deployment("fraud", replicas=2, rollout={"strategy": "RollingUpdate"}))
        first = await eventually(lambda: obj(kmock, DEPLOY, "ml", "fraud"))
        assert first["spec"]["replicas"] == 2
        await eventually(lambda: md_status(kmock, "fraud").get("observedGeneration") == 1)
        await patch(
            kmock,
            "ml",
            "fraud",
            {
                "metadata": {"generation": 2},
                "spec": {"replicas": 3, "model": {"name": "mlp", "storageUri": "s3://models/mlp", "version": 2}},
            },
        )
        await eventually(lambda: obj(kmock, DEPLOY, "ml", "fraud")["spec"]["replicas"] == 3, what="replicas 3")
        status = await eventually(
            lambda: md_status(kmock, "fraud").get("observedGeneration") == 2 and md_status(kmock, "fraud")
        )
        assert status["revision"] != first["metadata"]["annotations"]["modeldeploy.io/revision"]
        assert cond(status, "Progressing")["observedGeneration"] == 2


async def test_deleted_deployment_is_restored_at_once(kmock: kmock.KubernetesEmulator) -> None:
    async with running_operator(kmock, resync_seconds=600):
        await create(kmock, model_deployment("resnet"))
        await eventually(lambda: obj(kmock, DEPLOY, "ml", "resnet"))
        await eventually(lambda: md_status(kmock, "resnet").get("observedGeneration") == 1)
        response = await kmock.delete("/apis/apps/v1/namespaces/ml/deployments/resnet")
        assert response.status == 200
        assert obj(kmock, DEPLOY, "ml", "resnet") is None
        restored = await eventually(lambda: obj(kmock, DEPLOY, "ml", "resnet"), what="Deployment restored")
        assert restored["metadata"]["ownerReferences"][0]["uid"] == "uid-ml-resnet"
        await eventually(
            lambda: any(e["reason"] == "Restored" for e in events_for(kmock, "resnet")), what="Restored event"
        )


async def test_deleted_service_is_restored_by_resync(kmock: kmock.KubernetesEmulator) -> None:
    async with running_operator(kmock, resync_seconds=1):
        await create(kmock, model_deployment("bert"))
        await eventually(lambda: obj(kmock, SVC, "ml", "bert"))
        response = await kmock.delete("/api/v1/namespaces/ml/services/bert")
        assert response.status == 200
        await eventually(lambda: obj(kmock, SVC, "ml", "bert"), what="Service restored")


async def test_edited_child_is_put_back_by_resync(kmock: kmock.KubernetesEmulator) -> None:
    async with running_operator(kmock, resync_seconds=1):
        await create(kmock, model_deployment("edited", replicas=2))
        await eventually(lambda: obj(kmock, DEPLOY, "ml", "edited"))
        await kmock.patch("/apis/apps/v1/namespaces/ml/deployments/edited", json={"spec": {"replicas": 7}})
        assert obj(kmock, DEPLOY, "ml", "edited")["spec"]["replicas"] == 7
        await eventually(lambda: obj(kmock, DEPLOY, "ml", "edited")["spec"]["replicas"] == 2, what="replicas put back")


async def test_removed_autoscaling_deletes_the_hpa(kmock: kmock.KubernetesEmulator) -> None:
    async with running_operator(kmock):
        autoscaling = {"minReplicas": 1, "maxReplicas": 4, "targetInferenceRate": 100}
        await create(kmock, model_deployment("scaled", autoscaling=autoscaling))
        await eventually(lambda: obj(kmock, HPA, "ml", "scaled"), what="HPA")
        await patch(
            kmock, "ml", "scaled", {"metadata": {"generation": 2}, "spec": {"autoscaling": None, "replicas": 1}}
        )
        await eventually(lambda: obj(kmock, HPA, "ml", "scaled") is None, what="HPA deleted")
        await eventually(lambda: any(e["reason"] == "Pruned" for e in events_for(kmock, "scaled")), what="Pruned event")


async def test_invalid_spec_is_reported_and_others_are_unaffected(kmock: kmock.KubernetesEmulator) -> None:
    async with running_operator(kmock):
        bad = model_deployment("broken", autoscaling={"minReplicas": 5, "maxReplicas": 2, "targetCPUUtilization": 50})
        await create(kmock, bad)
        await create(kmock, model_deployment("healthy"))
        status = await eventually(lambda: md_status(kmock, "broken").get("conditions") and md_status(kmock, "broken"))
        ready = cond(status, "Ready")
        assert ready["status"] == "False" and ready["reason"] == "InvalidSpec"
        assert "spec.autoscaling: minReplicas (5) must be less than or equal to maxReplicas (2)" in ready["message"]
        assert cond(status, "Degraded")["status"] == "True" and status["phase"] == "Failed"
        await eventually(
            lambda: any(e["reason"] == "InvalidSpec" and e["type"] == "Warning" for e in events_for(kmock, "broken"))
        )
        await eventually(lambda: obj(kmock, DEPLOY, "ml", "healthy"), what="the healthy one's Deployment")
        assert obj(kmock, DEPLOY, "ml", "broken") is None, "nothing may be applied for an invalid spec"
        patches_before = len(list(kmock[kmock.method("patch")]))
        import asyncio

        await asyncio.sleep(1.5)
        broken_status_writes = [
            r for r in list(kmock[kmock.method("patch")])[patches_before:] if "/broken/status" in r.url.path
        ]
        assert len(broken_status_writes) <= 1, "an invalid spec must not cause a retry storm"


async def test_semantic_spec_error_is_invalid_spec(kmock: kmock.KubernetesEmulator) -> None:
    async with running_operator(kmock):
        await create(kmock, model_deployment("noclaim", model={"name": "m", "storageUri": "pvc:///models"}))
        status = await eventually(lambda: md_status(kmock, "noclaim").get("conditions") and md_status(kmock, "noclaim"))
        assert cond(status, "Ready")["reason"] == "InvalidSpec"
        assert "spec.model.storageUri" in cond(status, "Ready")["message"]


@pytest.mark.parametrize("status_code", [409, 500])
async def test_transient_api_errors_are_retried_until_converged(
    kmock: kmock.KubernetesEmulator, status_code: int
) -> None:
    (
        kmock[kmock.method("patch"), kmock.resource("apps/v1/deployments")][:2]
        << status_code
        << {"kind": "Status", "message": "injected"}
    )
    async with running_operator(kmock):
        await create(kmock, model_deployment("flaky"))
        await eventually(lambda: obj(kmock, DEPLOY, "ml", "flaky"), timeout=20, what="Deployment after retries")
        await eventually(lambda: md_status(kmock, "flaky").get("observedGeneration") == 1, timeout=20)


def pod(name: str, owner: str, revision: str, ready: bool, track: str = "stable") -> dict[str, Any]:
    labels = {**MANAGED, LABEL_DEPLOYMENT: owner, LABEL_TRACK: track, LABEL_REVISION: revision}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "ml", "labels": labels},
        "status": {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}]},
    }


async def test_ready_follows_the_pods_before_the_deployment_reports_them(kmock: kmock.KubernetesEmulator) -> None:
    """kmock runs no Deployment controller: the Deployment never gets a status, as when a real one's
    status trails its pods (the controller-manager's API rate limit). The pods alone must do."""
    async with running_operator(kmock, resync_seconds=600):
        await create(kmock, model_deployment("pods", replicas=2))
        deployment = await eventually(lambda: obj(kmock, DEPLOY, "ml", "pods"), what="Deployment")
        revision = deployment["spec"]["template"]["metadata"]["labels"][LABEL_REVISION]
        await eventually(lambda: md_status(kmock, "pods").get("observedGeneration") == 1, what="status")
        await kmock.post("/api/v1/namespaces/ml/pods", json=pod("pods-a", "pods", revision, ready=True))
        await kmock.post("/api/v1/namespaces/ml/pods", json=pod("pods-old", "pods", "0ld", ready=True))
        await kmock.post("/api/v1/namespaces/ml/pods", json=pod("pods-b", "pods", revision, ready=False))
        await kmock.post("/api/v1/namespaces/ml/pods", json=pod("pods-c", "pods", "x", ready=True, track="canary"))
        await asyncio.sleep(1)  # one of two new pods ready and an old one left: not Ready
        assert cond(md_status(kmock, "pods"), "Ready")["status"] == "False"
        await kmock.delete("/api/v1/namespaces/ml/pods/pods-old")
        ready = {"status": {"conditions": [{"type": "Ready", "status": "True"}]}}
        await kmock.patch("/api/v1/namespaces/ml/pods/pods-b", json=ready)
        status = await eventually(lambda: cond(md_status(kmock, "pods"), "Ready")["status"] == "True"
                                  and md_status(kmock, "pods"), what="Ready from the pods")  # fmt: skip
        assert status["readyReplicas"] == 2 and status["replicas"] == 2
        assert obj(kmock, DEPLOY, "ml", "pods").get("status") is None, "no Deployment status was needed"
        # A pod turns unready: the pods no longer vouch, and the Deployment reports nothing ready.
        await kmock.patch("/api/v1/namespaces/ml/pods/pods-a", json={"status": {"conditions": [
            {"type": "Ready", "status": "False"}]}})  # fmt: skip
        await eventually(lambda: cond(md_status(kmock, "pods"), "Ready")["status"] == "False", what="Ready=False")
