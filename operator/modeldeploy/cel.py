"""CEL validation rules shared by the pydantic models and the generated CRD.

Each rule is written once, here, as the CEL expression the API server evaluates
(`x-kubernetes-validations`). The pydantic models enforce the same rule in Python
so that `modeldeploy render` and the operator reject what `kubectl apply` rejects;
tests evaluate every CEL expression with a CEL interpreter against the same cases.

Only standard CEL is used (no Kubernetes-only list/quantity libraries) so that a
stock interpreter can check each rule.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class CelRule:
    """One `x-kubernetes-validations` entry."""

    rule: str
    message: str
    field_path: str | None = None
    reason: str = "FieldValueInvalid"

    def to_schema(self) -> dict[str, Any]:
        out: dict[str, Any] = {"rule": self.rule, "message": self.message, "reason": self.reason}
        if self.field_path:
            out["fieldPath"] = self.field_path
        return out


def schema_extra(*rules: CelRule) -> dict[str, Any]:
    """`json_schema_extra` for a pydantic model carrying these CEL rules."""
    return {"x-kubernetes-validations": [r.to_schema() for r in rules]}


# CEL has no ranges; a literal index list bounded by the list's maxItems stands in.
MAX_STEPS = 20
_INDICES = "[" + ", ".join(str(i) for i in range(MAX_STEPS - 1)) + "]"

AUTOSCALING_MIN_LE_MAX = CelRule(
    rule="!has(self.minReplicas) || self.minReplicas <= self.maxReplicas",
    message="minReplicas must be less than or equal to maxReplicas",
    field_path=".minReplicas",
)
AUTOSCALING_HAS_TARGET = CelRule(
    rule=(
        "has(self.targetCPUUtilization) || has(self.targetMemoryUtilization)"
        " || has(self.targetInferenceRate) || has(self.targetQueueTimeMs)"
    ),
    message=(
        "autoscaling needs at least one target: targetCPUUtilization, targetMemoryUtilization,"
        " targetInferenceRate or targetQueueTimeMs"
    ),
    reason="FieldValueRequired",
)
AUTOSCALING_ZERO_NEEDS_KEDA = CelRule(
    rule=(
        "!has(self.minReplicas) || self.minReplicas > 0 || (has(self.engine) && self.engine == 'KEDA'"
        " && (has(self.targetInferenceRate) || has(self.targetQueueTimeMs)))"
    ),
    message=(
        "minReplicas 0 (scale to zero) needs engine KEDA and targetInferenceRate or targetQueueTimeMs:"
        " CPU and memory cannot wake a model that has no pods"
    ),
    field_path=".minReplicas",
)
STEPS_INCREASING = CelRule(
    rule=(f"!has(self.steps) || {_INDICES}.all(i, i >= size(self.steps) - 1 || self.steps[i] < self.steps[i + 1])"),
    message="steps must be strictly increasing canary weights",
    field_path=".steps",
)
CANARY_NEEDS_STEPS = CelRule(
    rule="!has(self.strategy) || self.strategy != 'Canary' || (has(self.steps) && size(self.steps) > 0)",
    message="a Canary rollout needs at least one step",
    field_path=".steps",
    reason="FieldValueRequired",
)
MIG_NEEDS_PRODUCT = CelRule(
    rule="!has(self.migProfile) || has(self.product)",
    message="migProfile needs product (the GPU model the MIG profile is carved from)",
    field_path=".migProfile",
    reason="FieldValueRequired",
)
MIG_NEEDS_GPU = CelRule(
    rule="!has(self.migProfile) || !has(self.count) || self.count > 0",
    message="migProfile needs count > 0",
    field_path=".count",
)
CHECK_HAS_BOUND = CelRule(
    rule="has(self.min) || has(self.max)",
    message="a custom check needs min, max or both",
    reason="FieldValueRequired",
)
CHECK_MIN_LE_MAX = CelRule(
    rule="!has(self.min) || !has(self.max) || self.min <= self.max",
    message="min must be less than or equal to max",
    field_path=".min",
)
# The API server allows only the reasons FieldValueInvalid, FieldValueRequired,
# FieldValueForbidden and FieldValueDuplicate, and a fieldPath only into declared properties
# (metadata is not declared, so the name rule has none: its message names the field).
RESOURCE_NAME_LENGTH = CelRule(
    rule="size(self.metadata.name) <= 48",
    message="metadata.name must be at most 48 characters (child names add up to 15)",
)
# Kubernetes' qualified-name form: an optional DNS-subdomain prefix and '/', then a name.
LABEL_KEY_REGEX = r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
MAP_KEYS_ARE_LABEL_KEYS = CelRule(
    rule=f"self.all(k, size(k) <= 253 && k.matches('{LABEL_KEY_REGEX}'))",
    message="keys must be label keys: [prefix/]name, alphanumerics with - _ . inside, at most 253 characters",
)
SPEC_REPLICAS_WITH_AUTOSCALING = CelRule(
    rule="!has(self.autoscaling) || !has(self.replicas)",
    message="set either replicas or autoscaling, not both (the autoscaler owns the replica count)",
    field_path=".replicas",
    reason="FieldValueForbidden",
)
# Model storage (modeldeploy.storageapi): environment sources and fetch settings.
ENV_VALUE_OR_VALUE_FROM = CelRule(
    rule="!has(self.valueFrom) || !has(self.value) || size(self.value) == 0",
    message="set either value or valueFrom, not both",
    field_path=".valueFrom",
    reason="FieldValueForbidden",
)
ENV_SOURCE_ONE_OF = CelRule(
    rule="has(self.secretKeyRef) != has(self.configMapKeyRef)",
    message="valueFrom needs exactly one of secretKeyRef or configMapKeyRef",
)
ENV_FROM_ONE_OF = CelRule(
    rule="has(self.secretRef) != has(self.configMapRef)",
    message="envFrom entries need exactly one of secretRef or configMapRef",
)
CHECKSUM_NEEDS_ONE_FILE = CelRule(
    rule=(
        "!has(self.checksum) || (!self.storageUri.startsWith('pvc://') && (self.storageUri.startsWith('http')"
        r" || self.storageUri.matches('\\.(onnx|tar\\.gz|tgz|zip)$')))"
    ),
    message="checksum needs a storageUri naming one fetched file: http(s)://, or an s3/gs .onnx/.tar.gz/.tgz/.zip",
    field_path=".checksum",
    reason="FieldValueForbidden",
)
STORAGE_NOT_FOR_PVC = CelRule(
    rule="!has(self.storage) || !self.storageUri.startsWith('pvc://')",
    message="storage settings are for fetched models; a pvc:// model is mounted, not fetched",
    field_path=".storage",
    reason="FieldValueForbidden",
)
S3_SETTINGS_NEED_S3 = CelRule(
    rule=(
        "!has(self.storage) || (!has(self.storage.s3Endpoint) && !has(self.storage.s3Region))"
        " || self.storageUri.startsWith('s3://')"
    ),
    message="s3Endpoint and s3Region need an s3:// storageUri",
    field_path=".storage",
    reason="FieldValueForbidden",
)
STORAGE_SERVICE_ACCOUNT_MATCHES_POD = CelRule(
    rule=(
        "!has(self.model.storage) || !has(self.model.storage.serviceAccountName) || !has(self.pod)"
        " || !has(self.pod.serviceAccountName) || self.pod.serviceAccountName == self.model.storage.serviceAccountName"
    ),
    message="model.storage.serviceAccountName and pod.serviceAccountName differ (a pod has one ServiceAccount)",
    field_path=".model.storage.serviceAccountName",
)
