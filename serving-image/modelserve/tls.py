"""TLS for the HTTP and gRPC listeners from PEM files (a mounted kubernetes.io/tls Secret).

gRPC takes tritonserver's flags: --grpc-use-ssl, --grpc-server-cert, --grpc-server-key,
--grpc-root-cert and --grpc-use-ssl-mutual (client certificates signed by the root
certificate). tritonserver has no HTTP TLS; modelserve's --http-use-ssl, --http-server-cert
and --http-server-key follow the same pattern (no mutual TLS over HTTP: the kubelet's probes
present no client certificate).
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc


@dataclass(frozen=True)
class TlsFiles:
    cert: Path
    key: Path
    root: Path | None = None
    mutual: bool = False

    @classmethod
    def from_flags(
        cls, flag: str, use: bool, cert: Path | None, key: Path | None, root: Path | None = None, mutual: bool = False
    ) -> TlsFiles | None:
        """The files when TLS is on; ValueError with a one-line reason when they are incomplete or unreadable."""
        if mutual:
            use = True
        if not use:
            return None
        if cert is None or key is None:
            raise ValueError(f"--{flag}-use-ssl needs --{flag}-server-cert and --{flag}-server-key")
        if mutual and root is None:
            raise ValueError(f"--{flag}-use-ssl-mutual needs --{flag}-root-cert")
        for path in (cert, key, root):
            if path is not None and not path.is_file():
                raise ValueError(f"--{flag}: {path} is not a readable file")
        return cls(cert, key, root, mutual)

    def grpc_credentials(self) -> grpc.ServerCredentials:
        return grpc.ssl_server_credentials(
            [(self.key.read_bytes(), self.cert.read_bytes())],
            root_certificates=self.root.read_bytes() if self.root else None,
            require_client_auth=self.mutual,
        )

    def grpc_ssl_context(self) -> ssl.SSLContext:
        """The gRPC listener's TLS on the event loop (modelserve.grpcloop): TLS 1.2+, ALPN h2, mutual on demand."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(str(self.cert), str(self.key))
        context.set_alpn_protocols(["h2"])
        if self.root is not None:
            context.load_verify_locations(cafile=str(self.root))
            context.verify_mode = ssl.CERT_REQUIRED if self.mutual else ssl.CERT_OPTIONAL
        return context

    def uvicorn_settings(self) -> dict[str, Any]:
        settings: dict[str, Any] = {"ssl_certfile": str(self.cert), "ssl_keyfile": str(self.key)}
        if self.root is not None:
            settings["ssl_ca_certs"] = str(self.root)
            settings["ssl_cert_reqs"] = ssl.CERT_OPTIONAL
        return settings
