"""RBAC: the chart grants exactly the verbs and resources the operator's code calls.

The calls are not listed by hand: the real operator runs against kmock through every path
that touches the API (create with all children, spec change that prunes, a deleted child,
an invalid spec, events, kopf's discovery scanning), and every request it made is turned
into an (apiGroup, resource, verb) triple.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import kmock
import yaml

from tests.integration.operator_env import create, eventually, model_deployment, obj, patch, running_operator

ROOT = Path(__file__).parents[2]
HELM = str(Path(sys.executable).parent / "helm")
OPERATOR_AGENTS = ("kopf/", "OpenAPI-Generator/")  # kopf itself; the kubernetes client the operator uses
VERBS = {"POST": "create", "PATCH": "patch", "PUT": "update", "DELETE": "delete"}

Triple = tuple[str, str, str]


def verb(request: kmock.Request) -> str:
    if request.method == "GET":
        if request.name:
            return "get"
        return "watch" if request.params.get("watch") in ("true", "1") else "list"
    return VERBS[request.method]


def derived_calls(emulator: kmock.KubernetesEmulator) -> set[Triple]:
    calls: set[Triple] = set()
    for request in emulator:
        if request.resource is None or not request.resource.plural:
            continue  # discovery
        if not request.headers.get("User-Agent", "").startswith(OPERATOR_AGENTS):
            continue  # the test's own requests

        resource = request.resource.plural + (f"/{request.subresource}" if request.subresource else "")
        calls.add((request.resource.group or "", resource, verb(request)))
    return calls


def granted(*values: str) -> set[Triple]:
    out = subprocess.run(
        [HELM, "template", "md", str(ROOT / "charts" / "modeldeploy"), *values],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rules = [
        r for doc in yaml.safe_load_all(out) if doc and doc["kind"] in ("ClusterRole", "Role") for r in doc["rules"]
    ]
    return {
        (g, res, v) for rule in rules for g in rule["apiGroups"] for res in rule["resources"] for v in rule["verbs"]
    }


def resynced(emulator: kmock.KubernetesEmulator, plural: str) -> bool:
    return any(r.method == "PATCH" and r.resource is not None and r.resource.plural == plural for r in emulator)


def revisions(emulator: kmock.KubernetesEmulator, owner: str) -> list[str]:
    return [
        name
        for (resource, _, name), stored in list(emulator.objects.items())
        if resource.plural == "controllerrevisions" and not stored.deleted and name.startswith(f"{owner}-")
    ]


async def exercise_every_path(emulator: kmock.KubernetesEmulator) -> None:
    async with running_operator(emulator, scanning=True, resync_seconds=1, revision_history_limit=1):
        scaled = {"minReplicas": 2, "maxReplicas": 4, "targetCPUUtilization": 60}
        await create(emulator, model_deployment("full", autoscaling=scaled))
        await eventually(lambda: obj(emulator, "policy/v1/poddisruptionbudgets", "ml", "full"), what="PDB")
        await eventually(lambda: resynced(emulator, "poddisruptionbudgets"), what="a resync re-applying the children")
        await patch(
            emulator, "ml", "full", {"metadata": {"generation": 2}, "spec": {"autoscaling": None, "replicas": 1}}
        )
        await eventually(
            lambda: obj(emulator, "autoscaling/v2/horizontalpodautoscalers", "ml", "full") is None, what="HPA pruned"
        )
        await eventually(
            lambda: obj(emulator, "policy/v1/poddisruptionbudgets", "ml", "full") is None, what="PDB pruned"
        )
        await emulator.delete("/apis/apps/v1/namespaces/ml/deployments/full")
        await eventually(lambda: obj(emulator, "apps/v1/deployments", "ml", "full"), what="Deployment restored")
        v2 = {"model": {"name": "mlp", "storageUri": "s3://models/mlp", "version": 2}, "replicas": 1}
        await patch(emulator, "ml", "full", {"metadata": {"generation": 3}, "spec": v2})
        await eventually(lambda: obj(emulator, "apps/v1/deployments", "ml", "full-canary"), what="canary")
        await patch(emulator, "ml", "full", {"metadata": {"annotations": {"modeldeploy.io/rollout": "abort"}}})
        await eventually(lambda: obj(emulator, "apps/v1/deployments", "ml", "full-canary") is None, what="canary gone")
        routes = "gateway.networking.k8s.io/v1/"
        http = {"strategy": "Canary", "gateway": {"name": "public", "routeKind": "HTTPRoute"}}
        await create(emulator, model_deployment("routed", replicas=2, rollout=http))
        await eventually(lambda: obj(emulator, routes + "httproutes", "ml", "routed"), what="HTTPRoute")
        await eventually(lambda: resynced(emulator, "httproutes"), what="HTTPRoute re-applied")
        grpc = {"strategy": "Canary", "gateway": {"name": "public", "routeKind": "GRPCRoute"}}
        await patch(emulator, "ml", "routed", {"metadata": {"generation": 2}, "spec": {"rollout": grpc}})
        await eventually(lambda: obj(emulator, routes + "httproutes", "ml", "routed") is None, what="HTTPRoute pruned")
        await eventually(lambda: resynced(emulator, "grpcroutes"), what="GRPCRoute re-applied")
        plain = {"strategy": "Canary", "gateway": None}
        await patch(emulator, "ml", "routed", {"metadata": {"generation": 3}, "spec": {"rollout": plain}})
        await eventually(lambda: obj(emulator, routes + "grpcroutes", "ml", "routed") is None, what="GRPCRoute pruned")
        await eventually(
            lambda: obj(emulator, "v1/services", "ml", "routed-canary") is None, what="track Service pruned"
        )
        monitors = "monitoring.coreos.com/v1/podmonitors"
        await create(emulator, model_deployment("watched", monitoring={"podMonitor": True}))
        await eventually(lambda: obj(emulator, monitors, "ml", "watched"), what="PodMonitor")
        await eventually(lambda: resynced(emulator, "podmonitors"), what="PodMonitor re-applied")
        await patch(emulator, "ml", "watched", {"metadata": {"generation": 2}, "spec": {"monitoring": None}})
        await eventually(lambda: obj(emulator, monitors, "ml", "watched") is None, what="PodMonitor pruned")
        scalers = "keda.sh/v1alpha1/scaledobjects"
        keda = {"engine": "KEDA", "minReplicas": 0, "maxReplicas": 3, "targetInferenceRate": 20}
        await create(emulator, model_deployment("scaled", autoscaling=keda))
        await eventually(lambda: obj(emulator, scalers, "ml", "scaled"), what="ScaledObject")
        await eventually(lambda: resynced(emulator, "scaledobjects"), what="ScaledObject re-applied")
        await patch(emulator, "ml", "scaled", {"metadata": {"generation": 2}, "spec": {"autoscaling": None}})
        await eventually(lambda: obj(emulator, scalers, "ml", "scaled") is None, what="ScaledObject pruned")
        policies = "networking.k8s.io/v1/networkpolicies"
        await create(emulator, model_deployment("fenced", security={"networkPolicy": {}}))
        await eventually(lambda: obj(emulator, policies, "ml", "fenced"), what="NetworkPolicy")
        await eventually(lambda: resynced(emulator, "networkpolicies"), what="NetworkPolicy re-applied")
        await patch(emulator, "ml", "fenced", {"metadata": {"generation": 2}, "spec": {"security": None}})
        await eventually(lambda: obj(emulator, policies, "ml", "fenced") is None, what="NetworkPolicy pruned")
        # A new stable revision past the history limit (1 here): the older ControllerRevision is deleted.
        rolling = {"strategy": "RollingUpdate"}
        await create(emulator, model_deployment("hist", rollout=rolling))
        await eventually(lambda: len(revisions(emulator, "hist")) == 1, what="first ControllerRevision")
        (first,) = revisions(emulator, "hist")
        v2 = {"model": {"name": "mlp", "storageUri": "s3://models/mlp", "version": 2}, "rollout": rolling}
        await patch(emulator, "ml", "hist", {"metadata": {"generation": 2}, "spec": v2})
        await eventually(lambda: first not in revisions(emulator, "hist"), what="old ControllerRevision pruned")
        assert len(revisions(emulator, "hist")) == 1
        # A handler that fails for now (its status write refused on every attempt of the client):
        # kopf keeps its retry count in annotations (the only PATCH of a ModelDeployment itself).
        refused = emulator[kmock.method("patch"), kmock.namespace("flaky"), kmock.subresource("status")][:6]
        refused << 503 << {"kind": "Status", "message": "injected"}
        await create(emulator, model_deployment("retried", ns="flaky"))
        await eventually(
            lambda: any(r.method == "PATCH" and r.url.path.endswith("/modeldeployments/retried") for r in emulator),
            timeout=30,
            what="kopf's retry bookkeeping",
        )
        await create(emulator, model_deployment("bad", replicas=-1))
        await eventually(
            lambda: (obj(emulator, "modeldeploy.io/v1alpha1/modeldeployments", "ml", "bad") or {}).get("status")
        )


async def test_chart_grants_exactly_what_the_operator_calls(kmock: kmock.KubernetesEmulator) -> None:
    await exercise_every_path(kmock)
    used = derived_calls(kmock)
    assert used, "no API calls were recorded"
    cluster_wide = granted()
    assert not [t for t in cluster_wide if "*" in t], "wildcards are not least privilege"
    assert used - cluster_wide == set(), f"used but not granted: {sorted(used - cluster_wide)}"
    assert cluster_wide - used == set(), f"granted but never used: {sorted(cluster_wide - used)}"
    namespaced = granted("--set", "watch.namespaces={ml}")
    kopf_scanning = {("apiextensions.k8s.io", "customresourcedefinitions", v) for v in ("list", "watch")}
    assert namespaced == cluster_wide - kopf_scanning, "namespaced mode grants the same, minus cluster-wide scanning"
