"""Hardening rendered by default and on request: shutdown timing, token automount, storage limits, auth, TLS, NetworkPolicy."""

from __future__ import annotations

from typing import Any

import pytest

from modeldeploy import api, hardening, names, reconcile, render


def md(uri: str = "s3://b/fraud", **spec: Any) -> api.ModelDeployment:
    return api.parse_model_deployment(
        {"apiVersion": api.API_VERSION, "kind": api.KIND, "metadata": {"name": "fraud", "namespace": "ml"},
         "spec": {"model": {"name": "fraud", "storageUri": uri}, "replicas": 2, **spec}}
    )  # fmt: skip


def pod_spec(objects: list[dict[str, Any]]) -> dict[str, Any]:
    return next(o for o in objects if o["kind"] == "Deployment")["spec"]["template"]["spec"]


def flag(container: dict[str, Any], name: str) -> str | None:
    return next((a.split("=", 1)[1] for a in container["command"] if a.startswith(f"--{name}=")), None)


@pytest.mark.parametrize("uri", ["s3://b/fraud", "pvc://models/fraud"])
def test_defaults_lock_the_pod_down(uri: str) -> None:
    pod = pod_spec(render.render(md(uri)))
    assert pod["automountServiceAccountToken"] is False
    assert all("sizeLimit" in v["emptyDir"] for v in pod["volumes"] if "emptyDir" in v)
    for container in [*pod["containers"], *pod.get("initContainers", [])]:
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
    serving = pod["containers"][0]
    limits, requests = serving["resources"]["limits"], serving["resources"]["requests"]
    emptydirs = sum(hardening.size_bytes(v["emptyDir"]["sizeLimit"]) for v in pod["volumes"]
                    if "emptyDir" in v and v["emptyDir"].get("medium") != "Memory")  # fmt: skip
    assert hardening.size_bytes(limits["ephemeral-storage"]) == emptydirs + hardening.LOGS_ALLOWANCE_MI * 2**20
    assert requests["ephemeral-storage"] == "512Mi"
    assert "lifecycle" not in serving  # the delay runs inside modelserve, after SIGTERM
    assert {p["httpGet"]["scheme"] for p in (serving["readinessProbe"], serving["livenessProbe"])} == {"HTTP"}


@pytest.mark.parametrize(
    ("grace", "delay", "expected"),
    [(30, None, (5, 23)), (60, 10, (10, 48)), (8, 5, (5, 1)), (5, 5, (2, 1)), (1, None, (0, 1)), (30, 0, (0, 28))],
)
def test_shutdown_delay_and_drain_fit_the_grace_period(
    grace: int, delay: int | None, expected: tuple[int, int]
) -> None:
    pod_settings: dict[str, Any] = {"terminationGracePeriodSeconds": grace}
    if delay is not None:
        pod_settings["shutdownDelaySeconds"] = delay
    pod = pod_spec(render.render(md(pod=pod_settings)))
    serving = pod["containers"][0]
    rendered = (int(flag(serving, "shutdown-delay-secs") or -1), int(flag(serving, "exit-timeout-secs") or -1))
    assert rendered == expected
    assert pod["terminationGracePeriodSeconds"] == grace
    assert sum(rendered) <= max(grace - hardening.EXIT_MARGIN_SECONDS, 1)


def test_default_delay_leaves_the_spec_and_its_revision_unchanged() -> None:
    assert "shutdownDelaySeconds" not in md().spec.to_wire()["pod"]


def test_storage_workload_identity_keeps_the_token() -> None:
    pod = pod_spec(render.render(md(model={"name": "fraud", "storageUri": "s3://b/fraud",
                                           "storage": {"serviceAccountName": "model-reader"}})))  # fmt: skip
    assert pod["automountServiceAccountToken"] is True and pod["serviceAccountName"] == "model-reader"


def test_auth_and_tls_from_secrets() -> None:
    security = {
        "auth": {"secretName": "fraud-token", "key": "tokens", "header": "X-Api-Key"},
        "tls": {"secretName": "fraud-tls", "grpcMutual": True},
    }
    pod = pod_spec(render.render(md(security=security)))
    serving = pod["containers"][0]
    assert flag(serving, "auth-token-file") == f"{hardening.AUTH_DIR}/token"
    assert flag(serving, "auth-header") == "x-api-key"
    assert {"--http-use-ssl", "--grpc-use-ssl", "--grpc-use-ssl-mutual"} <= set(serving["command"])
    assert flag(serving, "grpc-root-cert") == f"{hardening.TLS_DIR}/ca.crt"
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["auth-token"]["secret"] == {
        "secretName": "fraud-token", "items": [{"key": "tokens", "path": "token"}], "defaultMode": 0o440
    }  # fmt: skip
    assert volumes["tls"]["secret"]["secretName"] == "fraud-tls"
    mounts = {m["name"]: m for m in serving["volumeMounts"]}
    assert mounts["auth-token"]["readOnly"] and mounts["tls"]["mountPath"] == hardening.TLS_DIR
    assert serving["readinessProbe"]["httpGet"]["scheme"] == "HTTPS"
    assert serving["livenessProbe"]["httpGet"]["scheme"] == "HTTPS"


def test_grpc_only_tls_keeps_http_probes() -> None:
    serving = pod_spec(render.render(md(security={"tls": {"secretName": "t", "http": False}})))["containers"][0]
    assert "--http-use-ssl" not in serving["command"] and "--grpc-use-ssl" in serving["command"]
    assert serving["readinessProbe"]["httpGet"]["scheme"] == "HTTP"


def network_policies(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == "NetworkPolicy"]


def test_network_policy_only_on_request_and_pruned_otherwise() -> None:
    assert network_policies(render.render(md())) == []
    assert network_policies(render.render(md(security={"auth": {"secretName": "t"}}))) == []
    refs = {(r.kind, r.name) for r in reconcile.managed_refs(md())}
    assert ("NetworkPolicy", "fraud") in refs


def test_network_policy_defaults_to_the_namespace() -> None:
    (policy,) = network_policies(render.render(md(security={"networkPolicy": {}})))
    assert policy["apiVersion"] == "networking.k8s.io/v1"
    assert policy["metadata"] == {
        "name": "fraud",
        "namespace": "ml",
        "labels": render.common_labels(md()),
        "ownerReferences": [render.owner_reference(md())],
    }
    assert policy["spec"]["podSelector"] == {"matchLabels": {names.LABEL_DEPLOYMENT: "fraud"}}
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    serving, metrics = policy["spec"]["ingress"]
    assert serving["from"] == [{"podSelector": {}}]
    assert [p["port"] for p in serving["ports"]] == [names.HTTP_PORT, names.GRPC_PORT]
    assert metrics == {"ports": [{"protocol": "TCP", "port": names.METRICS_PORT}]}


def test_network_policy_peers() -> None:
    spec = {
        "allowFrom": [
            {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "gateway"}},
             "podSelector": {"matchLabels": {"app": "envoy"}}},
            {"ipBlock": {"cidr": "10.0.0.0/8"}},
        ],
        "metricsFrom": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}],
    }  # fmt: skip
    (policy,) = network_policies(render.render(md(security={"networkPolicy": spec})))
    serving, metrics = policy["spec"]["ingress"]
    assert serving["from"][0] == {
        "podSelector": {"matchLabels": {"app": "envoy"}},
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "gateway"}},
    }
    assert serving["from"][1] == {"ipBlock": {"cidr": "10.0.0.0/8"}}
    assert metrics["from"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]


@pytest.mark.parametrize(
    "security",
    [
        {"auth": {}},
        {"auth": {"secretName": "Bad_Name"}},
        {"auth": {"secretName": "t", "header": "bad header"}},
        {"tls": {"secretName": "t", "mtls": True}},
        {"networkPolicy": {"allowFrom": [{"ipBlock": {"cidr": "everything"}}]}},
    ],
)
def test_bad_security_specs_are_refused(security: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="security"):
        md(security=security)
