"""The pydantic API: examples parse; each bad spec yields one error naming its field."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from modeldeploy import api

EXAMPLES = sorted(Path(__file__).parents[2].joinpath("examples").glob("*.yaml"))


def minimal() -> dict[str, Any]:
    return {
        "apiVersion": "modeldeploy.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "m1", "namespace": "ns"},
        "spec": {"model": {"name": "mlp", "storageUri": "https://example.com/mlp.onnx"}},
    }


def with_spec(**changes: Any) -> dict[str, Any]:
    obj = minimal()
    obj["spec"].update(copy.deepcopy(changes))
    return obj


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_examples_parse(path: Path) -> None:
    md = api.parse_model_deployment(yaml.safe_load(path.read_text()))
    assert md.spec.model.name


def test_defaults_fill_a_minimal_spec() -> None:
    md = api.parse_model_deployment(minimal())
    assert md.spec.runtime.max_batch_size == 8
    assert md.spec.rollout.strategy == "Canary"
    assert md.spec.rollout.steps == [10, 25, 50]
    assert md.spec.effective_replicas == 1
    assert md.spec.rollout.interval_seconds == 60


BAD_SPECS = [
    ("wrong type", with_spec(replicas="three"), "spec.replicas", "valid integer"),
    ("unknown field", with_spec(replicaz=2), "spec.replicaz", "unknown field"),
    (
        "unknown nested field",
        with_spec(runtime={"maxBatchSize": 4, "batchSize": 3}),
        "spec.runtime.batchSize",
        "unknown field",
    ),
    (
        "min > max replicas",
        with_spec(autoscaling={"minReplicas": 5, "maxReplicas": 3, "targetCPUUtilization": 70}),
        "spec.autoscaling",
        "minReplicas (5) must be less than or equal to maxReplicas (3)",
    ),
    ("negative GPU count", with_spec(gpu={"count": -1}), "spec.gpu.count", "greater than or equal to 0"),
    (
        "unknown quantization",
        with_spec(runtime={"quantization": "int4"}),
        "spec.runtime.quantization",
        "'none' or 'dynamic-int8'",
    ),
    ("missing storage", {**minimal(), "spec": {"model": {"name": "x"}}}, "spec.model.storageUri", "required"),
    (
        "bad storage scheme",
        with_spec(model={"name": "x", "storageUri": "ftp://host/x.onnx"}),
        "spec.model.storageUri",
        "pattern",
    ),
    ("steps not increasing", with_spec(rollout={"steps": [10, 50, 30]}), "spec.rollout", "50 then 30"),
    ("step over 100", with_spec(rollout={"steps": [10, 150]}), "spec.rollout.steps.1", "less than or equal to 100"),
    (
        "MIG without product",
        with_spec(gpu={"count": 1, "migProfile": "1g.5gb"}),
        "spec.gpu",
        "migProfile needs product",
    ),
    (
        "replicas and autoscaling",
        with_spec(replicas=2, autoscaling={"maxReplicas": 3, "targetCPUUtilization": 50}),
        "spec",
        "either replicas or autoscaling",
    ),
    ("autoscaling without target", with_spec(autoscaling={"maxReplicas": 3}), "spec.autoscaling", "at least one"),
    ("bad interval", with_spec(rollout={"interval": "soon"}), "spec.rollout.interval", "pattern"),
    ("bad quantity", with_spec(resources={"requests": {"cpu": "lots"}}), "spec.resources.requests.cpu", "pattern"),
    (
        "check without bound",
        with_spec(rollout={"checks": [{"name": "c", "query": "up"}]}),
        "spec.rollout.checks.0",
        "min, max or both",
    ),
    ("name too long", {**minimal(), "metadata": {"name": "a" * 49}}, "metadata", "at most 48"),
]


@pytest.mark.parametrize(("obj", "path", "message"), [c[1:] for c in BAD_SPECS], ids=[c[0] for c in BAD_SPECS])
def test_bad_spec_gives_one_error_naming_the_field(obj: dict[str, Any], path: str, message: str) -> None:
    with pytest.raises(api.SpecError) as info:
        api.parse_model_deployment(obj)
    problems = info.value.problems
    assert len(problems) == 1, problems
    field, _, text = problems[0].partition(": ")
    assert field == path
    assert message in text


def test_quantities_accept_numbers() -> None:
    md = api.parse_model_deployment(with_spec(resources={"requests": {"cpu": 2, "memory": "1Gi"}}))
    assert md.spec.resources.requests.cpu == "2"


@pytest.mark.parametrize(("text", "seconds"), [("30s", 30), ("1m30s", 90), ("500ms", 0.5), ("2h", 7200)])
def test_duration_seconds(text: str, seconds: float) -> None:
    assert api.duration_seconds(text) == seconds


def test_wire_round_trip_is_stable() -> None:
    md = api.parse_model_deployment(yaml.safe_load(EXAMPLES[0].read_text()))
    again = api.parse_model_deployment(md.to_wire())
    assert again == md


@pytest.mark.parametrize(
    ("text", "value"),
    [("500m", 0.5), ("2", 2.0), ("1.5", 1.5), ("512Mi", 512 * 2**20), ("1e3", 1000.0), ("2E", 2e18),
     ("2Ei", 2 * 2.0**60), (".5", 0.5), ("1E-3", 0.001), ("+3k", 3000.0), ("100n", 1e-7)],
)  # fmt: skip
def test_quantity_value(text: str, value: float) -> None:
    assert api.quantity_value(text) == pytest.approx(value)


def test_quantity_value_names_a_bad_quantity() -> None:
    with pytest.raises(ValueError, match="invalid quantity 'two'"):
        api.quantity_value("two")
