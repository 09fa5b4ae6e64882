"""The generated CRD: structural, described, fresh in crds/, accepted by the upstream schema."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from modeldeploy import crd
from tests.k8s_schemas import assert_valid_kubernetes_object

CRD_FILE = Path(__file__).parents[2] / "crds" / "modeldeploy.io_modeldeployments.yaml"
PASS_THROUGH = {"spec.pod.affinity"}


def _walk(node: dict[str, Any], path: str):
    yield path, node
    for name, child in node.get("properties", {}).items():
        yield from _walk(child, f"{path}.{name}" if path else name)
    if "items" in node:
        yield from _walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from _walk(node["additionalProperties"], f"{path}{{}}")


def test_crds_folder_is_fresh() -> None:
    assert yaml.safe_load(CRD_FILE.read_text()) == crd.custom_resource_definition(), (
        "crds/ is stale: run `make crds` and commit the result"
    )


def test_schema_is_structural() -> None:
    schema = crd.openapi_schema()
    for path, node in _walk(schema, ""):
        assert "$ref" not in node, path
        assert node.get("type") != "null", path
        if node.get("x-kubernetes-int-or-string"):
            assert "type" not in node, path
            assert all(o.get("type") in ("integer", "string") for o in node["anyOf"]), path
        else:
            assert "anyOf" not in node and "oneOf" not in node, path
            assert node.get("type") in {"object", "array", "string", "integer", "number", "boolean"}, path
        assert not ("properties" in node and "additionalProperties" in node), path
        if node.get("x-kubernetes-preserve-unknown-fields"):
            assert path in PASS_THROUGH, f"{path} preserves unknown fields"
        if node.get("type") == "array":
            assert "items" in node, path
        for bound in ("exclusiveMinimum", "exclusiveMaximum"):
            assert isinstance(node.get(bound, True), bool), path


def test_every_spec_and_status_field_is_described() -> None:
    schema = crd.openapi_schema()
    for root in ("spec", "status"):
        for path, node in _walk(schema["properties"][root], root):
            if path.endswith(("[]", "{}")):
                continue
            assert node.get("description"), f"{path} has no description"


def test_names_subresource_and_columns() -> None:
    obj = crd.custom_resource_definition()
    spec = obj["spec"]
    assert obj["metadata"]["name"] == "modeldeployments.modeldeploy.io"
    assert spec["names"]["shortNames"] == ["md"]
    assert "ml" in spec["names"]["categories"]
    version = spec["versions"][0]
    assert version["subresources"] == {"status": {}}
    columns = [c["name"] for c in version["additionalPrinterColumns"]]
    for wanted in ("Model", "Version", "Ready", "Phase", "Canary", "Age"):
        assert wanted in columns


def test_crd_validates_against_apiextensions_schema() -> None:
    assert_valid_kubernetes_object(crd.custom_resource_definition())
