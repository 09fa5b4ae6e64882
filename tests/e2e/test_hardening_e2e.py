"""The rendered hardening on a real API server: accepted by admission and validation, and present.

The operator runs on this machine watching a scratch namespace; a ModelDeployment with every
hardening option set must yield a Deployment whose pod template the API server kept with its
grace period, shutdown flags, token automount, emptyDir sizeLimits, ephemeral-storage bounds and
Secret volumes, and a NetworkPolicy that is pruned when the option goes.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.conftest import apply_md, get, kubectl, operator_in_scratch_namespace, wait_for


@pytest.fixture(scope="module")
def operator_namespace(crd_installed: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with operator_in_scratch_namespace("md-harden-e2e", tmp_path_factory.mktemp("operator")) as name:
        yield name


def flag(container: dict[str, Any], name: str) -> str | None:
    return next((a.split("=", 1)[1] for a in container["command"] if a.startswith(f"--{name}=")), None)


SECURITY = {
    "auth": {"secretName": "hardened-token"},
    "tls": {"secretName": "hardened-tls", "grpcMutual": True},
    "networkPolicy": {
        "allowFrom": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "gateway"}}}],
        "metricsFrom": [{"ipBlock": {"cidr": "10.0.0.0/8"}}],
    },
}


def test_hardened_pod_template_and_network_policy_are_accepted_and_present(operator_namespace: str) -> None:
    ns = operator_namespace
    pod = {"terminationGracePeriodSeconds": 45, "shutdownDelaySeconds": 10}
    apply_md(ns, "hardened", replicas=1, pod=pod, security=SECURITY)
    deployment = wait_for(lambda: get("deployment", ns, "hardened"), what="Deployment")
    template = deployment["spec"]["template"]["spec"]
    assert template["terminationGracePeriodSeconds"] == 45
    assert template["automountServiceAccountToken"] is False
    serving = template["containers"][0]
    assert "lifecycle" not in serving  # no preStop: the delay runs inside modelserve after SIGTERM
    delay, drain = int(flag(serving, "shutdown-delay-secs") or -1), int(flag(serving, "exit-timeout-secs") or -1)
    assert (delay, drain) == (10, 33) and delay + drain < 45
    emptydirs = [v for v in template["volumes"] if "emptyDir" in v]
    assert emptydirs and all(v["emptyDir"].get("sizeLimit") for v in emptydirs), emptydirs
    assert serving["resources"]["limits"]["ephemeral-storage"] and serving["resources"]["requests"]["ephemeral-storage"]
    secrets = {v["name"]: v["secret"]["secretName"] for v in template["volumes"] if "secret" in v}
    assert secrets == {"auth-token": "hardened-token", "tls": "hardened-tls"}
    assert serving["readinessProbe"]["httpGet"]["scheme"] == "HTTPS"
    assert {"--http-use-ssl", "--grpc-use-ssl-mutual"} <= set(serving["command"])

    policy = wait_for(lambda: get("networkpolicy", ns, "hardened"), what="NetworkPolicy")
    assert policy["spec"]["podSelector"] == {"matchLabels": {"modeldeploy.io/deployment": "hardened"}}
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    serving_rule, metrics_rule = policy["spec"]["ingress"]
    assert serving_rule["from"] == SECURITY["networkPolicy"]["allowFrom"]  # type: ignore[index]
    assert {p["port"] for p in serving_rule["ports"]} == {8000, 8001}
    assert metrics_rule["from"] == [{"ipBlock": {"cidr": "10.0.0.0/8"}}]
    assert policy["metadata"]["ownerReferences"][0]["kind"] == "ModelDeployment"

    apply_md(ns, "hardened", replicas=1, pod=pod)  # the option goes: the policy is pruned
    wait_for(lambda: get("networkpolicy", ns, "hardened") is None, what="NetworkPolicy pruned")


def test_workload_identity_keeps_the_token(operator_namespace: str) -> None:
    ns = operator_namespace
    kubectl("create", "serviceaccount", "model-reader", "-n", ns)
    apply_md(ns, "identity", replicas=1, model={"name": "m", "storageUri": "s3://bucket/m",
                                             "storage": {"serviceAccountName": "model-reader"}})  # fmt: skip
    deployment = wait_for(lambda: get("deployment", ns, "identity"), what="Deployment")
    template = deployment["spec"]["template"]["spec"]
    assert template["automountServiceAccountToken"] is True and template["serviceAccountName"] == "model-reader"


def test_defaults_fit_the_default_grace_period(operator_namespace: str) -> None:
    ns = operator_namespace
    apply_md(ns, "plain", replicas=1)
    deployment = wait_for(lambda: get("deployment", ns, "plain"), what="Deployment")
    template = deployment["spec"]["template"]["spec"]
    serving = template["containers"][0]
    assert template["terminationGracePeriodSeconds"] == 30
    assert (flag(serving, "shutdown-delay-secs"), flag(serving, "exit-timeout-secs")) == ("5", "23")
    assert template["automountServiceAccountToken"] is False
    assert get("networkpolicy", ns, "plain") is None
