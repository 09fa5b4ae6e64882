"""Run the real kopf operator in the test's event loop against kmock's Kubernetes emulator."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import kmock
import kopf
from kubernetes import client

import modeldeploy.handlers  # noqa: F401  (registers the operator's handlers)
from modeldeploy import api
from modeldeploy.kube import KubeClient
from modeldeploy.opmetrics import OperatorMetrics
from modeldeploy.settings import OperatorSettings

MD_RESOURCE = f"{api.GROUP}/{api.VERSION}/{api.PLURAL}"
MD_PATH = f"/apis/{api.GROUP}/{api.VERSION}/namespaces/{{ns}}/{api.PLURAL}"
_server: dict[str, str] = {}


@kopf.on.login()
def login_to_emulator(**_: Any) -> kopf.ConnectionInfo:
    """Only for tests: kopf talks to whichever emulator the running test started."""
    return kopf.ConnectionInfo(server=_server["url"], insecure=True, scheme="Bearer", token="test")


def client_for(server: str, field_manager: str) -> KubeClient:
    """The operator's client for a plain-HTTP test server (the emulator, or a proxy in front of it)."""
    configuration = client.Configuration()
    configuration.host = server
    configuration.verify_ssl = False
    return KubeClient(client.ApiClient(configuration), field_manager)


def declare_resources(emulator: kmock.KubernetesEmulator) -> None:
    emulator.resources.load_bundled()
    emulator.resources[MD_RESOURCE] = {
        "namespaced": True,
        "kind": api.KIND,
        "singular": api.SINGULAR,
        "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"],
        "shortnames": api.SHORT_NAMES,
        "categories": api.CATEGORIES,
        "subresources": ["status"],
    }
    for plural, kind in (("httproutes", "HTTPRoute"), ("grpcroutes", "GRPCRoute")):
        emulator.resources[f"gateway.networking.k8s.io/v1/{plural}"] = {
            "namespaced": True,
            "kind": kind,
            "singular": kind.lower(),
            "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"],
            "shortnames": [],
            "categories": [],
            "subresources": ["status"],
        }


@contextlib.asynccontextmanager
async def running_operator(
    emulator: kmock.KubernetesEmulator,
    *,
    scanning: bool = False,
    provider: Any = None,
    server: str | None = None,
    **settings: Any,
) -> AsyncIterator[kopf.Memo]:
    """`server`: where the operator sends its requests (a proxy in front of the emulator); default the emulator."""
    declare_resources(emulator)
    _server["url"] = (server or str(emulator.url)).rstrip("/")
    op_settings = OperatorSettings(**{"metrics_port": 0, "liveness_endpoint": None, "resync_seconds": 2.0, **settings})
    memo = kopf.Memo(
        settings=op_settings,
        kube=client_for(_server["url"], op_settings.field_manager),
        metrics=OperatorMetrics(),
        provider=provider,
    )
    kopf_settings = kopf.OperatorSettings()
    kopf_settings.scanning.disabled = not scanning
    kopf_settings.watching.reconnect_backoff = 0.2
    kopf_settings.batching.idle_timeout = 0.5  # let per-object workers exit fast when the test ends
    kopf_settings.batching.exit_timeout = 0.5
    kopf_settings.process.instant_exit_timeout = 0.1
    stop = asyncio.Event()
    task = asyncio.create_task(
        kopf.operator(clusterwide=True, standalone=True, settings=kopf_settings, memo=memo, stop_flag=stop)
    )
    try:
        await asyncio.sleep(0.5)
        yield memo
    finally:
        stop.set()
        with contextlib.suppress(asyncio.CancelledError, asyncio.TimeoutError):
            await asyncio.wait_for(task, 10)
        logging.getLogger("kopf").setLevel(logging.NOTSET)


def model_deployment(name: str, ns: str = "ml", generation: int = 1, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": api.API_VERSION,
        "kind": api.KIND,
        "metadata": {"name": name, "namespace": ns, "uid": f"uid-{ns}-{name}", "generation": generation,
                     "resourceVersion": "1"},
        "spec": {"model": {"name": "mlp", "storageUri": "s3://models/mlp"}, **spec},
    }  # fmt: skip


async def create(emulator: kmock.KubernetesEmulator, body: dict[str, Any]) -> None:
    response = await emulator.post(MD_PATH.format(ns=body["metadata"]["namespace"]), json=body)
    assert response.status < 300, await response.text()


async def patch(emulator: kmock.KubernetesEmulator, ns: str, name: str, patch_body: dict[str, Any]) -> None:
    response = await emulator.patch(f"{MD_PATH.format(ns=ns)}/{name}", json=patch_body)
    assert response.status < 300, await response.text()


def obj(emulator: kmock.KubernetesEmulator, resource: str, ns: str, name: str) -> dict[str, Any] | None:
    try:
        found = emulator.objects[resource, ns, name]
    except KeyError:
        return None
    return None if found.deleted else dict(found.raw)


async def eventually(check: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except (KeyError, TypeError, AssertionError) as exc:
            last = exc
        else:
            if last:
                return last
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


async def mark_deployments_ready(emulator: kmock.KubernetesEmulator, stop: asyncio.Event) -> None:
    """Stands in for the Deployment controller and kubelet, which the emulator lacks."""
    while not stop.is_set():
        for (resource, ns, name), stored in list(emulator.objects.items()):
            if stored.deleted or resource.plural != "deployments":
                continue
            replicas = stored.raw.get("spec", {}).get("replicas", 1)
            current = stored.raw.get("status") or {}
            if current.get("readyReplicas") != replicas:
                ready = {"replicas": replicas, "readyReplicas": replicas, "updatedReplicas": replicas,
                         "availableReplicas": replicas}  # fmt: skip
                await emulator.patch(f"/apis/apps/v1/namespaces/{ns}/deployments/{name}", json={"status": ready})
        await asyncio.sleep(0.2)
