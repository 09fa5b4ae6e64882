"""Every CEL rule in the CRD, evaluated by a CEL interpreter, agrees with pydantic.

The API server gives CEL `number` fields as doubles and `integer` fields as ints; the
harness converts values by the schema the same way before evaluating.
"""

from __future__ import annotations

from typing import Any

import celpy
import pytest
from pydantic import BaseModel, ValidationError

from modeldeploy import api, crd

ENV = celpy.Environment()


def _schema_at(path: list[str]) -> dict[str, Any]:
    node = crd.openapi_schema()
    for part in path:
        node = node["items"] if part == "[]" else node["properties"][part]
    return node


def _typed(value: Any, schema: dict[str, Any]) -> Any:
    if isinstance(value, dict):
        props = schema.get("properties", {})
        return {k: _typed(v, props.get(k, {})) for k, v in value.items()}
    if isinstance(value, list):
        return [_typed(v, schema.get("items", {})) for v in value]
    if schema.get("type") == "number" and isinstance(value, int | float):
        return float(value)
    return value


def cel_accepts(path: list[str], obj: dict[str, Any]) -> bool:
    schema = _schema_at(path)
    rules = schema.get("x-kubernetes-validations", [])
    assert rules, f"no CEL rules at {path}"
    activation = {"self": celpy.json_to_cel(_typed(obj, schema))}
    return all(bool(ENV.program(ENV.compile(r["rule"])).evaluate(activation)) for r in rules)


def pydantic_accepts(model: type[BaseModel], obj: dict[str, Any]) -> bool:
    try:
        model.model_validate(obj)
    except ValidationError:
        return False
    return True


MODEL = {"name": "m", "storageUri": "s3://bucket/m"}
CASES: list[tuple[str, type[BaseModel], list[str], dict[str, Any], bool]] = [
    ("hpa min<max", api.AutoscalingSpec, ["spec", "autoscaling"], {"minReplicas": 1, "maxReplicas": 3, "targetCPUUtilization": 50}, True),
    ("hpa min=max", api.AutoscalingSpec, ["spec", "autoscaling"], {"minReplicas": 3, "maxReplicas": 3, "targetQueueTimeMs": 5}, True),
    ("hpa min>max", api.AutoscalingSpec, ["spec", "autoscaling"], {"minReplicas": 4, "maxReplicas": 3, "targetCPUUtilization": 50}, False),
    ("hpa no target", api.AutoscalingSpec, ["spec", "autoscaling"], {"minReplicas": 1, "maxReplicas": 3}, False),
    ("hpa rate target", api.AutoscalingSpec, ["spec", "autoscaling"], {"maxReplicas": 3, "targetInferenceRate": 12.5}, True),
    ("keda to zero on rate", api.AutoscalingSpec, ["spec", "autoscaling"], {"engine": "KEDA", "minReplicas": 0, "maxReplicas": 3, "targetInferenceRate": 5}, True),
    ("keda to zero on queue time", api.AutoscalingSpec, ["spec", "autoscaling"], {"engine": "KEDA", "minReplicas": 0, "maxReplicas": 3, "targetQueueTimeMs": 5}, True),
    ("keda to zero on cpu only", api.AutoscalingSpec, ["spec", "autoscaling"], {"engine": "KEDA", "minReplicas": 0, "maxReplicas": 3, "targetCPUUtilization": 50}, False),
    ("hpa to zero", api.AutoscalingSpec, ["spec", "autoscaling"], {"engine": "HPA", "minReplicas": 0, "maxReplicas": 3, "targetInferenceRate": 5}, False),
    ("default engine to zero", api.AutoscalingSpec, ["spec", "autoscaling"], {"minReplicas": 0, "maxReplicas": 3, "targetInferenceRate": 5}, False),
    ("steps increasing", api.RolloutSpec, ["spec", "rollout"], {"steps": [5, 10, 50, 100]}, True),
    ("steps one", api.RolloutSpec, ["spec", "rollout"], {"steps": [100]}, True),
    ("steps equal", api.RolloutSpec, ["spec", "rollout"], {"steps": [10, 10]}, False),
    ("steps decreasing", api.RolloutSpec, ["spec", "rollout"], {"steps": [50, 25]}, False),
    ("steps long increasing", api.RolloutSpec, ["spec", "rollout"], {"steps": list(range(1, 21))}, True),
    ("steps long, last out of order", api.RolloutSpec, ["spec", "rollout"], {"steps": [*range(1, 20), 3]}, False),
    ("canary no steps", api.RolloutSpec, ["spec", "rollout"], {"strategy": "Canary", "steps": []}, False),
    ("rolling no steps", api.RolloutSpec, ["spec", "rollout"], {"strategy": "RollingUpdate", "steps": []}, True),
    ("mig with product", api.GpuSpec, ["spec", "gpu"], {"count": 1, "product": "A100", "migProfile": "1g.5gb"}, True),
    ("mig without product", api.GpuSpec, ["spec", "gpu"], {"count": 1, "migProfile": "1g.5gb"}, False),
    ("mig with zero count", api.GpuSpec, ["spec", "gpu"], {"count": 0, "product": "A100", "migProfile": "1g.5gb"}, False),
    ("gpu product only", api.GpuSpec, ["spec", "gpu"], {"count": 2, "product": "A100"}, True),
    ("check max", api.CustomCheck, ["spec", "rollout", "checks", "[]"], {"name": "c", "query": "q", "max": 1}, True),
    ("check min<max", api.CustomCheck, ["spec", "rollout", "checks", "[]"], {"name": "c", "query": "q", "min": 1, "max": 1.5}, True),
    ("check min>max", api.CustomCheck, ["spec", "rollout", "checks", "[]"], {"name": "c", "query": "q", "min": 2, "max": 1.5}, False),
    ("check no bound", api.CustomCheck, ["spec", "rollout", "checks", "[]"], {"name": "c", "query": "q"}, False),
    ("replicas only", api.ModelDeploymentSpec, ["spec"], {"model": MODEL, "replicas": 2}, True),
    ("autoscaling only", api.ModelDeploymentSpec, ["spec"], {"model": MODEL, "autoscaling": {"maxReplicas": 2, "targetCPUUtilization": 9}}, True),
    ("replicas and autoscaling", api.ModelDeploymentSpec, ["spec"], {"model": MODEL, "replicas": 2, "autoscaling": {"maxReplicas": 2, "targetCPUUtilization": 9}}, False),
]  # fmt: skip


@pytest.mark.parametrize(("model", "path", "obj", "accepted"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_cel_and_pydantic_agree(model: type[BaseModel], path: list[str], obj: dict[str, Any], accepted: bool) -> None:
    assert cel_accepts(path, obj) is accepted
    assert pydantic_accepts(model, obj) is accepted


@pytest.mark.parametrize(("name", "accepted"), [("a" * 48, True), ("a" * 49, False)])
def test_root_rule_limits_name_length(name: str, accepted: bool) -> None:
    schema = crd.openapi_schema()
    rule = schema["x-kubernetes-validations"][0]["rule"]
    result = ENV.program(ENV.compile(rule)).evaluate({"self": celpy.json_to_cel({"metadata": {"name": name}})})
    assert bool(result) is accepted


@pytest.mark.parametrize("field", ["nodeSelector", "labels", "annotations"])
@pytest.mark.parametrize(
    ("key", "accepted"),
    [
        ("app", True),
        ("nvidia.com/gpu.product", True),
        ("example.com/a_b-c.d", True),
        ("a" * 63, True),
        ("-leading", False),
        ("trailing.", False),
        ("Upper.Case/x", False),
        ("two/slashes/x", False),
        ("sp ace", False),
        ("", False),
        ("p" * 250 + "/xyz", False),
    ],
)
def test_map_key_rule_agrees_with_pydantic(field: str, key: str, accepted: bool) -> None:
    assert cel_accepts(["spec", "pod", field], {key: "v"}) is accepted
    assert pydantic_accepts(api.PodSettings, {field: {key: "v"}}) is accepted


def test_maps_are_bounded_for_the_rule_cost() -> None:
    for field in ("nodeSelector", "labels", "annotations"):
        assert _schema_at(["spec", "pod", field])["maxProperties"] == api.MAX_MAP_ENTRIES
    too_many = {f"k{i}": "v" for i in range(api.MAX_MAP_ENTRIES + 1)}
    assert not pydantic_accepts(api.PodSettings, {"labels": too_many})


def test_only_reasons_and_field_paths_the_api_server_accepts() -> None:
    allowed = {"FieldValueInvalid", "FieldValueRequired", "FieldValueForbidden", "FieldValueDuplicate"}
    for rule in _all_rules(crd.openapi_schema()):
        assert rule.get("reason", "FieldValueInvalid") in allowed, rule
        assert not rule.get("fieldPath", ".x").startswith(".metadata"), rule


def _all_rules(node: Any) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    if isinstance(node, dict):
        found.extend(node.get("x-kubernetes-validations", []))
        for value in node.values():
            found.extend(_all_rules(value))
    elif isinstance(node, list):
        for value in node:
            found.extend(_all_rules(value))
    return found


def test_every_rule_compiles_and_has_a_message() -> None:
    rules = _all_rules(crd.openapi_schema())
    assert len(rules) >= 9
    for rule in rules:
        ENV.compile(rule["rule"])
        assert rule["message"]
