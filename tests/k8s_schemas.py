"""Validate objects against the upstream Kubernetes OpenAPI schemas (kubernetes-validate)."""

from __future__ import annotations

from typing import Any

import kubernetes_validate

KUBERNETES_VERSION = "1.30.0"


def assert_valid_kubernetes_object(obj: dict[str, Any], version: str = KUBERNETES_VERSION) -> None:
    """Strict validation: unknown fields fail too. Raises with the failing path."""
    try:
        kubernetes_validate.validate(obj, version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        path = ".".join(str(p) for p in exc.path)
        name = obj.get("metadata", {}).get("name")
        raise AssertionError(f"{obj.get('kind')}/{name} invalid at {path}: {exc.message}") from None
