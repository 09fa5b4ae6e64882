"""Generate the ModelDeployment CustomResourceDefinition from the pydantic models.

pydantic emits JSON Schema 2020-12; Kubernetes wants a *structural* OpenAPI v3.0
schema: no `$ref`, no `null` types, `exclusiveMinimum` as a boolean, `properties` and
`additionalProperties` never together, and every field typed. This module converts one
into the other and wraps it in the CRD.
"""

from __future__ import annotations

import copy
from typing import Any

from pydantic.json_schema import GenerateJsonSchema

from modeldeploy import api, cel

_DROPPED_KEYS = {"title", "propertyNames", "discriminator"}


class _FactoryDefaults(GenerateJsonSchema):
    """Also write the defaults of `default_factory` fields, so the API server applies them."""

    def default_schema(self, schema: Any) -> Any:
        factory = schema.get("default_factory")
        if factory is not None and not schema.get("default_factory_takes_data"):
            schema = {**schema, "default": factory()}
            del schema["default_factory"]
        return super().default_schema(schema)


def _strip_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_strip_none(v) for v in value]
    return value


def _resolve(node: Any, defs: dict[str, Any]) -> Any:
    """Inline `$ref`s, keeping sibling keys (a field's description wins over the model's)."""
    if isinstance(node, list):
        return [_resolve(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = copy.deepcopy(defs[node["$ref"].rsplit("/", 1)[-1]])
        siblings = {k: v for k, v in node.items() if k != "$ref"}
        return _resolve({**target, **siblings}, defs)
    return {key: _resolve(value, defs) for key, value in node.items()}


def _drop_null(node: dict[str, Any]) -> dict[str, Any]:
    """`anyOf: [X, {type: null}]` (an Optional field) becomes X; its default None goes."""
    options = node.get("anyOf")
    if not options:
        return node
    non_null = [o for o in options if o.get("type") != "null"]
    if len(non_null) == len(options):
        return node
    rest = {k: v for k, v in node.items() if k != "anyOf"}
    if rest.get("default", 0) is None:
        del rest["default"]
    if len(non_null) == 1:
        return {**non_null[0], **rest}
    return {**rest, "anyOf": non_null}


def _structural(node: Any) -> Any:
    if isinstance(node, list):
        return [_structural(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = _drop_null(node)
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROPPED_KEYS:
            continue
        if key == "properties":
            out[key] = {name: _structural(schema) for name, schema in value.items()}
        elif key == "default":
            out[key] = _strip_none(value)
        elif key == "const":
            out["enum"] = [value]
        elif key in ("exclusiveMinimum", "exclusiveMaximum") and not isinstance(value, bool):
            bound = "minimum" if key == "exclusiveMinimum" else "maximum"
            out[bound] = value
            out[key] = True
        else:
            out[key] = _structural(value)
    if "properties" in out:
        out.pop("additionalProperties", None)
        out.setdefault("type", "object")
    if out.get("x-kubernetes-preserve-unknown-fields"):
        out.pop("additionalProperties", None)
        out["type"] = "object"
    if out.get("additionalProperties") is True:
        out.pop("additionalProperties")
        out["x-kubernetes-preserve-unknown-fields"] = True
    if "enum" in out and "type" not in out:
        out["type"] = _json_type(out["enum"][0])
    return out


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    return "string"


def model_schema(model: type[api.BaseModel]) -> dict[str, Any]:
    """The structural OpenAPI v3 schema of one pydantic model."""
    raw = model.model_json_schema(by_alias=True, mode="validation", schema_generator=_FactoryDefaults)
    defs = raw.pop("$defs", {})
    return _structural(_resolve(raw, defs))


def openapi_schema() -> dict[str, Any]:
    """The CRD's openAPIV3Schema for ModelDeployment."""
    return {
        "type": "object",
        "description": "A model served by the modeldeploy operator.",
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string", "description": "modeldeploy.io/v1alpha1"},
            "kind": {"type": "string", "description": "ModelDeployment"},
            "metadata": {"type": "object"},
            "spec": model_schema(api.ModelDeploymentSpec),
            "status": model_schema(api.ModelDeploymentStatus),
        },
        "x-kubernetes-validations": [cel.RESOURCE_NAME_LENGTH.to_schema()],
    }


PRINTER_COLUMNS: list[dict[str, Any]] = [
    {"name": "Model", "type": "string", "jsonPath": ".spec.model.name", "description": "Model name"},
    {"name": "Version", "type": "integer", "jsonPath": ".spec.model.version", "description": "Model version"},
    {
        "name": "Ready",
        "type": "string",
        "jsonPath": '.status.conditions[?(@.type=="Ready")].status',
        "description": "Ready condition",
    },
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase", "description": "Rollout phase"},
    {
        "name": "Canary",
        "type": "integer",
        "jsonPath": ".status.canary.weight",
        "description": "Percent of traffic on the canary",
    },
    {
        "name": "Replicas",
        "type": "integer",
        "jsonPath": ".status.readyReplicas",
        "description": "Ready serving pods",
        "priority": 1,
    },
    {"name": "Revision", "type": "string", "jsonPath": ".status.revision", "priority": 1},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]


def custom_resource_definition() -> dict[str, Any]:
    """The complete apiextensions.k8s.io/v1 CustomResourceDefinition."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{api.PLURAL}.{api.GROUP}",
            "labels": {"app.kubernetes.io/part-of": "modeldeploy"},
        },
        "spec": {
            "group": api.GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": api.KIND,
                "listKind": f"{api.KIND}List",
                "plural": api.PLURAL,
                "singular": api.SINGULAR,
                "shortNames": list(api.SHORT_NAMES),
                "categories": list(api.CATEGORIES),
            },
            "versions": [
                {
                    "name": api.VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": PRINTER_COLUMNS,
                    "schema": {"openAPIV3Schema": openapi_schema()},
                }
            ],
        },
    }
