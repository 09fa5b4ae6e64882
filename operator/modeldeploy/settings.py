"""Operator settings, from the environment (MODELDEPLOY_*) and `modeldeploy run` flags."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from modeldeploy.names import DEFAULT_SERVING_IMAGE
from modeldeploy.render import DEFAULT_PROMETHEUS_URL, RenderSettings


class OperatorSettings(BaseSettings):
    """Everything the operator needs that a ModelDeployment does not say."""

    model_config = SettingsConfigDict(env_prefix="MODELDEPLOY_", extra="ignore")

    serving_image: str = Field(default=DEFAULT_SERVING_IMAGE, description="Image when spec.runtime.image is unset.")
    prometheus_url: str = Field(default=DEFAULT_PROMETHEUS_URL, description="Prometheus base URL.")
    namespaces: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Namespaces to watch, comma-separated; empty watches all."
    )
    log_format: Literal["text", "json"] = Field(default="text", description="Operator log format.")
    peering: str | None = Field(
        default=None, description="kopf peering object for running several replicas; unset runs standalone."
    )
    liveness_endpoint: str | None = Field(
        default="http://0.0.0.0:8080/healthz", description="kopf liveness endpoint; empty disables it."
    )
    metrics_port: int = Field(default=9090, ge=0, le=65535, description="Operator metrics port; 0 disables.")
    resync_seconds: float = Field(default=60.0, gt=0, description="Re-reconcile period that repairs drift.")
    field_manager: str = Field(default="modeldeploy", description="Server-side apply field manager.")
    revision_history_limit: int = Field(
        default=10, ge=1, le=1000, description="ControllerRevisions kept per ModelDeployment (older ones deleted)."
    )
    max_workers: int = Field(
        default=32,
        ge=1,
        le=256,
        description="Threads for reconciles and child events (each mostly waits on the API server).",
    )

    @field_validator("namespaces", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @property
    def render(self) -> RenderSettings:
        return RenderSettings(serving_image=self.serving_image, prometheus_url=self.prometheus_url)
