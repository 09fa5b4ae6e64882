"""Render a validated ModelDeployment into the Kubernetes objects it needs.

`build_*_context` compute every value from the spec; the jinja2 templates in
`templates/` only lay those values out (`StrictUndefined`, `| tojson`). The output
of each template is parsed back with `yaml.safe_load` and checked before use.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any

import jinja2
import yaml

from modeldeploy import api, hardening, keda, monitoring
from modeldeploy.names import (
    DEFAULT_SERVING_IMAGE,
    GRPC_PORT,
    HTTP_PORT,
    LABEL_DEPLOYMENT,
    LABEL_MODEL,
    LABEL_REVISION,
    LABEL_TRACK,
    MANAGED,
    METRICS_PORT,
    PORTS,
    SPEC_ANNOTATION,
    TRACKS,
    Track,
    revision_of,
    track_service_name,
    workload_name,
)
from modeldeploy.storageapi import DEFAULT_VOLUME_SIZE_LIMIT

if TYPE_CHECKING:
    from modeldeploy.rollout import RolloutPlan

MODEL_ROOT = "/models"
CACHE_ROOT = "/cache"
RUN_AS_USER = 1000
GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
DEFAULT_PROMETHEUS_URL = "http://prometheus-server.monitoring:9090"


# libyaml's loader when present (10x faster; the operator renders on every reconcile).
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class RenderError(ValueError):
    """A template produced something that is not a valid object (a bug, not bad input)."""


@dataclass(frozen=True)
class RenderSettings:
    """Operator-wide values the spec may leave out."""

    serving_image: str = DEFAULT_SERVING_IMAGE
    prometheus_url: str = DEFAULT_PROMETHEUS_URL  # KEDA's Prometheus triggers read the analysis' Prometheus


@dataclass(frozen=True)
class StorageSource:
    """A parsed `spec.model.storageUri`."""

    scheme: str
    uri: str
    claim: str | None = None
    sub_path: str = ""


def parse_storage_uri(uri: str) -> StorageSource:
    scheme, _, rest = uri.partition("://")
    if scheme != "pvc":
        return StorageSource(scheme=scheme, uri=uri)
    claim, _, sub_path = rest.partition("/")
    if not claim:
        raise api.SpecError([f"spec.model.storageUri: {uri!r} names no PersistentVolumeClaim (pvc://<claim>/<path>)"])
    return StorageSource(scheme=scheme, uri=uri, claim=claim, sub_path=sub_path.strip("/"))


def common_labels(md: api.ModelDeployment) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "modelserve",
        "app.kubernetes.io/instance": md.metadata.name,
        "app.kubernetes.io/component": "model-server",
        "app.kubernetes.io/part-of": "modeldeploy",
        **MANAGED,
        LABEL_DEPLOYMENT: md.metadata.name,
        LABEL_MODEL: md.spec.model.name,
    }


def service_urls(md: api.ModelDeployment) -> tuple[str, str]:
    host = f"{md.metadata.name}.{md.metadata.namespace}.svc.cluster.local"
    return f"http://{host}:{HTTP_PORT}/v2/models/{md.spec.model.name}", f"{host}:{GRPC_PORT}"


def _ports() -> list[dict[str, Any]]:
    return [
        {"name": name, "port": port, "app_protocol": "kubernetes.io/h2c" if name == "grpc" else "http"}
        for name, port in PORTS.items()
    ]


def _resources(spec: api.ModelDeploymentSpec) -> dict[str, dict[str, str]]:
    requests = spec.resources.requests.to_wire()
    limits = spec.resources.limits.to_wire()
    if spec.gpu is not None and spec.gpu.count > 0:
        requests[spec.gpu.resource_name] = str(spec.gpu.count)
        limits[spec.gpu.resource_name] = str(spec.gpu.count)
    return {"requests": requests, "limits": limits}


MAX_WORKERS = 64  # a CPU request of thousands of cores is a typo, not thousands of processes


def _workers(spec: api.ModelDeploymentSpec) -> int:
    """modelserve processes per pod: one per whole core the container requests, at least one."""
    cpu = spec.resources.requests.cpu
    if cpu is None:
        return 1
    return max(1, min(MAX_WORKERS, int(api.quantity_value(cpu))))


def _server_command(spec: api.ModelDeploymentSpec) -> list[str]:
    rt = spec.runtime
    command = [
        "modelserve",
        f"--model-repository={MODEL_ROOT}",
        f"--http-port={HTTP_PORT}",
        f"--grpc-port={GRPC_PORT}",
        f"--metrics-port={METRICS_PORT}",
        f"--max-batch-size={rt.max_batch_size}",
        f"--max-queue-delay-us={rt.batching_delay_microseconds}",
        f"--max-queue-size={rt.max_queue_size}",
        f"--instance-count={rt.instance_count}",
        f"--graph-optimization-level={rt.graph_optimization_level}",
        f"--quantization={rt.quantization}",
        f"--quantization-tolerance={rt.quantization_tolerance}",
        f"--intra-op-threads={rt.intra_op_threads}",
        f"--workers={_workers(spec)}",
        f"--cache-dir={CACHE_ROOT}",
        *hardening.shutdown_flags(spec),
        "--log-format=json",
    ]
    command.extend(f"--preferred-batch-size={size}" for size in rt.preferred_batch_sizes)
    if spec.gpu is not None and spec.gpu.count > 0:
        command.append("--require-gpu")  # a CPU-only image fails the load instead of running on the CPU
    return command + hardening.security_flags(spec) + list(rt.args)


def _fetch_command(spec: api.ModelDeploymentSpec, model_dir: str, volume_size_limit: str) -> list[str]:
    model, storage = spec.model, spec.model.storage
    command = [
        "modelserve",
        "fetch",
        f"--uri={model.storage_uri}",
        f"--model-dir={model_dir}",
        f"--version={model.version}",
        f"--volume-size-limit={volume_size_limit}",
    ]
    if model.checksum is not None:
        command.append(f"--checksum={model.checksum}")
    if storage is not None and storage.s3_endpoint is not None:
        command.append(f"--s3-endpoint={storage.s3_endpoint}")
    if storage is not None and storage.s3_region is not None:
        command.append(f"--s3-region={storage.s3_region}")
    return command


def _fetch_env(spec: api.ModelDeploymentSpec) -> list[dict[str, Any]]:
    """The serving env, then the storage env (credentials reach only the init container)."""
    storage_env = spec.model.storage.env if spec.model.storage else []
    overridden = {e.name for e in storage_env}
    kept = [e for e in spec.runtime.env if e.name not in overridden]
    return [e.to_container() for e in [*kept, *storage_env]]


def _storage(spec: api.ModelDeploymentSpec) -> dict[str, Any]:
    """Volumes, mounts and the optional fetching init container for the model store."""
    source = parse_storage_uri(spec.model.storage_uri)
    model_dir = f"{MODEL_ROOT}/{spec.model.name}"
    storage = spec.model.storage
    size_limit = (storage.volume_size_limit if storage else None) or DEFAULT_VOLUME_SIZE_LIMIT
    volumes: list[dict[str, Any]] = [
        {"name": "cache", "emptyDir": {"sizeLimit": size_limit}},  # optimized models: at most the model's size
        {"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}},
    ]
    mounts: list[dict[str, Any]] = [
        {"name": "cache", "mountPath": CACHE_ROOT},
        {"name": "tmp", "mountPath": "/tmp"},
    ]
    if source.claim is not None:
        volumes.append({"name": "model-store", "persistentVolumeClaim": {"claimName": source.claim, "readOnly": True}})
        store_mount: dict[str, Any] = {"name": "model-store", "mountPath": model_dir, "readOnly": True}
        if source.sub_path:
            store_mount["subPath"] = source.sub_path
        ephemeral = hardening.ephemeral_storage(None, size_limit)
        return {"volumes": volumes, "volume_mounts": [*mounts, store_mount], "init_container": None, **ephemeral}
    volumes.append({"name": "model-store", "emptyDir": {"sizeLimit": size_limit}})
    init = {
        "command": _fetch_command(spec, model_dir, size_limit),
        "env": _fetch_env(spec),
        "env_from": [e.to_wire() for e in storage.env_from] if storage else [],
        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "1Gi"}},
        "volume_mounts": [{"name": "model-store", "mountPath": MODEL_ROOT}, {"name": "tmp", "mountPath": "/tmp"}],
    }
    return {
        "volumes": volumes,
        "volume_mounts": [*mounts, {"name": "model-store", "mountPath": MODEL_ROOT, "readOnly": True}],
        "init_container": init,
        **hardening.ephemeral_storage(size_limit, size_limit),
    }


def _scheduling(spec: api.ModelDeploymentSpec) -> dict[str, Any]:
    node_selector = dict(spec.pod.node_selector)
    tolerations = [t.to_wire() for t in spec.pod.tolerations]
    if spec.gpu is not None and spec.gpu.count > 0:
        if spec.gpu.product:
            node_selector["nvidia.com/gpu.product"] = spec.gpu.product
        if GPU_TOLERATION not in tolerations:
            tolerations.append(dict(GPU_TOLERATION))
    return {"node_selector": node_selector, "tolerations": tolerations, "affinity": spec.pod.affinity}


def _hardened(spec: api.ModelDeploymentSpec) -> dict[str, Any]:
    """Storage, resources and Secret volumes: ephemeral-storage bounds, auth and TLS files (modeldeploy.hardening)."""
    storage = _storage(spec)
    resources = _resources(spec)
    resources["requests"]["ephemeral-storage"] = storage.pop("request")
    resources["limits"]["ephemeral-storage"] = storage.pop("limit")
    volumes, mounts = hardening.security_volumes(spec)
    storage["volumes"] = [*storage["volumes"], *volumes]
    storage["volume_mounts"] = [*storage["volume_mounts"], *mounts]
    return {
        **storage,
        "resources": resources,
        "automount_service_account_token": hardening.automount_token(spec),
        "probe_scheme": hardening.probe_scheme(spec),
    }


def build_deployment_context(
    md: api.ModelDeployment,
    settings: RenderSettings,
    *,
    track: Track = "stable",
    replicas: int | None = None,
) -> dict[str, Any]:
    """Every value of a serving Deployment. `replicas=None` leaves the count to the HPA."""
    spec = md.spec
    revision = revision_of(spec, settings)
    selector = {LABEL_DEPLOYMENT: md.metadata.name, LABEL_TRACK: track}
    labels = {**common_labels(md), LABEL_TRACK: track, LABEL_REVISION: revision}
    pod_labels = {
        **spec.pod.labels,
        **labels,
        "app.kubernetes.io/version": str(spec.model.version),
    }
    pod_annotations = {
        **spec.pod.annotations,
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(METRICS_PORT),
        "prometheus.io/path": "/metrics",
    }
    return {
        "name": workload_name(md, track),
        "namespace": md.metadata.namespace,
        "labels": labels,
        "annotations": {
            LABEL_REVISION: revision,
            SPEC_ANNOTATION: json.dumps(spec.to_wire(), sort_keys=True, separators=(",", ":")),
        },
        "replicas": replicas,
        "deployment_strategy": (
            {"type": "Recreate"}
            if spec.rollout.strategy == "Recreate"
            else {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 0}}
        ),
        "selector": selector,
        "pod_labels": pod_labels,
        "pod_annotations": pod_annotations,
        "pod_security_context": {
            "runAsNonRoot": True,
            "runAsUser": RUN_AS_USER,
            "runAsGroup": RUN_AS_USER,
            "fsGroup": RUN_AS_USER,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "container_security_context": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "termination_grace_period_seconds": spec.pod.termination_grace_period_seconds,
        "service_account_name": spec.pod.service_account_name
        or (spec.model.storage.service_account_name if spec.model.storage else None),
        "priority_class_name": spec.pod.priority_class_name,
        "image_pull_secrets": [s.to_wire() for s in spec.pod.image_pull_secrets],
        "image": spec.runtime.image or settings.serving_image,
        "command": _server_command(spec),
        "env": [e.to_container() for e in spec.runtime.env],
        "ports": _ports(),
        "startup_failure_threshold": 120,
        **_scheduling(spec),
        **_hardened(spec),
    }


def build_service_context(md: api.ModelDeployment, track: Track | None = None) -> dict[str, Any]:
    """The Service of every track (`track=None`), or of one track (Gateway API backends)."""
    selector = {LABEL_DEPLOYMENT: md.metadata.name}
    if track is not None:
        selector[LABEL_TRACK] = track
    return {
        "name": md.metadata.name if track is None else track_service_name(md, track),
        "namespace": md.metadata.namespace,
        "labels": common_labels(md) if track is None else {**common_labels(md), LABEL_TRACK: track},
        "selector": selector,
        "ports": _ports(),
    }


def build_route_context(md: api.ModelDeployment, gateway: api.GatewayRef, canary_weight: int) -> dict[str, Any]:
    """An HTTPRoute or GRPCRoute splitting traffic between the stable and canary Services."""
    port = GRPC_PORT if gateway.route_kind == "GRPCRoute" else HTTP_PORT
    parent: dict[str, Any] = {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": gateway.name}
    if gateway.namespace:
        parent["namespace"] = gateway.namespace
    if gateway.section_name:
        parent["sectionName"] = gateway.section_name
    name = md.metadata.name
    return {
        "kind": gateway.route_kind,
        "name": name,
        "namespace": md.metadata.namespace,
        "labels": common_labels(md),
        "parent_refs": [parent],
        "hostnames": list(gateway.hostnames),
        "backend_refs": [
            {"name": track_service_name(md, "stable"), "port": port, "weight": 100 - canary_weight},
            {"name": track_service_name(md, "canary"), "port": port, "weight": canary_weight},
        ],
    }


def _milli_quantity(value: float) -> str:
    milli = round(value * 1000)
    return str(milli // 1000) if milli % 1000 == 0 else f"{milli}m"


def build_hpa_context(md: api.ModelDeployment, autoscaling: api.AutoscalingSpec) -> dict[str, Any]:
    metrics: list[dict[str, Any]] = []
    for resource, target in (
        ("cpu", autoscaling.target_cpu_utilization),
        ("memory", autoscaling.target_memory_utilization),
    ):
        if target is not None:
            metrics.append(
                {
                    "type": "Resource",
                    "resource": {"name": resource, "target": {"type": "Utilization", "averageUtilization": target}},
                }
            )
    for metric, value in (
        ("modeldeploy_inference_rate", autoscaling.target_inference_rate),
        ("modeldeploy_queue_time_ms", autoscaling.target_queue_time_ms),
    ):
        if value is not None:
            metrics.append(
                {
                    "type": "Pods",
                    "pods": {
                        "metric": {"name": metric},
                        "target": {"type": "AverageValue", "averageValue": _milli_quantity(value)},
                    },
                }
            )
    return {
        "name": md.metadata.name,
        "namespace": md.metadata.namespace,
        "labels": common_labels(md),
        "target": workload_name(md, "stable"),
        "min_replicas": autoscaling.min_replicas,
        "max_replicas": autoscaling.max_replicas,
        "metrics": metrics,
        "scale_down_stabilization_seconds": autoscaling.scale_down_stabilization_seconds,
    }


def build_pdb_context(md: api.ModelDeployment) -> dict[str, Any]:
    return {
        "name": md.metadata.name,
        "namespace": md.metadata.namespace,
        "labels": common_labels(md),
        "selector": {LABEL_DEPLOYMENT: md.metadata.name},
    }


@cache
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("modeldeploy", "templates"),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
        auto_reload=False,  # the templates ship with the package: no stat of each file per render
    )
    # Globals such as `namespace` would stand in for a missing context value.
    env.globals.clear()
    env.filters["tojson"] = _tojson
    return env


# Characters YAML does not take raw (C1 controls, DEL, non-characters, surrogates): escaped.
# Everything else, astral planes included, is written as is: libyaml rejects the
# surrogate-pair escapes that json.dumps would use for them.
_YAML_UNPRINTABLE = re.compile("[\x7f-\x9f\ud800-\udfff\ufffe\uffff]")


def _tojson(value: Any) -> str:
    """JSON (a YAML subset) for one value; an undefined value fails loudly, never renders."""
    if isinstance(value, jinja2.Undefined):
        value._fail_with_undefined_error()
    text = json.dumps(value, sort_keys=True, ensure_ascii=False)
    return _YAML_UNPRINTABLE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def render_template(template: str, context: dict[str, Any]) -> dict[str, Any]:
    """Render one template and parse it back into one object."""
    text = _environment().get_template(template).render(**context)
    try:
        obj = yaml.load(text, Loader=_YAML_LOADER)
    except yaml.YAMLError as exc:
        raise RenderError(f"{template} rendered invalid YAML: {exc}") from None
    if not isinstance(obj, dict) or not obj.get("apiVersion") or not obj.get("kind"):
        raise RenderError(f"{template} did not render to a Kubernetes object")
    if not obj.get("metadata", {}).get("name"):
        raise RenderError(f"{template} rendered an object without metadata.name")
    return obj


def render(
    md: api.ModelDeployment, settings: RenderSettings | None = None, plan: RolloutPlan | None = None
) -> list[dict[str, Any]]:
    """Every object a ModelDeployment needs; `plan` (modeldeploy.rollout) adds a canary track."""
    settings = settings or RenderSettings()
    spec = md.spec
    stable_spec, stable_replicas = spec, (None if spec.autoscaling is not None else spec.effective_replicas)
    canary_weight = 0
    if plan is not None:
        stable_spec, stable_replicas, canary_weight = plan.stable.spec, plan.stable.replicas, plan.weight
    stable_md = md if stable_spec is spec else md.model_copy(update={"spec": stable_spec})
    objects = [
        render_template(
            "deployment.yaml.j2",
            build_deployment_context(stable_md, settings, track="stable", replicas=stable_replicas),
        )
    ]
    if plan is not None and plan.canary is not None:
        canary_md = md.model_copy(update={"spec": plan.canary.spec})
        context = build_deployment_context(canary_md, settings, track="canary", replicas=plan.canary.replicas)
        objects.append(render_template("deployment.yaml.j2", context))
    objects.append(render_template("service.yaml.j2", build_service_context(md)))
    if spec.rollout.gateway is not None:
        for track in TRACKS:
            objects.append(render_template("service.yaml.j2", build_service_context(md, track)))
        objects.append(render_template("route.yaml.j2", build_route_context(md, spec.rollout.gateway, canary_weight)))
    if spec.autoscaling is not None and spec.autoscaling.engine == "KEDA":
        context = keda.build_scaled_object_context(
            md, spec.autoscaling, common_labels(md), workload_name(md, "stable"), settings.prometheus_url
        )
        objects.append(render_template("scaledobject.yaml.j2", context))
    elif spec.autoscaling is not None:
        objects.append(render_template("hpa.yaml.j2", build_hpa_context(md, spec.autoscaling)))
    if needs_disruption_budget(spec):
        objects.append(render_template("pdb.yaml.j2", build_pdb_context(md)))
    if hardening.wants_network_policy(spec):
        context = hardening.build_network_policy_context(
            md, common_labels(md), {LABEL_DEPLOYMENT: md.metadata.name}, PORTS
        )
        objects.append(render_template("networkpolicy.yaml.j2", context))
    if monitoring.wants_pod_monitor(spec):
        context = monitoring.build_pod_monitor_context(md, common_labels(md), {LABEL_DEPLOYMENT: md.metadata.name})
        objects.append(render_template("podmonitor.yaml.j2", context))
    return [_owned(obj, md) for obj in objects]


def owner_reference(md: api.ModelDeployment) -> dict[str, Any]:
    """The controller reference every child carries: garbage collection and the child watch use it.

    Rendered offline (no uid yet) it has no uid; the operator renders from the live object.
    """
    reference: dict[str, Any] = {
        "apiVersion": api.API_VERSION,
        "kind": api.KIND,
        "name": md.metadata.name,
        "uid": md.metadata.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }
    return {key: value for key, value in reference.items() if value is not None}


def _owned(obj: dict[str, Any], md: api.ModelDeployment) -> dict[str, Any]:
    """Owner reference, and the ModelDeployment's own labels under the operator's (which win)."""
    metadata = obj["metadata"]
    metadata["labels"] = {**md.metadata.labels, **metadata.get("labels", {})}
    metadata["ownerReferences"] = [owner_reference(md)]
    return obj


def needs_disruption_budget(spec: api.ModelDeploymentSpec) -> bool:
    """A PDB only helps when more than one pod serves: with one it would block node drains."""
    return spec.effective_replicas > 1


def to_yaml(objects: list[dict[str, Any]]) -> str:
    return yaml.safe_dump_all(objects, sort_keys=False, default_flow_style=False)
