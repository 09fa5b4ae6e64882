"""Rendering of the serving pods' hardening: shutdown timing, token automount, storage limits, auth, TLS, NetworkPolicy.

Shutdown (docs/security.md): modelserve reports not ready on SIGTERM, serves
`shutdownDelaySeconds` while endpoints propagate, then drains for `--exit-timeout-secs`;
both fit inside `terminationGracePeriodSeconds` with a margin for the process to exit. No
`preStop` hook is rendered: the delay runs inside modelserve after SIGTERM, where it can
close keep-alive connections and send GOAWAY, which a `preStop` sleep cannot.
"""

from __future__ import annotations

import re
from typing import Any

from modeldeploy import api
from modeldeploy.securityapi import NetworkPeer
from modeldeploy.storageapi import DEFAULT_VOLUME_SIZE_LIMIT

DEFAULT_SHUTDOWN_DELAY_SECONDS = 5
EXIT_MARGIN_SECONDS = 2  # between the end of the drain and the kubelet's SIGKILL
CACHE_SIZE_LIMIT_DEFAULT = DEFAULT_VOLUME_SIZE_LIMIT
LOGS_ALLOWANCE_MI = 512  # the container's own writes: logs only (the root filesystem is read-only)
AUTH_DIR = "/etc/modelserve/auth"
TLS_DIR = "/etc/modelserve/tls"
SECRET_MODE = 0o440
_UNITS = {"": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15}
_UNITS.update({"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50})


def shutdown_timing(spec: api.ModelDeploymentSpec) -> tuple[int, int]:
    """(shutdown delay, exit timeout) in seconds, their sum within the grace period less the margin."""
    grace = spec.pod.termination_grace_period_seconds
    wanted = spec.pod.shutdown_delay_seconds
    delay = min(DEFAULT_SHUTDOWN_DELAY_SECONDS if wanted is None else wanted, max(0, grace - EXIT_MARGIN_SECONDS - 1))
    return delay, max(1, grace - delay - EXIT_MARGIN_SECONDS)


def shutdown_flags(spec: api.ModelDeploymentSpec) -> list[str]:
    delay, exit_timeout = shutdown_timing(spec)
    return [f"--shutdown-delay-secs={delay}", f"--exit-timeout-secs={exit_timeout}"]


def automount_token(spec: api.ModelDeploymentSpec) -> bool:
    """The pods never call the API server: a token only when storage uses workload identity."""
    return bool(spec.model.storage and spec.model.storage.service_account_name)


def size_bytes(quantity: str) -> int:
    match = re.fullmatch(r"([0-9]+)(Ki|Mi|Gi|Ti|Pi|k|M|G|T|P)?", quantity)
    if match is None:
        raise ValueError(f"not a byte size: {quantity!r}")
    return int(match[1]) * _UNITS[match[2] or ""]


def _mebibytes(size: int) -> str:
    return f"{-(-size // 2**20)}Mi"


def ephemeral_storage(model_volume: str | None, cache_volume: str) -> dict[str, str]:
    """Requests and limits of the serving container's ephemeral storage: its emptyDirs and its logs.

    The kubelet counts disk-backed emptyDirs against the sum of the containers' limits, so the
    limit covers the model volume (when the model is fetched), the cache and the logs. The
    request is the logs' allowance only: the model's real size is unknown here, and a request
    of the whole volume limit would keep pods off nodes they fit on.
    """
    model = size_bytes(model_volume) if model_volume else 0
    logs = LOGS_ALLOWANCE_MI * 2**20
    return {"request": _mebibytes(logs), "limit": _mebibytes(model + size_bytes(cache_volume) + logs)}


def security_flags(spec: api.ModelDeploymentSpec) -> list[str]:
    security = spec.security
    flags: list[str] = []
    if security is None:
        return flags
    if security.auth is not None:
        flags += [f"--auth-token-file={AUTH_DIR}/token", f"--auth-header={security.auth.header.lower()}"]
    tls = security.tls
    if tls is not None and tls.http:
        flags += ["--http-use-ssl", f"--http-server-cert={TLS_DIR}/tls.crt", f"--http-server-key={TLS_DIR}/tls.key"]
    if tls is not None and (tls.grpc or tls.grpc_mutual):
        flags += ["--grpc-use-ssl", f"--grpc-server-cert={TLS_DIR}/tls.crt", f"--grpc-server-key={TLS_DIR}/tls.key"]
        if tls.grpc_mutual:
            flags += ["--grpc-use-ssl-mutual", f"--grpc-root-cert={TLS_DIR}/ca.crt"]
    return flags


def security_volumes(spec: api.ModelDeploymentSpec) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Secret volumes and their read-only mounts for auth tokens and TLS files."""
    volumes: list[dict[str, Any]] = []
    mounts: list[dict[str, Any]] = []
    security = spec.security
    if security is not None and security.auth is not None:
        items = [{"key": security.auth.key, "path": "token"}]
        secret = {"secretName": security.auth.secret_name, "items": items, "defaultMode": SECRET_MODE}
        volumes.append({"name": "auth-token", "secret": secret})
        mounts.append({"name": "auth-token", "mountPath": AUTH_DIR, "readOnly": True})
    if security is not None and security.tls is not None:
        volumes.append({"name": "tls", "secret": {"secretName": security.tls.secret_name, "defaultMode": SECRET_MODE}})
        mounts.append({"name": "tls", "mountPath": TLS_DIR, "readOnly": True})
    return volumes, mounts


def probe_scheme(spec: api.ModelDeploymentSpec) -> str:
    tls = spec.security.tls if spec.security else None
    return "HTTPS" if tls is not None and tls.http else "HTTP"


def _peer(peer: NetworkPeer) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if peer.pod_selector is not None:
        out["podSelector"] = {"matchLabels": dict(peer.pod_selector.match_labels)}
    if peer.namespace_selector is not None:
        out["namespaceSelector"] = {"matchLabels": dict(peer.namespace_selector.match_labels)}
    if peer.ip_block is not None:
        out["ipBlock"] = {"cidr": peer.ip_block.cidr}
    return out


def wants_network_policy(spec: api.ModelDeploymentSpec) -> bool:
    return spec.security is not None and spec.security.network_policy is not None


def build_network_policy_context(
    md: api.ModelDeployment, labels: dict[str, str], selector: dict[str, str], ports: dict[str, int]
) -> dict[str, Any]:
    """Ingress to every track's pods: HTTP and gRPC from the allowed peers, metrics from its own."""
    policy = md.spec.security.network_policy if md.spec.security else None
    assert policy is not None
    serving_from = [_peer(p) for p in policy.allow_from] or [{"podSelector": {}}]  # the same namespace
    serving_rule: dict[str, Any] = {
        "from": serving_from,
        "ports": [{"protocol": "TCP", "port": ports["http"]}, {"protocol": "TCP", "port": ports["grpc"]}],
    }
    metrics_rule: dict[str, Any] = {"ports": [{"protocol": "TCP", "port": ports["metrics"]}]}
    if policy.metrics_from:
        metrics_rule["from"] = [_peer(p) for p in policy.metrics_from]
    return {
        "name": md.metadata.name,
        "namespace": md.metadata.namespace,
        "labels": labels,
        "selector": selector,
        "ingress": [serving_rule, metrics_rule],
    }
