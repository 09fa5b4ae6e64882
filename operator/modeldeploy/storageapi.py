"""Environment variables from Secrets and ConfigMaps, and where and how a model is fetched.

`EnvVar` is the serving container's (`spec.runtime.env`) and the fetch init container's
(`spec.model.storage.env`); `ModelStorage` (`spec.model.storage`) holds the credentials and
endpoints of s3:// and gs:// stores and the size of the volume a model is fetched into.
Credentials reach only the fetch init container, never the serving container.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import ConfigDict, Field, StringConstraints, model_validator

from modeldeploy import cel
from modeldeploy.apibase import ApiModel

# Secret and ConfigMap names are DNS subdomains; their keys are [-._a-zA-Z0-9]+.
DNS_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"
CONFIG_KEY_PATTERN = r"^[-._a-zA-Z0-9]+$"
ENV_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_.-]*$"
# A byte size as an emptyDir sizeLimit takes it: an integer with an optional binary or decimal suffix.
SIZE_PATTERN = r"^[1-9][0-9]{0,15}(Ki|Mi|Gi|Ti|Pi|k|M|G|T|P)?$"
CHECKSUM_PATTERN = r"^sha256:[0-9a-f]{64}$"
# What `modelserve fetch` treats as one file: a model, or an archive of a model directory.
SINGLE_FILE_SUFFIX = r"\.(onnx|tar\.gz|tgz|zip)$"
DEFAULT_VOLUME_SIZE_LIMIT = "10Gi"

DnsSubdomain = Annotated[str, StringConstraints(pattern=DNS_SUBDOMAIN_PATTERN, max_length=253)]
EnvName = Annotated[str, StringConstraints(pattern=ENV_NAME_PATTERN, max_length=256)]
SizeQuantity = Annotated[str, StringConstraints(pattern=SIZE_PATTERN, max_length=20)]


class KeySelector(ApiModel):
    """One key of a Secret or ConfigMap in the ModelDeployment's namespace."""

    name: DnsSubdomain = Field(description="Secret or ConfigMap name.")
    key: Annotated[str, StringConstraints(pattern=CONFIG_KEY_PATTERN, max_length=253)] = Field(
        description="Key inside it."
    )
    optional: bool | None = Field(default=None, description="Start even when the object or key is missing.")


class EnvVarSource(ApiModel):
    """Where an environment variable's value comes from: a Secret key or a ConfigMap key."""

    model_config = ConfigDict(json_schema_extra=cel.schema_extra(cel.ENV_SOURCE_ONE_OF))

    secret_key_ref: KeySelector | None = Field(default=None, description="A key of a Secret.")
    config_map_key_ref: KeySelector | None = Field(default=None, description="A key of a ConfigMap.")

    @model_validator(mode="after")
    def _one_source(self) -> EnvVarSource:
        if (self.secret_key_ref is None) == (self.config_map_key_ref is None):
            raise ValueError(cel.ENV_SOURCE_ONE_OF.message)
        return self


class EnvVar(ApiModel):
    """An environment variable: a literal value or a value from a Secret or ConfigMap."""

    model_config = ConfigDict(json_schema_extra=cel.schema_extra(cel.ENV_VALUE_OR_VALUE_FROM))

    name: EnvName = Field(description="Variable name.")
    value: str = Field(default="", max_length=32768, description="Variable value.")
    value_from: EnvVarSource | None = Field(
        default=None, description="Take the value from a Secret or ConfigMap key instead of value."
    )

    @model_validator(mode="after")
    def _one_value(self) -> EnvVar:
        if self.value_from is not None and self.value:
            raise ValueError(cel.ENV_VALUE_OR_VALUE_FROM.message)
        return self

    def to_container(self) -> dict[str, object]:
        """As a core/v1 EnvVar: an empty value is left out beside valueFrom."""
        wire = self.to_wire()
        if self.value_from is not None:
            wire.pop("value", None)
        return wire


class ObjectRef(ApiModel):
    """A whole Secret or ConfigMap in the ModelDeployment's namespace."""

    name: DnsSubdomain = Field(description="Secret or ConfigMap name.")
    optional: bool | None = Field(default=None, description="Start even when the object is missing.")


class EnvFromSource(ApiModel):
    """Every key of a Secret or ConfigMap as environment variables."""

    model_config = ConfigDict(json_schema_extra=cel.schema_extra(cel.ENV_FROM_ONE_OF))

    prefix: Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_.-]*$", max_length=64)] | None = Field(
        default=None, description="Prepended to every key."
    )
    secret_ref: ObjectRef | None = Field(default=None, description="A Secret.")
    config_map_ref: ObjectRef | None = Field(default=None, description="A ConfigMap.")

    @model_validator(mode="after")
    def _one_source(self) -> EnvFromSource:
        if (self.secret_ref is None) == (self.config_map_ref is None):
            raise ValueError(cel.ENV_FROM_ONE_OF.message)
        return self


class ModelStorage(ApiModel):
    """How the fetch init container reaches the model store (KServe-like storage settings)."""

    env: list[EnvVar] = Field(
        default_factory=list,
        max_length=32,
        description=(
            "Environment of the fetch init container only, e.g. AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or"
            " GOOGLE_APPLICATION_CREDENTIALS from a Secret (valueFrom.secretKeyRef)."
        ),
    )
    env_from: list[EnvFromSource] = Field(
        default_factory=list,
        max_length=8,
        description="Every key of these Secrets or ConfigMaps as environment of the fetch init container only.",
    )
    service_account_name: DnsSubdomain | None = Field(
        default=None,
        description=(
            "ServiceAccount the pods run as, for workload identity (EKS IRSA role annotation, GKE Workload"
            " Identity); must equal spec.pod.serviceAccountName when both are set."
        ),
    )
    s3_endpoint: Annotated[str, StringConstraints(pattern=r"^https?://[^\s/?#]+/?$", max_length=512)] | None = Field(
        default=None,
        description="S3 API endpoint for s3:// URIs other than AWS: MinIO, Ceph RGW, e.g. http://minio.minio:9000.",
    )
    s3_region: Annotated[str, StringConstraints(pattern=r"^[a-z0-9-]+$", max_length=32)] | None = Field(
        default=None, description="S3 region of s3:// URIs, e.g. eu-west-1."
    )
    volume_size_limit: SizeQuantity | None = Field(
        default=None,
        description=(
            f"Size limit of the volume the model is fetched into (default {DEFAULT_VOLUME_SIZE_LIMIT}); the download"
            " and the unpacked model are capped by it."
        ),
    )


def is_single_file_uri(uri: str) -> bool:
    """Whether `modelserve fetch` takes the URI as one file (http(s) always; s3/gs by suffix)."""
    path = uri.split("?", 1)[0].split("#", 1)[0]
    return uri.startswith(("http://", "https://")) or re.search(SINGLE_FILE_SUFFIX, path) is not None


MODEL_SOURCE_RULES = (cel.CHECKSUM_NEEDS_ONE_FILE, cel.STORAGE_NOT_FOR_PVC, cel.S3_SETTINGS_NEED_S3)


def storage_problem(storage_uri: str, checksum: str | None, storage: ModelStorage | None) -> str | None:
    """The first of MODEL_SOURCE_RULES a ModelSource breaks, as 'field: message', or None."""
    fetched = not storage_uri.startswith("pvc://")
    if checksum is not None and not (fetched and is_single_file_uri(storage_uri)):
        return f"checksum: {cel.CHECKSUM_NEEDS_ONE_FILE.message}"
    if storage is not None and not fetched:
        return f"storage: {cel.STORAGE_NOT_FOR_PVC.message}"
    if storage is not None and (storage.s3_endpoint or storage.s3_region) and not storage_uri.startswith("s3://"):
        return f"storage: {cel.S3_SETTINGS_NEED_S3.message}"
    return None
