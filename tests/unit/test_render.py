"""Rendering: golden files for the examples, upstream-schema validity, GPU and storage rules."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import jinja2
import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from modeldeploy import api, names, render
from tests.k8s_schemas import assert_valid_kubernetes_object

ROOT = Path(__file__).parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
GOLDEN = ROOT / "tests" / "golden"


UID = "0b5e6f3a-6d2c-4d3e-9a57-1f0c2f4b8e11"  # as the API server gives it; offline renders have none


def load(path: Path, uid: str | None = None) -> api.ModelDeployment:
    body = yaml.safe_load(path.read_text())
    if uid:
        body["metadata"]["uid"] = uid
    return api.parse_model_deployment(body)


def md_from_spec(spec: dict[str, Any], name: str = "m1") -> api.ModelDeployment:
    metadata = {"name": name, "namespace": "ns", "uid": UID}
    return api.parse_model_deployment(
        {"apiVersion": api.API_VERSION, "kind": api.KIND, "metadata": metadata, "spec": spec}
    )


def by_kind(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {o["kind"]: o for o in objects}


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_examples_match_golden_files(path: Path) -> None:
    text = render.to_yaml(render.render(load(path)))
    golden = GOLDEN / f"{path.stem}.yaml"
    if os.environ.get("UPDATE_GOLDEN") == "1":
        golden.write_text(text)
    assert golden.exists(), f"missing {golden}: run UPDATE_GOLDEN=1 pytest {__file__}"
    assert text == golden.read_text(), f"{path.name} renders differently from {golden.name}"


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_examples_render_valid_kubernetes_objects(path: Path) -> None:
    for obj in render.render(load(path, uid=UID)):
        assert_valid_kubernetes_object(obj)
        (owner,) = obj["metadata"]["ownerReferences"]
        assert owner["uid"] == UID and owner["controller"] is True


def test_offline_render_has_owner_references_without_uid_and_keeps_the_owners_labels() -> None:
    md = load(EXAMPLES[0])
    md.metadata.labels["team"] = "fraud"
    for obj in render.render(md):
        (owner,) = obj["metadata"]["ownerReferences"]
        assert "uid" not in owner and owner["name"] == md.metadata.name and owner["kind"] == api.KIND
        assert obj["metadata"]["labels"]["team"] == "fraud"
        assert obj["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "modeldeploy-operator"


quantities = st.sampled_from(["100m", "1", "2", "512Mi", "1Gi", "1.5"])
spec_strategy = st.fixed_dictionaries(
    {
        "model": st.fixed_dictionaries(
            {
                "name": st.from_regex(r"[a-z][a-z0-9_.-]{0,20}[a-z0-9]", fullmatch=True),
                "storageUri": st.sampled_from(
                    ["pvc://claim", "pvc://claim/sub/dir", "https://h/m.onnx", "s3://b/p", "gs://b/p"]
                ),
                "version": st.integers(1, 1000),
            }
        )
    },
    optional={
        "runtime": st.fixed_dictionaries(
            {},
            optional={
                "image": st.just("registry.local/modelserve:dev"),
                "maxBatchSize": st.integers(0, 256),
                "batchingDelayMicroseconds": st.integers(0, 10_000),
                "preferredBatchSizes": st.lists(st.integers(1, 64), max_size=3),
                "instanceCount": st.integers(1, 4),
                "graphOptimizationLevel": st.sampled_from(["disabled", "basic", "extended", "all"]),
                "quantization": st.sampled_from(["none", "dynamic-int8"]),
                "env": st.lists(
                    st.fixed_dictionaries({"name": st.from_regex(r"[A-Z_]{1,8}", fullmatch=True), "value": st.text(max_size=5)}),
                    max_size=2,
                ),
                "args": st.lists(st.sampled_from(["--log-verbose=1", "--strict-model-config=true"]), max_size=2),
            },
        ),
        "replicas": st.integers(0, 5),
        "resources": st.fixed_dictionaries(
            {},
            optional={
                "requests": st.fixed_dictionaries({}, optional={"cpu": quantities, "memory": quantities}),
                "limits": st.fixed_dictionaries({}, optional={"cpu": quantities, "memory": quantities}),
            },
        ),
        "gpu": st.one_of(
            st.fixed_dictionaries({"count": st.integers(0, 4)}, optional={"product": st.just("Tesla-T4")}),
            st.fixed_dictionaries(
                {"count": st.integers(1, 7), "product": st.just("NVIDIA-A100"), "migProfile": st.just("1g.5gb")}
            ),
        ),
        "autoscaling": st.fixed_dictionaries(
            {"maxReplicas": st.integers(5, 20)},
            optional={
                "minReplicas": st.integers(1, 5),
                "targetCPUUtilization": st.integers(1, 100),
                "targetInferenceRate": st.floats(0.001, 10_000),
                "targetQueueTimeMs": st.floats(0.1, 1000),
            },
        ),
        "rollout": st.fixed_dictionaries(
            {},
            optional={
                "strategy": st.sampled_from(["Canary", "RollingUpdate", "Recreate"]),
                "steps": st.lists(st.integers(1, 100), min_size=1, max_size=5, unique=True).map(sorted),
            },
        ),
        "pod": st.fixed_dictionaries(
            {},
            optional={
                "nodeSelector": st.dictionaries(st.sampled_from(["zone", "pool", "example.com/tier"]), st.just("a")),
                "tolerations": st.lists(
                    st.fixed_dictionaries({"key": st.just("k"), "operator": st.just("Exists")}), max_size=2
                ),
                "affinity": st.just(
                    {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                        {"matchExpressions": [{"key": "pool", "operator": "In", "values": ["gpu"]}]}]}}}
                ),
                "priorityClassName": st.just("high"),
                "serviceAccountName": st.just("sa"),
                "imagePullSecrets": st.just([{"name": "regcred"}]),
                "terminationGracePeriodSeconds": st.integers(1, 600),
            },
        ),
    },
)  # fmt: skip


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=spec_strategy)
def test_generated_specs_render_valid_objects(spec: dict[str, Any]) -> None:
    try:
        md = md_from_spec(spec)
    except api.SpecError:
        assume(False)
        return
    objects = render.render(md)
    for obj in objects:
        assert_valid_kubernetes_object(obj)
    deployment = by_kind(objects)["Deployment"]
    assert ("replicas" in deployment["spec"]) == (md.spec.autoscaling is None)
    assert ("HorizontalPodAutoscaler" in by_kind(objects)) == (md.spec.autoscaling is not None)


def test_gpu_scheduling_whole_gpus() -> None:
    md = md_from_spec({"model": {"name": "m", "storageUri": "s3://b/m"}, "gpu": {"count": 2, "product": "Tesla-T4"}})
    pod = by_kind(render.render(md))["Deployment"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert container["resources"]["requests"]["nvidia.com/gpu"] == "2"
    assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "Tesla-T4"}
    assert render.GPU_TOLERATION in pod["tolerations"]
    assert "--require-gpu" in container["command"], "a GPU pod must not fall back to the CPU silently"


def test_gpu_scheduling_mig_profile_and_user_toleration_kept() -> None:
    md = md_from_spec(
        {
            "model": {"name": "m", "storageUri": "s3://b/m"},
            "gpu": {"count": 1, "product": "NVIDIA-A100", "migProfile": "1g.5gb"},
            "pod": {"tolerations": [render.GPU_TOLERATION, {"key": "team", "operator": "Exists"}]},
        }
    )
    pod = by_kind(render.render(md))["Deployment"]["spec"]["template"]["spec"]
    limits = pod["containers"][0]["resources"]["limits"]
    assert limits["nvidia.com/mig-1g.5gb"] == "1"
    assert "nvidia.com/gpu" not in limits
    assert pod["tolerations"].count(render.GPU_TOLERATION) == 1
    assert len(pod["tolerations"]) == 2


def test_cpu_model_has_no_gpu_scheduling() -> None:
    pod = by_kind(render.render(load(ROOT / "examples" / "cpu-model.yaml")))["Deployment"]["spec"]["template"]["spec"]
    assert "tolerations" not in pod and "nodeSelector" not in pod
    assert not any(k.startswith("nvidia.com/") for k in pod["containers"][0]["resources"]["limits"])
    assert "--require-gpu" not in pod["containers"][0]["command"]


def test_pod_hardening() -> None:
    pod = by_kind(render.render(load(EXAMPLES[0])))["Deployment"]["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    for container in pod["containers"] + pod.get("initContainers", []):
        ctx = container["securityContext"]
        assert ctx["readOnlyRootFilesystem"] is True
        assert ctx["allowPrivilegeEscalation"] is False
        assert ctx["capabilities"] == {"drop": ["ALL"]}
    main = pod["containers"][0]
    assert main["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert main["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert {p["name"]: p["containerPort"] for p in main["ports"]} == {"http": 8000, "grpc": 8001, "metrics": 8002}


def test_pvc_storage_mounts_read_only_without_init_container() -> None:
    md = md_from_spec({"model": {"name": "m", "storageUri": "pvc://store/models/m"}})
    pod = by_kind(render.render(md))["Deployment"]["spec"]["template"]["spec"]
    assert "initContainers" not in pod
    mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "model-store")
    assert mount == {"name": "model-store", "mountPath": "/models/m", "readOnly": True, "subPath": "models/m"}
    volume = next(v for v in pod["volumes"] if v["name"] == "model-store")
    assert volume["persistentVolumeClaim"] == {"claimName": "store", "readOnly": True}


def test_remote_storage_is_fetched_by_an_init_container() -> None:
    md = md_from_spec({"model": {"name": "m", "storageUri": "https://h/m.onnx", "version": 4}})
    pod = by_kind(render.render(md))["Deployment"]["spec"]["template"]["spec"]
    (init,) = pod["initContainers"]
    assert init["command"][:2] == ["modelserve", "fetch"]
    assert "--uri=https://h/m.onnx" in init["command"] and "--version=4" in init["command"]


def test_labels_carry_model_revision_and_track() -> None:
    objects = render.render(load(EXAMPLES[0]))
    deployment = by_kind(objects)["Deployment"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert labels[names.LABEL_TRACK] == "stable"
    assert labels[names.LABEL_MODEL] == "fraud"
    assert labels[names.LABEL_REVISION] == deployment["metadata"]["annotations"][names.LABEL_REVISION]
    assert set(deployment["spec"]["selector"]["matchLabels"].items()) <= set(labels.items())
    service = by_kind(objects)["Service"]
    assert set(service["spec"]["selector"].items()) <= set(labels.items())


def test_revision_tracks_pod_changes_only() -> None:
    base = {"model": {"name": "m", "storageUri": "s3://b/m"}, "replicas": 2}
    rev = names.revision_of(md_from_spec(base).spec, render.RenderSettings())
    assert rev == names.revision_of(md_from_spec({**base, "replicas": 5}).spec, render.RenderSettings())
    assert rev != names.revision_of(
        md_from_spec({**base, "model": {**base["model"], "version": 2}}).spec, render.RenderSettings()
    )
    assert rev != names.revision_of(md_from_spec(base).spec, render.RenderSettings(serving_image="other:1"))


@pytest.mark.parametrize(("replicas", "has_pdb"), [(1, False), (2, True), (0, False)])
def test_pdb_only_with_more_than_one_replica(replicas: int, has_pdb: bool) -> None:
    md = md_from_spec({"model": {"name": "m", "storageUri": "s3://b/m"}, "replicas": replicas})
    assert ("PodDisruptionBudget" in by_kind(render.render(md))) is has_pdb


def test_hpa_metrics_and_no_replicas_on_deployment() -> None:
    objects = by_kind(render.render(load(ROOT / "examples" / "gpu-autoscaling.yaml")))
    assert "replicas" not in objects["Deployment"]["spec"]
    hpa = objects["HorizontalPodAutoscaler"]["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "resnet50"}
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (2, 10)
    kinds = {(m["type"], (m.get("resource") or m["pods"]["metric"])["name"]) for m in hpa["metrics"]}
    assert kinds == {("Resource", "cpu"), ("Pods", "modeldeploy_inference_rate")}


def test_templates_fail_on_missing_values() -> None:
    with pytest.raises(jinja2.UndefinedError):
        render.render_template("service.yaml.j2", {"name": "x"})


def test_storage_uri_without_claim_is_rejected() -> None:
    with pytest.raises(ValueError, match="storageUri"):
        render.parse_storage_uri("pvc://")


STORAGE_SPEC = {
    "model": {
        "name": "m",
        "storageUri": "s3://models/m.tar.gz",
        "checksum": "sha256:" + "0f" * 32,
        "storage": {
            "s3Endpoint": "http://minio.minio:9000",
            "s3Region": "eu-west-1",
            "serviceAccountName": "model-reader",
            "volumeSizeLimit": "3Gi",
            "env": [
                {"name": "AWS_ACCESS_KEY_ID", "valueFrom": {"secretKeyRef": {"name": "s3", "key": "id"}}},
                {"name": "LOG", "value": "storage"},
            ],
            "envFrom": [{"secretRef": {"name": "s3-extra"}}, {"prefix": "CFG_", "configMapRef": {"name": "cfg"}}],
        },
    },
    "runtime": {
        "env": [
            {"name": "LOG", "value": "runtime"},
            {"name": "TOKEN", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "token"}}},
        ]
    },
}


def test_storage_credentials_reach_only_the_fetch_init_container() -> None:
    objects = render.render(md_from_spec(STORAGE_SPEC))
    for obj in objects:
        assert_valid_kubernetes_object(obj)
    pod = by_kind(objects)["Deployment"]["spec"]["template"]["spec"]
    (init,) = pod["initContainers"]
    (main,) = pod["containers"]
    assert init["env"] == [
        {"name": "TOKEN", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "token"}}},
        {"name": "AWS_ACCESS_KEY_ID", "valueFrom": {"secretKeyRef": {"name": "s3", "key": "id"}}},
        {"name": "LOG", "value": "storage"},
    ]
    assert init["envFrom"] == [{"secretRef": {"name": "s3-extra"}}, {"prefix": "CFG_", "configMapRef": {"name": "cfg"}}]
    assert main["env"] == [
        {"name": "LOG", "value": "runtime"},
        {"name": "TOKEN", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "token"}}},
    ]
    assert "envFrom" not in main
    assert pod["serviceAccountName"] == "model-reader"


def test_fetch_flags_and_model_volume_size_limit() -> None:
    pod = by_kind(render.render(md_from_spec(STORAGE_SPEC)))["Deployment"]["spec"]["template"]["spec"]
    (init,) = pod["initContainers"]
    assert init["command"] == [
        "modelserve",
        "fetch",
        "--uri=s3://models/m.tar.gz",
        "--model-dir=/models/m",
        "--version=1",
        "--volume-size-limit=3Gi",
        "--checksum=sha256:" + "0f" * 32,
        "--s3-endpoint=http://minio.minio:9000",
        "--s3-region=eu-west-1",
    ]
    volume = next(v for v in pod["volumes"] if v["name"] == "model-store")
    assert volume["emptyDir"] == {"sizeLimit": "3Gi"}
    store_mounts = [m for m in init["volumeMounts"] if m["name"] == "model-store"]
    assert store_mounts == [{"name": "model-store", "mountPath": "/models"}]


def test_default_model_volume_size_limit_is_passed_to_fetch() -> None:
    pod = by_kind(render.render(md_from_spec({"model": {"name": "m", "storageUri": "https://h/m.onnx"}})))
    spec = pod["Deployment"]["spec"]["template"]["spec"]
    assert "--volume-size-limit=10Gi" in spec["initContainers"][0]["command"]
    assert next(v for v in spec["volumes"] if v["name"] == "model-store")["emptyDir"] == {"sizeLimit": "10Gi"}
    assert "serviceAccountName" not in spec


def test_storage_changes_are_a_new_revision() -> None:
    base = {"model": {"name": "m", "storageUri": "s3://b/m"}}
    with_creds = {"model": {**base["model"], "storage": {"envFrom": [{"secretRef": {"name": "s"}}]}}}
    settings_ = render.RenderSettings()
    assert names.revision_of(md_from_spec(base).spec, settings_) != names.revision_of(
        md_from_spec(with_creds).spec, settings_
    )
