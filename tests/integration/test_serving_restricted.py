"""--http-restricted-api / --grpc-restricted-protocol on a real modelserve (tritonserver's semantics)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from modelserve import examples
from modelserve.launcher import ServingProcess
from modelserve.proto import grpc_service_pb2 as pb

KEY, VALUE = "admin-key", "s3cret"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServingProcess]:
    repo = examples.write_repository(tmp_path_factory.mktemp("repo") / "models", ["simple", "mlp"])
    args = [
        "--model-control-mode=explicit",
        "--load-model=simple",
        f"--http-restricted-api=model-repository,statistics:{KEY}={VALUE}",
        f"--grpc-restricted-protocol=model-repository,statistics:{KEY}={VALUE}",
        "--grpc-restricted-protocol=model-config:other-key=other",
    ]
    proc = ServingProcess(repo, args=args).start()
    yield proc
    assert proc.stop() == 0


def test_http_restricted_apis_need_the_header(server: ServingProcess) -> None:
    with httpx.Client(base_url=f"http://{server.http_url}", timeout=10) as client:
        for method, path in [("POST", "/v2/repository/index"), ("POST", "/v2/repository/models/mlp/load"),
                             ("GET", "/v2/models/stats"), ("GET", "/v2/models/simple/stats")]:  # fmt: skip
            response = client.request(method, path)
            assert response.status_code == 403, (path, response.text)
            assert response.json()["error"] == f"This API is restricted, expecting header '{KEY}'"
            wrong = client.request(method, path, headers={KEY: VALUE + "x"})
            assert wrong.status_code == 403
        assert client.post("/v2/repository/index", headers={"Admin-Key": VALUE}).status_code == 200
        assert client.get("/v2/models/stats", headers={KEY: VALUE}).status_code == 200
        # unrestricted groups stay open: health, metadata, config, inference
        assert client.get("/v2/health/ready").status_code == 200
        assert client.get("/v2/models/simple").status_code == 200
        assert client.get("/v2/models/simple/config").status_code == 200
    http = httpclient.InferenceServerClient(server.http_url)
    item = httpclient.InferInput("INPUT0", [1, 16], "FP32")
    item.set_data_from_numpy(np.ones((1, 16), np.float32))
    other = httpclient.InferInput("INPUT1", [1, 16], "FP32")
    other.set_data_from_numpy(np.ones((1, 16), np.float32))
    assert http.infer("simple", [item, other]).as_numpy("OUTPUT0").tolist() == [[2.0] * 16]
    with pytest.raises(InferenceServerException, match="restricted"):
        http.load_model("mlp")
    http.load_model("mlp", headers={KEY: VALUE})
    http.unload_model("mlp", headers={KEY: VALUE})


def test_grpc_restricted_protocols_need_the_metadata(server: ServingProcess) -> None:
    client = grpcclient.InferenceServerClient(server.grpc_url)
    with pytest.raises(InferenceServerException) as info:
        client.get_model_repository_index()
    assert info.value.status() == "StatusCode.PERMISSION_DENIED"
    assert f"expecting header '{KEY}'" in info.value.message()
    with pytest.raises(InferenceServerException) as info:
        client.get_inference_statistics("simple")
    assert info.value.status() == "StatusCode.PERMISSION_DENIED"
    with pytest.raises(InferenceServerException) as info:
        client.get_model_config("simple")
    assert "expecting header 'other-key'" in info.value.message()
    assert client.get_model_config("simple", headers={"other-key": "other"}).config.name == "simple"
    names = {m.name for m in client.get_model_repository_index(headers={KEY: VALUE}).models}
    assert names == {"simple", "mlp"}
    assert client.is_server_ready() and client.get_model_metadata("simple").name == "simple"
    client.close()
    with grpc.insecure_channel(server.grpc_url) as channel:  # health and inference stay open
        live = channel.unary_unary("/inference.GRPCInferenceService/ServerLive")
        assert pb.ServerLiveResponse.FromString(live(pb.ServerLiveRequest().SerializeToString(), timeout=5)).live


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--http-restricted-api=model-repository"], "expected <api>[,<api>...]:<key>=<value>"),
        (["--http-restricted-api=model-repository:k"], "expected <api>"),
        (["--grpc-restricted-protocol=bogus:k=v"], "unknown api 'bogus'"),
        (
            ["--http-restricted-api=model-repository,health:k1=v1", "--http-restricted-api=metadata,health:k2=v2"],
            "api 'health' can not be specified in multiple config groups",
        ),
    ],
)
def test_malformed_restriction_flags_exit_2_with_one_line(tmp_path: Path, flags: list[str], message: str) -> None:
    repo = examples.write_repository(tmp_path / "models", ["simple"])
    result = subprocess.run(
        [sys.executable, "-m", "modelserve.cli", f"--model-repository={repo}", *flags],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and message in result.stderr, result.stderr
