"""spec.model.storage, spec.model.checksum and env valueFrom/envFrom: pydantic and CEL agree, one error per problem."""

from __future__ import annotations

from typing import Any

import pytest

from modeldeploy import api, storageapi
from tests.unit.test_cel import cel_accepts, pydantic_accepts

SHA = "sha256:" + "ab" * 32
SECRET_REF = {"secretKeyRef": {"name": "s3-creds", "key": "access-key-id"}}


def spec_with(model: dict[str, Any], **rest: Any) -> dict[str, Any]:
    return {"model": {"name": "m", **model}, **rest}


CASES: list[tuple[str, type, list[str], dict[str, Any], bool]] = [
    ("value", api.EnvVar, ["spec", "runtime", "env", "[]"], {"name": "A", "value": "x"}, True),
    ("valueFrom secret", api.EnvVar, ["spec", "runtime", "env", "[]"], {"name": "A", "valueFrom": SECRET_REF}, True),
    ("valueFrom and empty value", api.EnvVar, ["spec", "runtime", "env", "[]"], {"name": "A", "value": "", "valueFrom": SECRET_REF}, True),
    ("valueFrom and value", api.EnvVar, ["spec", "runtime", "env", "[]"], {"name": "A", "value": "x", "valueFrom": SECRET_REF}, False),
    ("source secret", storageapi.EnvVarSource, ["spec", "runtime", "env", "[]", "valueFrom"], SECRET_REF, True),
    ("source configmap", storageapi.EnvVarSource, ["spec", "runtime", "env", "[]", "valueFrom"], {"configMapKeyRef": {"name": "c", "key": "k"}}, True),
    ("source both", storageapi.EnvVarSource, ["spec", "runtime", "env", "[]", "valueFrom"], {**SECRET_REF, "configMapKeyRef": {"name": "c", "key": "k"}}, False),
    ("source none", storageapi.EnvVarSource, ["spec", "runtime", "env", "[]", "valueFrom"], {}, False),
    ("envFrom secret", storageapi.EnvFromSource, ["spec", "model", "storage", "envFrom", "[]"], {"secretRef": {"name": "s"}}, True),
    ("envFrom configmap prefix", storageapi.EnvFromSource, ["spec", "model", "storage", "envFrom", "[]"], {"prefix": "S3_", "configMapRef": {"name": "c"}}, True),
    ("envFrom both", storageapi.EnvFromSource, ["spec", "model", "storage", "envFrom", "[]"], {"secretRef": {"name": "s"}, "configMapRef": {"name": "c"}}, False),
    ("envFrom none", storageapi.EnvFromSource, ["spec", "model", "storage", "envFrom", "[]"], {"prefix": "X"}, False),
    ("checksum http", api.ModelSource, ["spec", "model"], {"name": "m", "storageUri": "https://h/m.onnx", "checksum": SHA}, True),
    ("checksum s3 archive", api.ModelSource, ["spec", "model"], {"name": "m", "storageUri": "s3://b/m.tar.gz", "checksum": SHA}, True),
    ("checksum gs onnx", api.ModelSource, ["spec", "model"], {"name": "m", "storageUri": "gs://b/p/m.onnx", "checksum": SHA}, True),
    ("checksum s3 prefix", api.ModelSource, ["spec", "model"], {"name": "m", "storageUri": "s3://b/models/m", "checksum": SHA}, False),
    ("checksum pvc", api.ModelSource, ["spec", "model"], {"name": "m", "storageUri": "pvc://c/m.onnx", "checksum": SHA}, False),
    ("storage s3", api.ModelSource, ["spec", "model"], {"name": "m", "storageUri": "s3://b/m", "storage": {"s3Endpoint": "http://minio:9000", "s3Region": "us-east-1"}}, True),
    ("storage gs", api.ModelSource, ["spec", "model"], {"name": "m", "storageUri": "gs://b/m", "storage": {"serviceAccountName": "reader"}}, True),
    ("storage pvc", api.ModelSource, ["spec", "model"], {"name": "m", "storageUri": "pvc://c/m", "storage": {"volumeSizeLimit": "1Gi"}}, False),
    ("s3 endpoint on gs", api.ModelSource, ["spec", "model"], {"name": "m", "storageUri": "gs://b/m", "storage": {"s3Endpoint": "http://minio:9000"}}, False),
    ("s3 region on http", api.ModelSource, ["spec", "model"], {"name": "m", "storageUri": "https://h/m.onnx", "storage": {"s3Region": "eu-west-1"}}, False),
    ("same service account", api.ModelDeploymentSpec, ["spec"], spec_with({"storageUri": "s3://b/m", "storage": {"serviceAccountName": "sa"}}, pod={"serviceAccountName": "sa"}), True),
    ("storage service account only", api.ModelDeploymentSpec, ["spec"], spec_with({"storageUri": "s3://b/m", "storage": {"serviceAccountName": "sa"}}), True),
    ("different service accounts", api.ModelDeploymentSpec, ["spec"], spec_with({"storageUri": "s3://b/m", "storage": {"serviceAccountName": "sa"}}, pod={"serviceAccountName": "other"}), False),
]  # fmt: skip


@pytest.mark.parametrize(("model", "path", "obj", "accepted"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_cel_and_pydantic_agree(model: type, path: list[str], obj: dict[str, Any], accepted: bool) -> None:
    assert cel_accepts(path, obj) is accepted
    assert pydantic_accepts(model, obj) is accepted


def md(spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": api.API_VERSION, "kind": api.KIND, "metadata": {"name": "m1"}, "spec": spec}


BAD = [
    ("unknown storage field", spec_with({"storageUri": "s3://b/m", "storage": {"accessKey": "x"}}), "spec.model.storage.accessKey", "unknown field"),
    ("bad checksum", spec_with({"storageUri": "https://h/m.onnx", "checksum": "md5:abc"}), "spec.model.checksum", "pattern"),
    ("checksum of a prefix", spec_with({"storageUri": "s3://b/p", "checksum": SHA}), "spec.model", "checksum needs a storageUri naming one"),
    ("storage on pvc", spec_with({"storageUri": "pvc://c/p", "storage": {}}), "spec.model", "pvc:// model is mounted"),
    ("bad size", spec_with({"storageUri": "s3://b/p", "storage": {"volumeSizeLimit": "lots"}}), "spec.model.storage.volumeSizeLimit", "pattern"),
    ("bad endpoint", spec_with({"storageUri": "s3://b/p", "storage": {"s3Endpoint": "minio:9000"}}), "spec.model.storage.s3Endpoint", "pattern"),
    ("value and valueFrom", spec_with({"storageUri": "s3://b/p"}, runtime={"env": [{"name": "A", "value": "v", "valueFrom": SECRET_REF}]}), "spec.runtime.env.0", "either value or valueFrom"),
    ("secret name", spec_with({"storageUri": "s3://b/p", "storage": {"envFrom": [{"secretRef": {"name": "Bad_Name"}}]}}), "spec.model.storage.envFrom.0.secretRef.name", "pattern"),
    ("two accounts", spec_with({"storageUri": "s3://b/p", "storage": {"serviceAccountName": "a"}}, pod={"serviceAccountName": "b"}), "spec", "model.storage.serviceAccountName"),
]  # fmt: skip


@pytest.mark.parametrize(("spec", "path", "message"), [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_bad_storage_gives_one_error_naming_the_field(spec: dict[str, Any], path: str, message: str) -> None:
    with pytest.raises(api.SpecError) as info:
        api.parse_model_deployment(md(spec))
    (problem,) = info.value.problems
    field, _, text = problem.partition(": ")
    assert field == path
    assert message in text


def test_runtime_env_value_from_is_accepted() -> None:
    parsed = api.parse_model_deployment(
        md(spec_with({"storageUri": "s3://b/p"}, runtime={"env": [{"name": "TOKEN", "valueFrom": SECRET_REF}]}))
    )
    (env,) = parsed.spec.runtime.env
    assert env.to_container() == {"name": "TOKEN", "valueFrom": SECRET_REF}


def test_unset_storage_fields_leave_the_wire_form_and_revision_alone() -> None:
    parsed = api.parse_model_deployment(md(spec_with({"storageUri": "s3://b/p"})))
    assert set(parsed.spec.model.to_wire()) == {"name", "storageUri", "version", "format"}
