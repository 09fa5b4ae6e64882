"""A thin Kubernetes client over the `kubernetes` package: apply, get, delete, status, events.

Objects travel as plain dicts (no generated model classes: cheaper, and they are what the
renderer produces). Apply is server-side apply with a fixed field manager; an object
that does not exist yet is created (a real API server creates it on apply; an emulator
without apply support answers 404, and the create follows).

Every call is retried where it failed (`RetryPolicy`), not the whole reconcile: connection
errors and timeouts, 429 (waiting at least its Retry-After), 500/502/503/504, and a 409 on
anything but a create (server-side apply with force, merge patches of status, gets and deletes
are idempotent). A create's 409 means the object exists: `apply` then applies it. A write that
happened but was answered with an error is therefore harmless: apply and status patches repeat
to the same result, a repeated create finds its object, a repeated delete its absence, and an
Event has a name fixed before the first attempt, so a repeat is a 409, not a second Event.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
import os
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from modeldeploy import api

log = logging.getLogger(__name__)
TRANSIENT_STATUSES = {409, 429, 500, 502, 503, 504}
RETRIED_STATUSES = {0, 429, 500, 502, 503, 504}  # 0: no answer (connection error, timeout)

# kind -> (group/version, plural); the kinds the operator reads or writes.
RESOURCES: dict[str, tuple[str, str]] = {
    "Deployment": ("apps/v1", "deployments"),
    "ControllerRevision": ("apps/v1", "controllerrevisions"),
    "Service": ("v1", "services"),
    "HorizontalPodAutoscaler": ("autoscaling/v2", "horizontalpodautoscalers"),
    "PodDisruptionBudget": ("policy/v1", "poddisruptionbudgets"),
    "HTTPRoute": ("gateway.networking.k8s.io/v1", "httproutes"),
    "GRPCRoute": ("gateway.networking.k8s.io/v1", "grpcroutes"),
    "PodMonitor": ("monitoring.coreos.com/v1", "podmonitors"),
    "NetworkPolicy": ("networking.k8s.io/v1", "networkpolicies"),
    "ScaledObject": ("keda.sh/v1alpha1", "scaledobjects"),
    "ModelDeployment": (api.API_VERSION, api.PLURAL),
}


class KubeError(Exception):
    """An API call failed; `transient` says whether retrying may help."""

    def __init__(self, status: int, message: str, retry_after: float | None = None) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.transient = status in TRANSIENT_STATUSES or status == 0
        self.retry_after = retry_after


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded retries of one API call: exponential backoff with jitter, Retry-After honoured."""

    attempts: int = 6  # in all; at 20 % failing calls one call fails for good 6 in 100,000 times
    base_seconds: float = 0.1
    max_seconds: float = 5.0
    max_retry_after_seconds: float = 30.0

    def retryable(self, method: str, error: KubeError) -> bool:
        # A create's 409 is AlreadyExists (maybe our own earlier attempt): the caller decides.
        return error.status in RETRIED_STATUSES or (error.status == 409 and method != "POST")

    def delay(self, attempt: int, error: KubeError) -> float:
        """Seconds before retry number `attempt` (1 = the first retry)."""
        backoff = min(self.max_seconds, self.base_seconds * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0)
        if error.retry_after is not None:
            backoff = max(backoff, min(error.retry_after, self.max_retry_after_seconds))
        return backoff


NO_RETRIES = RetryPolicy(attempts=1)
USER_AGENT = "modeldeploy-operator"
FANOUT_THREADS = 32  # `apply_all`'s threads, shared by all callers; their calls only wait on the API server


@dataclass(frozen=True)
class ObjectRef:
    kind: str
    namespace: str
    name: str

    @property
    def path(self) -> str:
        group_version, plural = RESOURCES[self.kind]
        prefix = "/api/v1" if group_version == "v1" else f"/apis/{group_version}"
        return f"{prefix}/namespaces/{self.namespace}/{plural}/{self.name}"

    @property
    def collection(self) -> str:
        return self.path.rsplit("/", 1)[0]

    @classmethod
    def of(cls, obj: dict[str, Any]) -> ObjectRef:
        meta = obj["metadata"]
        return cls(obj["kind"], meta["namespace"], meta["name"])


class KubeClient:
    def __init__(
        self, api_client: client.ApiClient, field_manager: str = "modeldeploy", retry: RetryPolicy | None = None
    ) -> None:
        self.api_client = api_client
        self.field_manager = field_manager
        self.retry = retry or RetryPolicy()
        self.retries: dict[int, int] = {}  # status -> retries made, for metrics and tests
        # Called once per request sent (every attempt): (method, HTTP status; 0 when none came).
        self.on_request: Callable[[str, int], None] | None = None
        self._fanout: ThreadPoolExecutor | None = None
        self._fanout_guard = threading.Lock()

    @classmethod
    def from_environment(cls, field_manager: str = "modeldeploy", pool_size: int | None = None) -> KubeClient:
        """In-cluster config when running in a pod, else the kubeconfig ($KUBECONFIG read now).

        `pool_size`: connections kept open, at least the threads calling at once (the default,
        5 per CPU, would make each thread beyond it open and close a TLS connection per call)."""
        configuration = client.Configuration()
        if pool_size is not None:
            configuration.connection_pool_maxsize = pool_size
        if os.environ.get("KUBERNETES_SERVICE_HOST"):
            config.load_incluster_config(client_configuration=configuration)
        else:
            config.load_kube_config(config_file=os.environ.get("KUBECONFIG"), client_configuration=configuration)
        api_client = client.ApiClient(configuration)
        api_client.user_agent = USER_AGENT  # how the API server's audit log and metrics tell it apart
        return cls(api_client, field_manager)

    def _call(
        self,
        method: str,
        path: str,
        body: Any = None,
        query: list[tuple[str, Any]] | None = None,
        content_type: str = "application/json",
    ) -> dict[str, Any] | None:
        """One API call, retried where it failed as `self.retry` allows."""
        attempt = 1
        while True:
            try:
                return self._call_once(method, path, body, query, content_type)
            except KubeError as exc:
                if attempt >= self.retry.attempts or not self.retry.retryable(method, exc):
                    raise
                delay = self.retry.delay(attempt, exc)
                self.retries[exc.status] = self.retries.get(exc.status, 0) + 1
                log.debug("%s %s failed (%s); retry %d in %.2fs", method, path, exc, attempt, delay)
                time.sleep(delay)
                attempt += 1

    def _call_once(
        self,
        method: str,
        path: str,
        body: Any,
        query: list[tuple[str, Any]] | None,
        content_type: str,
    ) -> dict[str, Any] | None:
        request = self.api_client.param_serialize(
            method=method,
            resource_path=path,
            query_params=query or [],
            header_params={"Content-Type": content_type, "Accept": "application/json"},
            body=body,
            auth_settings=["BearerToken"],
        )
        try:
            response = self.api_client.call_api(*request, _request_timeout=(5, 30))
            data = response.read()
        except ApiException as exc:  # connection-level failures come wrapped
            self._count(method, exc.status or 0)
            retry_after = _retry_after((exc.headers or {}).get("Retry-After"))
            raise KubeError(exc.status or 0, _reason(exc.body, str(exc.reason)), retry_after) from None
        except (OSError, urllib3.exceptions.HTTPError) as exc:
            self._count(method, 0)
            raise KubeError(0, str(exc)) from None
        self._count(method, response.status)
        if response.status >= 400:
            retry_after = _retry_after(response.getheader("Retry-After"))
            raise KubeError(response.status, _reason(data, str(response.reason)), retry_after)
        try:
            return json.loads(data) if data else None
        except ValueError as exc:  # a cut answer
            raise KubeError(0, f"unreadable answer: {exc}") from None

    def _count(self, method: str, status: int) -> None:
        if self.on_request is not None:
            self.on_request(method, status)

    def get(self, ref: ObjectRef) -> dict[str, Any] | None:
        try:
            return self._call("GET", ref.path)
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise

    def list(self, kind: str, namespace: str, label_selector: str) -> list[dict[str, Any]]:
        """Objects of `kind` in `namespace` matching a label selector."""
        collection = ObjectRef(kind, namespace, "-").collection
        found = self._call("GET", collection, query=[("labelSelector", label_selector)]) or {}
        return list(found.get("items") or [])

    def apply(self, obj: dict[str, Any], *, probably_new: bool = False) -> dict[str, Any]:
        """Server-side apply (forced: the operator owns these fields); create when missing.

        `probably_new` (a ModelDeployment just created) tries a create first, which saves
        a round trip against servers without apply; an existing object falls back to apply.
        """
        ref = ObjectRef.of(obj)
        if probably_new:
            try:
                return self._create(ref, obj)
            except KubeError as exc:
                if exc.status != 409:
                    raise
        query = [("fieldManager", self.field_manager), ("force", "true")]
        for _ in range(3):  # apply, create, apply: an object deleted and re-created in between
            try:
                result = self._call("PATCH", ref.path, obj, query, "application/apply-patch+yaml")
            except KubeError as exc:
                if exc.status != 404:
                    raise
                try:
                    return self._create(ref, obj)
                except KubeError as create_error:
                    if create_error.status != 409:  # exists after all: apply again
                        raise
            else:
                return result or obj
        raise KubeError(409, f"{ref.kind}/{ref.name} neither applies nor creates")

    def apply_all(self, objs: list[dict[str, Any]], *, probably_new: bool = False) -> list[dict[str, Any]]:
        """`apply` of each object, all at once (one round trip of latency instead of one per object);
        every apply runs to its end, then the first error, if any, is raised."""
        if len(objs) < 2:
            return [self.apply(obj, probably_new=probably_new) for obj in objs]
        with self._fanout_guard:
            if self._fanout is None:
                self._fanout = ThreadPoolExecutor(max_workers=FANOUT_THREADS, thread_name_prefix="kube-apply")
        futures = [self._fanout.submit(self.apply, obj, probably_new=probably_new) for obj in objs]
        errors = [f.exception() for f in futures]
        first = next((e for e in errors if e is not None), None)
        if first is not None:
            raise first
        return [f.result() for f in futures]

    def _create(self, ref: ObjectRef, obj: dict[str, Any]) -> dict[str, Any]:
        return self._call("POST", ref.collection, obj, [("fieldManager", self.field_manager)]) or obj

    def delete(self, ref: ObjectRef) -> bool:
        """Delete with background propagation; False when it was already gone."""
        try:
            self._call("DELETE", ref.path, {"propagationPolicy": "Background"})
        except KubeError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    def post_event(self, involved: dict[str, Any], type_: str, reason: str, message: str) -> None:
        """A core/v1 Event about `involved` (a ModelDeployment body)."""
        meta = involved["metadata"]
        namespace = meta.get("namespace") or "default"
        now = datetime.datetime.now(datetime.UTC).isoformat().replace("+00:00", "Z")
        # A name fixed before the first attempt: a retry of a post that happened is a 409, not a twin.
        digest = hashlib.sha256(f"{meta.get('uid')}/{reason}/{message}/{now}/{random.random()}".encode())
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": f"{meta['name']}.{digest.hexdigest()[:16]}", "namespace": namespace},
            "involvedObject": {
                "apiVersion": involved.get("apiVersion", api.API_VERSION),
                "kind": involved.get("kind", api.KIND),
                "name": meta["name"],
                "namespace": namespace,
                "uid": meta.get("uid"),
            },
            "type": type_,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": "modeldeploy"},
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        try:
            self._call("POST", f"/api/v1/namespaces/{namespace}/events", event)
        except KubeError as exc:
            if exc.status != 409:
                raise

    def patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        """Merge-patch the ModelDeployment's status subresource (never its spec)."""
        ref = ObjectRef("ModelDeployment", namespace, name)
        self._call("PATCH", f"{ref.path}/status", {"status": status}, content_type="application/merge-patch+json")


def _retry_after(value: str | None) -> float | None:
    """Retry-After in seconds (the delta form the API server sends); None when absent or a date."""
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None


def _reason(body: Any, fallback: str) -> str:
    try:
        return str(json.loads(body).get("message") or fallback)
    except (TypeError, ValueError, AttributeError):
        return fallback
