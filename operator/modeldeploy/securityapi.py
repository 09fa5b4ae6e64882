"""`spec.security`: inference auth and TLS from Secrets, and an optional NetworkPolicy (docs/security.md).

Rendering lives in modeldeploy.hardening; the serving side in modelserve's auth, tls and
shutdown modules.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, StringConstraints

from modeldeploy.apibase import ApiModel
from modeldeploy.storageapi import CONFIG_KEY_PATTERN, DnsSubdomain

HEADER_NAME_PATTERN = r"^[A-Za-z0-9][-A-Za-z0-9]*$"
CIDR_PATTERN = r"^[0-9a-fA-F:.]+/[0-9]{1,3}$"
MAX_PEERS = 16

ConfigKey = Annotated[str, StringConstraints(pattern=CONFIG_KEY_PATTERN, max_length=253)]
HeaderName = Annotated[str, StringConstraints(pattern=HEADER_NAME_PATTERN, max_length=64)]


class AuthSpec(ApiModel):
    """A token every inference, metadata, config, statistics and repository call must carry."""

    secret_name: DnsSubdomain = Field(description="Secret holding the token(s), one per line (several while rotating).")
    key: ConfigKey = Field(default="token", description="Key of the Secret that holds the token(s).")
    header: HeaderName = Field(
        default="authorization",
        description=(
            "Header (gRPC metadata key) carrying the token: 'authorization' expects 'Bearer <token>', any other"
            " name (e.g. x-api-key) the bare token. Health and metrics stay open."
        ),
    )


class TlsSpec(ApiModel):
    """TLS for the serving ports from a kubernetes.io/tls Secret (tls.crt, tls.key, and ca.crt for mutual TLS)."""

    secret_name: DnsSubdomain = Field(description="kubernetes.io/tls Secret with tls.crt and tls.key.")
    http: bool = Field(default=True, description="Serve HTTPS on the HTTP port (probes switch to HTTPS).")
    grpc: bool = Field(default=True, description="Serve gRPC over TLS.")
    grpc_mutual: bool = Field(
        default=False, description="gRPC mutual TLS: clients need a certificate signed by the Secret's ca.crt."
    )


class LabelSelectorSpec(ApiModel):
    """A label selector by exact labels."""

    match_labels: dict[Annotated[str, StringConstraints(max_length=253)], str] = Field(
        default_factory=dict,
        max_length=16,
        description="Labels the selected objects carry; empty selects all.",
    )


class IpBlockSpec(ApiModel):
    """An IP range."""

    cidr: Annotated[str, StringConstraints(pattern=CIDR_PATTERN, max_length=64)] = Field(
        description="CIDR, e.g. 10.0.0.0/8."
    )


class NetworkPeer(ApiModel):
    """Who may connect (networking.k8s.io/v1 NetworkPolicyPeer, exact labels only)."""

    pod_selector: LabelSelectorSpec | None = Field(default=None, description="Pods (in namespaceSelector's).")
    namespace_selector: LabelSelectorSpec | None = Field(default=None, description="Namespaces.")
    ip_block: IpBlockSpec | None = Field(default=None, description="An IP range (alone).")


class NetworkPolicySpec(ApiModel):
    """A NetworkPolicy admitting only these peers to the serving pods."""

    allow_from: list[NetworkPeer] = Field(
        default_factory=list,
        max_length=MAX_PEERS,
        description="Peers allowed to the HTTP and gRPC ports; empty: pods of the same namespace only.",
    )
    metrics_from: list[NetworkPeer] = Field(
        default_factory=list,
        max_length=MAX_PEERS,
        description="Peers allowed to the metrics port (Prometheus); empty: any source.",
    )


class SecuritySpec(ApiModel):
    """Inference auth, TLS and network policy of the serving pods."""

    auth: AuthSpec | None = Field(default=None, description="Require a token on every API but health.")
    tls: TlsSpec | None = Field(default=None, description="TLS for HTTP and/or gRPC.")
    network_policy: NetworkPolicySpec | None = Field(
        default=None, description="Render a NetworkPolicy for the serving pods (needs a CNI that enforces it)."
    )
