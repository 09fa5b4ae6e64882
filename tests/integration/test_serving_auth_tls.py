"""Token auth and TLS on a real modelserve, with the real tritonclient over HTTP and gRPC."""

from __future__ import annotations

import datetime
import http.client
import ipaddress
import ssl
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from tritonclient.utils import InferenceServerException

from modelserve import examples
from modelserve.launcher import ServingProcess

TOKEN = "s3cr3t-token"


def inputs(module: object) -> list[object]:
    items = []
    for name in ("INPUT0", "INPUT1"):
        item = module.InferInput(name, [1, 16], "FP32")  # type: ignore[attr-defined]
        item.set_data_from_numpy(np.full((1, 16), 2, np.float32))
        items.append(item)
    return items


def write_pki(directory: Path) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, as PEM files."""
    now = datetime.datetime.now(datetime.UTC)

    def issue(subject: str, key: ec.EllipticCurvePrivateKey, issuer: tuple[str, ec.EllipticCurvePrivateKey] | None,
              ca: bool = False, san: bool = False) -> x509.Certificate:  # fmt: skip
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
        issuer_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer[0])]) if issuer else name
        builder = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(issuer_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if san:
            alt = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            builder = builder.add_extension(x509.SubjectAlternativeName(alt), critical=False)
        return builder.sign(issuer[1] if issuer else key, hashes.SHA256())

    paths: dict[str, Path] = {}
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = issue("test-ca", ca_key, None, ca=True)
    for role, san in (("server", True), ("client", False)):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = issue(role, key, ("test-ca", ca_key), san=san)
        paths[f"{role}.crt"] = directory / f"{role}.crt"
        paths[f"{role}.crt"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        paths[f"{role}.key"] = directory / f"{role}.key"
        paths[f"{role}.key"].write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
    paths["ca.crt"] = directory / "ca.crt"
    paths["ca.crt"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    return paths


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return examples.write_repository(tmp_path_factory.mktemp("repo") / "models", ["simple"])


@pytest.fixture(scope="module")
def bearer_server(repo: Path) -> Iterator[ServingProcess]:
    token_file = repo.parent / "token"
    token_file.write_text(f"old-token\n{TOKEN}\n")
    proc = ServingProcess(repo, args=[f"--auth-token-file={token_file}"]).start()
    yield proc
    assert proc.stop() == 0


def raw_status(server: ServingProcess, method: str, path: str, headers: dict[str, str]) -> tuple[int, dict[str, str]]:
    conn = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=5)
    conn.request(method, path, b"{}" if method == "POST" else None, headers)
    response = conn.getresponse()
    response.read()
    conn.close()
    return response.status, {k.lower(): v for k, v in response.getheaders()}


def test_http_needs_the_bearer_token_but_health_is_open(bearer_server: ServingProcess) -> None:
    client = httpclient.InferenceServerClient(bearer_server.http_url)
    with pytest.raises(InferenceServerException, match="missing credentials"):
        client.infer("simple", inputs(httpclient))
    for bad in ("Bearer wrong", f"Basic {TOKEN}", TOKEN, f"Bearer {TOKEN}x"):
        with pytest.raises(InferenceServerException, match=r"credentials|Bearer"):
            client.infer("simple", inputs(httpclient), headers={"Authorization": bad})
    good = {"Authorization": f"Bearer {TOKEN}"}
    assert (client.infer("simple", inputs(httpclient), headers=good).as_numpy("OUTPUT0") == 4).all()
    assert client.infer("simple", inputs(httpclient), headers={"authorization": "bearer old-token"}) is not None
    assert client.is_server_ready() and client.is_server_live() and client.is_model_ready("simple")
    status, headers = raw_status(bearer_server, "GET", "/v2/models/simple", {})
    assert status == 401 and headers["www-authenticate"] == "Bearer"
    assert raw_status(bearer_server, "POST", "/v2/repository/index", {})[0] == 401
    assert raw_status(bearer_server, "GET", "/v2/models/stats", good)[0] == 200
    assert "nv_inference_request_success" in bearer_server.metrics_text()  # metrics stay open


def test_grpc_needs_the_bearer_token_but_health_is_open(bearer_server: ServingProcess) -> None:
    client = grpcclient.InferenceServerClient(bearer_server.grpc_url)
    with pytest.raises(InferenceServerException, match="UNAUTHENTICATED"):
        client.infer("simple", inputs(grpcclient))
    with pytest.raises(InferenceServerException, match="UNAUTHENTICATED"):
        client.get_model_metadata("simple")
    good = {"authorization": f"Bearer {TOKEN}"}
    assert (client.infer("simple", inputs(grpcclient), headers=good).as_numpy("OUTPUT0") == 4).all()
    assert client.get_model_metadata("simple", headers=good).name == "simple"
    assert client.is_server_ready() and client.is_model_ready("simple")
    client.close()


def test_header_key_auth(repo: Path) -> None:
    token_file = repo.parent / "api-key"
    token_file.write_text(TOKEN)
    server = ServingProcess(repo, args=[f"--auth-token-file={token_file}", "--auth-header=X-Api-Key"]).start()
    try:
        http = httpclient.InferenceServerClient(server.http_url)
        grpc = grpcclient.InferenceServerClient(server.grpc_url)
        with pytest.raises(InferenceServerException, match="x-api-key"):
            http.infer("simple", inputs(httpclient), headers={"Authorization": f"Bearer {TOKEN}"})
        assert http.infer("simple", inputs(httpclient), headers={"X-Api-Key": TOKEN}) is not None
        with pytest.raises(InferenceServerException, match="UNAUTHENTICATED"):
            grpc.infer("simple", inputs(grpcclient), headers={"x-api-key": "nope"})
        assert grpc.infer("simple", inputs(grpcclient), headers={"x-api-key": TOKEN}) is not None
        grpc.close()
    finally:
        assert server.stop() == 0


def test_missing_token_file_is_a_one_line_start_error(repo: Path) -> None:
    server = ServingProcess(repo, args=[f"--auth-token-file={repo.parent / 'absent'}"])
    with pytest.raises(RuntimeError, match="exited with 2") as info:
        server.start(timeout=20)
    assert "error: --auth-token-file" in str(info.value) and "Traceback" not in str(info.value)


def test_tls_over_http_and_mutual_tls_over_grpc(repo: Path, tmp_path: Path) -> None:
    pki = write_pki(tmp_path)
    args = [
        "--http-use-ssl", f"--http-server-cert={pki['server.crt']}", f"--http-server-key={pki['server.key']}",
        "--grpc-use-ssl-mutual", f"--grpc-server-cert={pki['server.crt']}", f"--grpc-server-key={pki['server.key']}",
        f"--grpc-root-cert={pki['ca.crt']}",
    ]  # fmt: skip
    server = ServingProcess(repo, args=args, https_ca=pki["ca.crt"]).start()
    try:
        context = ssl.create_default_context(cafile=str(pki["ca.crt"]))
        conn = http.client.HTTPSConnection("127.0.0.1", server.http_port, context=context, timeout=5)
        conn.request("GET", "/v2/health/ready")
        assert conn.getresponse().status == 200
        conn.close()
        assert server.http_get("/v2/health/ready") == 200
        plain = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=5)
        with pytest.raises((http.client.HTTPException, ConnectionError)):
            plain.request("GET", "/v2/health/ready")
            plain.getresponse()
        mutual = grpcclient.InferenceServerClient(
            f"localhost:{server.grpc_port}",
            ssl=True,
            root_certificates=str(pki["ca.crt"]),
            private_key=str(pki["client.key"]),
            certificate_chain=str(pki["client.crt"]),
        )
        assert (mutual.infer("simple", inputs(grpcclient)).as_numpy("OUTPUT0") == 4).all()
        mutual.close()
        anonymous = grpcclient.InferenceServerClient(
            f"localhost:{server.grpc_port}", ssl=True, root_certificates=str(pki["ca.crt"])
        )
        with pytest.raises(InferenceServerException, match="UNAVAILABLE"):
            anonymous.is_server_live(client_timeout=5)
        anonymous.close()
    finally:
        assert server.stop() == 0
