"""The ModelDeployment API (`modeldeploy.io/v1alpha1`) as pydantic models.

These models are the single source of truth: the CRD in `crds/` is generated from
them (`modeldeploy crd`), the renderer reads them, and every cross-field rule is
enforced here and, as CEL, by the API server.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    WithJsonSchema,
    model_validator,
)
from pydantic.alias_generators import to_camel

from modeldeploy import cel
from modeldeploy.apibase import ApiModel
from modeldeploy.securityapi import SecuritySpec
from modeldeploy.storageapi import CHECKSUM_PATTERN, MODEL_SOURCE_RULES, EnvVar, ModelStorage, storage_problem
from modelserve.contract import DEFAULT_MAX_QUEUE_SIZE

GROUP = "modeldeploy.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "ModelDeployment"
PLURAL = "modeldeployments"
SINGULAR = "modeldeployment"
SHORT_NAMES = ["md"]
CATEGORIES = ["ml", "all"]

QUANTITY_PATTERN = (
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
    r"(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
DURATION_PATTERN = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"
_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
DNS_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
LABEL_KEY_PATTERN = cel.LABEL_KEY_REGEX


def _number_to_str(value: Any) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return str(value)
    return value


Quantity = Annotated[
    str,
    BeforeValidator(_number_to_str),
    StringConstraints(pattern=QUANTITY_PATTERN),
    # As Kubernetes declares resource.Quantity: exactly these two bare branches (anything
    # inside them makes the schema non-structural), the pattern beside them.
    WithJsonSchema(
        {
            "x-kubernetes-int-or-string": True,
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "pattern": QUANTITY_PATTERN,
        }
    ),
]
Duration = Annotated[str, StringConstraints(pattern=DURATION_PATTERN, max_length=32)]
DnsLabel = Annotated[str, StringConstraints(pattern=DNS_LABEL_PATTERN, max_length=63)]
MAX_MAP_ENTRIES = 64
# The API server has no patternProperties: keys are checked by CEL (cel.MAP_KEYS_ARE_LABEL_KEYS),
# with the entry count bounded so the rule's cost estimate stays within the server's budget.
LabelMap = Annotated[
    dict[Annotated[str, StringConstraints(pattern=LABEL_KEY_PATTERN, max_length=253)], str],
    Field(max_length=MAX_MAP_ENTRIES),
    WithJsonSchema(
        {
            "type": "object",
            "additionalProperties": {"type": "string"},
            "maxProperties": MAX_MAP_ENTRIES,
            **cel.schema_extra(cel.MAP_KEYS_ARE_LABEL_KEYS),
        }
    ),
]


_QUANTITY_SUFFIXES = {
    "n": 1e-9, "u": 1e-6, "m": 1e-3, "": 1.0, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18,
    "Ki": 2.0**10, "Mi": 2.0**20, "Gi": 2.0**30, "Ti": 2.0**40, "Pi": 2.0**50, "Ei": 2.0**60,
}  # fmt: skip


def quantity_value(text: str) -> float:
    """The number a Kubernetes quantity stands for: `500m` is 0.5, `2Gi` is 2147483648, `1e3` is 1000."""
    match = re.fullmatch(r"([+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))([eE][+-]?[0-9]+|[KMGTPE]i|[numkMGTPE])?", text)
    if match is None:
        raise ValueError(f"invalid quantity {text!r}: use e.g. 500m, 2, 512Mi")
    number, suffix = match[1], match[2] or ""
    if suffix in _QUANTITY_SUFFIXES:
        return float(number) * _QUANTITY_SUFFIXES[suffix]
    return float(number + suffix)  # a decimal exponent


def duration_seconds(value: str) -> float:
    """Seconds in a Kubernetes-style duration string such as `1m30s` or `500ms`."""
    if not re.fullmatch(DURATION_PATTERN, value):
        raise ValueError(f"invalid duration {value!r}: use e.g. 30s, 1m, 1m30s, 500ms")
    return sum(float(n) * _DURATION_UNITS[u] for n, u in _DURATION_PART.findall(value))


class ModelSource(ApiModel):
    """Which model to serve and where it is stored."""

    model_config = ConfigDict(json_schema_extra=cel.schema_extra(*MODEL_SOURCE_RULES))

    name: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9]([A-Za-z0-9_.-]*[A-Za-z0-9])?$", max_length=63)] = (
        Field(description="Model name in the serving repository; clients address it as /v2/models/<name>.")
    )
    storage_uri: Annotated[str, StringConstraints(pattern=r"^(pvc|https?|s3|gs)://[^\s]+$", max_length=2048)] = Field(
        description=(
            "Where the model lives: pvc://<claim>/<path> (mounted read-only), http(s)://… (a .onnx file"
            " or a .tar.gz/.zip of a Triton model directory), s3://bucket/prefix or gs://bucket/prefix"
            " (a Triton model directory)."
        )
    )
    version: int = Field(default=1, ge=1, le=1_000_000, description="Model version directory to serve.")
    format: Literal["onnx"] = Field(default="onnx", description="Model format. Only onnx is supported.")
    checksum: Annotated[str, StringConstraints(pattern=CHECKSUM_PATTERN)] | None = Field(
        default=None,
        description="sha256:<64 hex digits> of the fetched file (the .onnx or archive); a mismatch fails the fetch.",
    )
    storage: ModelStorage | None = Field(
        default=None, description="Credentials, endpoint and volume size for fetching the model (not for pvc://)."
    )

    @model_validator(mode="after")
    def _storage_rules(self) -> ModelSource:
        problem = storage_problem(self.storage_uri, self.checksum, self.storage)
        if problem is not None:
            raise ValueError(problem)
        return self


class RuntimeSpec(ApiModel):
    """The serving runtime: image, batching, optimization and threads."""

    image: Annotated[str, StringConstraints(min_length=1, max_length=512)] | None = Field(
        default=None, description="Serving image; defaults to the operator's configured serving image."
    )
    max_batch_size: int = Field(
        default=8,
        ge=0,
        le=4096,
        description="Largest batch the dynamic batcher forms; 0 disables batching.",
    )
    batching_delay_microseconds: int = Field(
        default=500,
        ge=0,
        le=1_000_000,
        description="How long a request may wait for others to join its batch (Triton's max_queue_delay_microseconds).",
    )
    preferred_batch_sizes: list[Annotated[int, Field(ge=1, le=4096)]] = Field(
        default_factory=list, max_length=8, description="Batch sizes the batcher dispatches as soon as reached."
    )
    max_queue_size: int = Field(
        default=DEFAULT_MAX_QUEUE_SIZE,
        ge=1,
        le=1_000_000,
        description="Requests queued per model before new ones are refused with HTTP 503 / gRPC UNAVAILABLE.",
    )
    instance_count: int = Field(
        default=1, ge=1, le=16, description="ONNX Runtime sessions per model (Triton's instance_group count)."
    )
    graph_optimization_level: Literal["disabled", "basic", "extended", "all"] = Field(
        default="all", description="ONNX Runtime graph optimization level."
    )
    quantization: Literal["none", "dynamic-int8"] = Field(
        default="none", description="Quantize the model at load time: none, or dynamic INT8 weights."
    )
    quantization_tolerance: float = Field(
        default=0.05,
        gt=0,
        le=1000,
        description="Largest absolute output difference from FP32 accepted for a quantized model.",
    )
    intra_op_threads: int = Field(
        default=0, ge=0, le=256, description="ONNX Runtime intra-op threads per session; 0 lets it choose."
    )
    env: list[EnvVar] = Field(default_factory=list, max_length=64, description="Extra environment variables.")
    args: list[Annotated[str, StringConstraints(max_length=1024)]] = Field(
        default_factory=list, max_length=64, description="Extra arguments appended to the server's command line."
    )


class ResourceList(ApiModel):
    """CPU and memory quantities."""

    cpu: Quantity | None = Field(default=None, description="CPU, e.g. 500m or 2.")
    memory: Quantity | None = Field(default=None, description="Memory, e.g. 512Mi or 4Gi.")


class Resources(ApiModel):
    """CPU and memory requests and limits of the serving container (GPUs go under gpu)."""

    requests: ResourceList = Field(
        default_factory=lambda: ResourceList(cpu="500m", memory="512Mi"),
        description="Guaranteed resources; the scheduler places pods by these.",
    )
    limits: ResourceList = Field(default_factory=lambda: ResourceList(memory="2Gi"), description="Resource ceilings.")


class GpuSpec(ApiModel):
    """GPUs for each serving pod. The NVIDIA toleration is added automatically."""

    model_config = ConfigDict(json_schema_extra=cel.schema_extra(cel.MIG_NEEDS_PRODUCT, cel.MIG_NEEDS_GPU))

    count: int = Field(default=1, ge=0, le=16, description="GPUs (or MIG slices) per pod.")
    product: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=63)] | None = Field(
        default=None, description="GPU model; becomes the nvidia.com/gpu.product node selector."
    )
    mig_profile: Annotated[str, StringConstraints(pattern=r"^[0-9]+g\.[0-9]+gb$", max_length=16)] | None = Field(
        default=None, description="MIG profile such as 1g.5gb; requests nvidia.com/mig-<profile> instead of whole GPUs."
    )

    @model_validator(mode="after")
    def _mig_rules(self) -> GpuSpec:
        if self.mig_profile is not None and self.product is None:
            raise ValueError(f"migProfile: {cel.MIG_NEEDS_PRODUCT.message}")
        if self.mig_profile is not None and self.count <= 0:
            raise ValueError(f"count: {cel.MIG_NEEDS_GPU.message}")
        return self

    @property
    def resource_name(self) -> str:
        return f"nvidia.com/mig-{self.mig_profile}" if self.mig_profile else "nvidia.com/gpu"


class AutoscalingSpec(ApiModel):
    """Autoscaling of the serving pods: a HorizontalPodAutoscaler, or a KEDA ScaledObject."""

    model_config = ConfigDict(
        json_schema_extra=cel.schema_extra(
            cel.AUTOSCALING_MIN_LE_MAX, cel.AUTOSCALING_HAS_TARGET, cel.AUTOSCALING_ZERO_NEEDS_KEDA
        )
    )

    engine: Literal["HPA", "KEDA"] = Field(
        default="HPA",
        description=(
            "HPA: a HorizontalPodAutoscaler (custom metrics through prometheus-adapter). KEDA: a KEDA"
            " ScaledObject reading Prometheus directly, which can scale to zero (minReplicas: 0)."
        ),
    )
    min_replicas: int = Field(default=1, ge=0, le=1000, description="Fewest replicas; 0 only with engine KEDA.")
    max_replicas: int = Field(ge=1, le=1000, description="Most replicas.")
    target_cpu_utilization: int | None = Field(
        default=None, ge=1, le=1000, alias="targetCPUUtilization", description="Average CPU, % of request."
    )
    target_memory_utilization: int | None = Field(
        default=None, ge=1, le=1000, description="Average memory, % of request."
    )
    target_inference_rate: float | None = Field(
        default=None,
        gt=0,
        le=1_000_000,
        description="Inferences per second per pod (custom metric modeldeploy_inference_rate).",
    )
    target_queue_time_ms: float | None = Field(
        default=None,
        gt=0,
        le=3_600_000,
        description="Average queue time per request in ms, per pod (custom metric modeldeploy_queue_time_ms).",
    )
    scale_down_stabilization_seconds: int = Field(
        default=300, ge=0, le=3600, description="How long a lower recommendation must hold before scaling down."
    )

    @model_validator(mode="after")
    def _rules(self) -> AutoscalingSpec:
        if self.min_replicas > self.max_replicas:
            raise ValueError(
                f"minReplicas ({self.min_replicas}) must be less than or equal to maxReplicas ({self.max_replicas})"
            )
        targets = (
            self.target_cpu_utilization,
            self.target_memory_utilization,
            self.target_inference_rate,
            self.target_queue_time_ms,
        )
        if all(t is None for t in targets):
            raise ValueError(cel.AUTOSCALING_HAS_TARGET.message)
        wakes_from_zero = self.target_inference_rate is not None or self.target_queue_time_ms is not None
        if self.min_replicas == 0 and not (self.engine == "KEDA" and wakes_from_zero):
            raise ValueError(f"minReplicas: {cel.AUTOSCALING_ZERO_NEEDS_KEDA.message}")
        return self


class CustomCheck(ApiModel):
    """A PromQL check run at each analysis interval.

    The query is a template; {{name}}, {{namespace}}, {{track}}, {{revision}} and {{interval}}
    are replaced before it is sent. It must return one number.
    """

    model_config = ConfigDict(json_schema_extra=cel.schema_extra(cel.CHECK_HAS_BOUND, cel.CHECK_MIN_LE_MAX))

    name: DnsLabel = Field(description="Check name, shown in status and events.")
    query: Annotated[str, StringConstraints(min_length=1, max_length=4096)] = Field(
        description="PromQL template returning a single value."
    )
    min: float | None = Field(default=None, description="The check fails when the value is below this.")
    max: float | None = Field(default=None, description="The check fails when the value is above this.")

    @model_validator(mode="after")
    def _rules(self) -> CustomCheck:
        if self.min is None and self.max is None:
            raise ValueError(cel.CHECK_HAS_BOUND.message)
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) must be less than or equal to max ({self.max})")
        return self


class GatewayRef(ApiModel):
    """A Gateway API parent: traffic is split with exact weights by an HTTPRoute or GRPCRoute."""

    name: DnsLabel = Field(description="Gateway name.")
    namespace: DnsLabel | None = Field(default=None, description="Gateway namespace; defaults to the resource's.")
    section_name: DnsLabel | None = Field(default=None, description="Listener of the Gateway to attach to.")
    route_kind: Literal["HTTPRoute", "GRPCRoute"] = Field(default="HTTPRoute", description="Route kind to create.")
    hostnames: list[Annotated[str, StringConstraints(max_length=253)]] = Field(
        default_factory=list, max_length=16, description="Hostnames the route answers for."
    )


class RolloutSpec(ApiModel):
    """How a new revision replaces the running one."""

    model_config = ConfigDict(json_schema_extra=cel.schema_extra(cel.STEPS_INCREASING, cel.CANARY_NEEDS_STEPS))

    strategy: Literal["Canary", "RollingUpdate", "Recreate"] = Field(
        default="Canary",
        description="Canary shifts traffic step by step under analysis; RollingUpdate and Recreate skip the canary.",
    )
    steps: list[Annotated[int, Field(ge=1, le=100)]] = Field(
        default_factory=lambda: [10, 25, 50],
        max_length=cel.MAX_STEPS,
        description="Canary traffic weights in percent, strictly increasing; promotion follows the last step.",
    )
    interval: Duration = Field(default="1m", description="Analysis interval, e.g. 30s or 1m.")
    max_error_rate: float = Field(
        default=0.01, ge=0, le=1, description="Highest accepted failed/all request ratio per interval."
    )
    max_latency_p99_ms: float | None = Field(
        default=500, gt=0, le=3_600_000, description="Highest accepted p99 request latency per interval, ms."
    )
    min_request_count: int = Field(
        default=50,
        ge=0,
        le=100_000_000,
        description="Canary requests needed per interval for a conclusive analysis.",
    )
    failure_limit: int = Field(default=2, ge=1, le=100, description="Failed analyses that roll back.")
    inconclusive_limit: int = Field(
        default=3, ge=1, le=100, description="Consecutive inconclusive analyses that pause the rollout."
    )
    checks: list[CustomCheck] = Field(default_factory=list, max_length=16, description="Custom PromQL checks.")
    gateway: GatewayRef | None = Field(
        default=None, description="Split traffic through this Gateway instead of by replica ratio."
    )

    @model_validator(mode="after")
    def _rules(self) -> RolloutSpec:
        for before, after in zip(self.steps, self.steps[1:], strict=False):
            if after <= before:
                raise ValueError(f"steps must be strictly increasing canary weights: {before} then {after}")
        if self.strategy == "Canary" and not self.steps:
            raise ValueError(cel.CANARY_NEEDS_STEPS.message)
        return self

    @property
    def interval_seconds(self) -> float:
        return duration_seconds(self.interval)


class Toleration(ApiModel):
    """A pod toleration (core/v1 Toleration)."""

    key: Annotated[str, StringConstraints(max_length=253)] | None = Field(default=None, description="Taint key.")
    operator: Literal["Exists", "Equal"] = Field(default="Equal", description="Exists or Equal.")
    value: Annotated[str, StringConstraints(max_length=63)] | None = Field(default=None, description="Taint value.")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        default=None, description="Taint effect; empty matches all."
    )
    toleration_seconds: int | None = Field(default=None, description="How long a NoExecute taint is tolerated.")


class LocalObjectReference(ApiModel):
    """A reference to an object in the same namespace."""

    name: DnsLabel = Field(description="Object name.")


class PodSettings(ApiModel):
    """Pod-level settings passed through to the serving pods."""

    node_selector: LabelMap = Field(default_factory=dict, description="Node labels the pods must match.")
    tolerations: list[Toleration] = Field(default_factory=list, max_length=32, description="Extra tolerations.")
    affinity: dict[str, Any] | None = Field(
        default=None,
        description="core/v1 Affinity, passed through unchanged.",
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
    )
    priority_class_name: DnsLabel | None = Field(default=None, description="PriorityClass of the pods.")
    service_account_name: DnsLabel | None = Field(default=None, description="ServiceAccount the pods run as.")
    image_pull_secrets: list[LocalObjectReference] = Field(
        default_factory=list, max_length=16, description="Secrets for pulling the serving image."
    )
    labels: LabelMap = Field(default_factory=dict, description="Extra pod labels.")
    annotations: LabelMap = Field(default_factory=dict, description="Extra pod annotations.")
    termination_grace_period_seconds: int = Field(
        default=30, ge=1, le=3600, description="Time given to finish in-flight requests on shutdown."
    )
    shutdown_delay_seconds: int | None = Field(
        default=None,
        ge=0,
        le=300,
        description=(
            "After SIGTERM the pod reports not ready but serves this long (default 5; closing keep-alive"
            " connections) while endpoints propagate, then drains for the rest of terminationGracePeriodSeconds"
            " (capped at it less 3)."
        ),
    )


class MonitoringSpec(ApiModel):
    """Prometheus scraping of the serving pods (docs/monitoring.md)."""

    pod_monitor: bool = Field(
        default=False,
        description=(
            "Render a Prometheus Operator PodMonitor (monitoring.coreos.com/v1) scraping both tracks with the"
            " labels canary analysis and autoscaling select; needs the PodMonitor CRD."
        ),
    )
    interval: Duration = Field(default="15s", description="Scrape interval of the PodMonitor.")
    labels: LabelMap = Field(
        default_factory=dict, description="Extra PodMonitor labels, e.g. the Prometheus' podMonitorSelector."
    )


class ModelDeploymentSpec(ApiModel):
    """Desired state of a served model."""

    model_config = ConfigDict(
        json_schema_extra=cel.schema_extra(cel.SPEC_REPLICAS_WITH_AUTOSCALING, cel.STORAGE_SERVICE_ACCOUNT_MATCHES_POD)
    )

    model: ModelSource = Field(description="The model to serve.")
    runtime: RuntimeSpec = Field(default_factory=RuntimeSpec, description="Serving runtime settings.")
    replicas: int | None = Field(
        default=None, ge=0, le=1000, description="Fixed replica count (default 1); leave unset with autoscaling."
    )
    resources: Resources = Field(default_factory=Resources, description="CPU and memory.")
    gpu: GpuSpec | None = Field(default=None, description="GPU scheduling; omit for CPU serving.")
    autoscaling: AutoscalingSpec | None = Field(default=None, description="Horizontal autoscaling.")
    rollout: RolloutSpec = Field(default_factory=RolloutSpec, description="Rollout strategy and canary analysis.")
    pod: PodSettings = Field(default_factory=PodSettings, description="Pod-level pass-through settings.")
    monitoring: MonitoringSpec | None = Field(default=None, description="Prometheus scraping of the serving pods.")
    security: SecuritySpec | None = Field(default=None, description="Inference auth, TLS and NetworkPolicy.")

    @model_validator(mode="after")
    def _rules(self) -> ModelDeploymentSpec:
        if self.autoscaling is not None and self.replicas is not None:
            raise ValueError(f"replicas: {cel.SPEC_REPLICAS_WITH_AUTOSCALING.message}")
        storage_account = self.model.storage.service_account_name if self.model.storage else None
        if storage_account and self.pod.service_account_name not in (None, storage_account):
            raise ValueError(f"model.storage.serviceAccountName: {cel.STORAGE_SERVICE_ACCOUNT_MATCHES_POD.message}")
        return self

    @property
    def effective_replicas(self) -> int:
        if self.autoscaling is not None:
            return self.autoscaling.min_replicas
        return 1 if self.replicas is None else self.replicas


class Condition(ApiModel):
    """A status condition, as metav1.Condition."""

    model_config = ConfigDict(extra="ignore")

    type: str = Field(description="Ready, Progressing or Degraded.")
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    reason: str = Field(default="", description="One CamelCase word for why.")
    message: str = Field(default="", description="What happened, for people.")
    last_transition_time: str | None = Field(default=None, description="When status last changed (RFC 3339).")
    observed_generation: int | None = Field(default=None, description="The generation this condition is about.")


class AnalysisResult(ApiModel):
    """The outcome of one check at one analysis interval."""

    model_config = ConfigDict(extra="ignore")

    check: str = Field(description="Check name (error-rate, latency-p99 or a custom check).")
    query: str = Field(default="", description="The PromQL that was run.")
    value: float | None = Field(default=None, description="The value; absent when the query returned no data.")
    min: float | None = Field(default=None, description="Lower threshold.")
    max: float | None = Field(default=None, description="Upper threshold.")
    outcome: Literal["Pass", "Fail", "Inconclusive", "Error"] = Field(description="Pass, Fail, Inconclusive or Error.")
    time: str | None = Field(default=None, description="When the analysis ran (RFC 3339).")


class CanaryStatus(ApiModel):
    """Progress of a running canary."""

    model_config = ConfigDict(extra="ignore")

    revision: str | None = Field(default=None, description="Revision under test.")
    step: int = Field(default=0, description="Index of the current step.")
    weight: int = Field(default=0, description="Percent of traffic sent to the canary.")
    failures: int = Field(default=0, description="Failed analyses so far.")
    inconclusive: int = Field(default=0, description="Consecutive inconclusive analyses.")
    step_started_at: str | None = Field(
        default=None, description="When the current step's analysis clock started: the canary was ready (RFC 3339)."
    )
    last_command: str | None = Field(
        default=None,
        description="The last modeldeploy.io/rollout annotation value acted on (promote, abort, pause, resume).",
    )
    last_analysis: list[AnalysisResult] = Field(default_factory=list, description="Results of the last analysis.")


class ModelDeploymentStatus(ApiModel):
    """Observed state, written by the operator to the status subresource only."""

    model_config = ConfigDict(extra="ignore")

    observed_generation: int | None = Field(default=None, description="The spec generation last reconciled.")
    phase: Literal["Pending", "Progressing", "Paused", "Promoting", "Succeeded", "RolledBack", "Failed"] | None = Field(
        default=None, description="Rollout phase."
    )
    conditions: list[Condition] = Field(default_factory=list, description="Ready, Progressing and Degraded.")
    replicas: int | None = Field(default=None, description="Serving pods.")
    ready_replicas: int | None = Field(default=None, description="Serving pods that are ready.")
    url: str | None = Field(default=None, description="In-cluster HTTP (KServe V2) endpoint.")
    grpc_url: str | None = Field(default=None, description="In-cluster gRPC endpoint.")
    revision: str | None = Field(default=None, description="Revision currently desired (hash of the pod template).")
    stable_revision: str | None = Field(default=None, description="Revision serving as stable.")
    rejected_revision: str | None = Field(default=None, description="Last revision rolled back; not retried.")
    canary: CanaryStatus | None = Field(default=None, description="Canary progress while one runs.")


class ObjectMeta(BaseModel):
    """The parts of metav1.ObjectMeta the operator reads."""

    model_config = ConfigDict(extra="allow", populate_by_name=True, alias_generator=to_camel)

    name: DnsLabel = Field(description="Resource name.")
    namespace: str = Field(default="default", description="Resource namespace.")
    uid: str | None = None
    generation: int | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _name_length(self) -> ObjectMeta:
        if len(self.name) > 48:
            raise ValueError(f"name: {cel.RESOURCE_NAME_LENGTH.message}")
        return self


class ModelDeployment(BaseModel):
    """A model served by the modeldeploy operator."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    api_version: Literal["modeldeploy.io/v1alpha1"] = Field(default=API_VERSION, alias="apiVersion")
    kind: Literal["ModelDeployment"] = KIND
    metadata: ObjectMeta
    spec: ModelDeploymentSpec
    status: ModelDeploymentStatus | None = None

    def to_wire(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


class SpecError(ValueError):
    """A ModelDeployment that does not validate; `problems` are 'field.path: message' lines."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def _error_line(error: Any) -> str:
    path = ".".join(str(part) for part in error["loc"]) or "(root)"
    message = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        message = "unknown field"
    elif error["type"] == "missing":
        message = "required field is missing"
    if error["type"] not in ("missing", "extra_forbidden", "value_error") and "input" in error:
        given = error["input"]
        if isinstance(given, str | int | float | bool):
            message = f"{message} (got {given!r})"
    return f"{path}: {message}"


def describe_validation_error(exc: ValidationError) -> list[str]:
    """pydantic's errors as 'spec.field.path: message' lines, one per problem."""
    return [_error_line(error) for error in exc.errors()]


def parse_model_deployment(obj: Any) -> ModelDeployment:
    """Validate a ModelDeployment object (a dict from YAML or the API); raise SpecError."""
    if not isinstance(obj, dict):
        raise SpecError([f"(root): expected a mapping, got {type(obj).__name__}"])
    try:
        return ModelDeployment.model_validate(obj)
    except ValidationError as exc:
        raise SpecError(describe_validation_error(exc)) from None
