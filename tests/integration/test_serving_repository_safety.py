"""The repository API cannot leave the repository, and one bad model never stops the others.

Real modelserve processes; a directory outside the repository holds a loadable model and a
secret. Traversal over HTTP (raw socket, so `..` and encodings arrive as sent) and gRPC
loads nothing from outside and reveals nothing about it.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest

from modelserve import examples
from modelserve.launcher import ServingProcess
from modelserve.proto import grpc_service_pb2 as pb

SECRET = "root:x:0:0:TOPSECRET-7f3a"
SERVICE = "/inference.GRPCInferenceService"


@pytest.fixture(scope="module")
def layout(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("layout")
    outside = base / "outside"
    examples.write_model(outside, "escaped", examples.simple())
    (outside / "secret.pbtxt").write_text(SECRET + "\n")
    root = examples.write_repository(base / "models", ["simple", "mlp"])
    (root / "linkout").symlink_to(outside / "escaped")  # a model directory leading outside
    examples.write_model(root, "passwd", examples.simple())
    (root / "passwd" / "config.pbtxt").symlink_to(outside / "secret.pbtxt")
    examples.write_model(root, "etcpasswd", examples.simple())
    (root / "etcpasswd" / "config.pbtxt").symlink_to("/etc/passwd")
    (root / "verlink").mkdir()
    (root / "verlink" / "1").symlink_to(outside / "escaped" / "1")  # a version directory leading outside
    examples.write_model(root, "fifo", examples.simple())
    os.mkfifo(root / "fifo" / "config.pbtxt")
    examples.write_model(root, "binary", examples.simple())
    (root / "binary" / "config.pbtxt").write_bytes(b"max_batch_size: 8\n\xff\xfe\x00garbage\n")
    examples.write_model(root, "dirconf", examples.simple())
    (root / "dirconf" / "config.pbtxt").mkdir()
    examples.write_model(root, "fifomodel", examples.simple())
    (root / "fifomodel" / "1" / "model.onnx").unlink()
    os.mkfifo(root / "fifomodel" / "1" / "model.onnx")
    return root, outside


def index(server: ServingProcess) -> list[dict[str, str]]:
    response = httpx.post(f"http://{server.http_url}/v2/repository/index", json={}, timeout=10)
    assert response.status_code == 200
    return response.json()


def reveals_nothing(text: str, outside: Path) -> None:
    """No content of a file outside, no path outside (a client's own name may be echoed, clipped)."""
    assert SECRET not in text and "TOPSECRET" not in text and "root:" not in text
    assert str(outside) not in text or "not a single directory name" in text


def index_reveals_nothing(server: ServingProcess, outside: Path) -> None:
    text = json.dumps(index(server))
    reveals_nothing(text, outside)
    assert str(outside) not in text and "escaped" not in text and "linkout" not in text


def test_bad_models_are_load_errors_and_the_others_serve(layout: tuple[Path, Path]) -> None:
    root, outside = layout
    server = ServingProcess(root).start(wait_ready=False, timeout=60)
    try:
        with httpx.Client(base_url=f"http://{server.http_url}", timeout=10) as client:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                rows = {r["name"]: r for r in index(server)}
                if all(r.get("state") in ("READY", "UNAVAILABLE") for r in rows.values()):
                    break
                time.sleep(0.2)
            assert rows["simple"]["state"] == "READY" and rows["mlp"]["state"] == "READY"
            inputs = [
                {"name": n, "datatype": "FP32", "shape": [1, 16], "data": [1.0] * 16} for n in ("INPUT0", "INPUT1")
            ]
            assert client.post("/v2/models/simple/infer", json={"inputs": inputs}).status_code == 200
            reasons = {name: rows[name]["reason"] for name in ("fifo", "binary", "dirconf", "passwd", "etcpasswd")}
            assert rows["fifo"]["state"] == "UNAVAILABLE" and "is not a regular file" in reasons["fifo"]
            assert "not UTF-8" in reasons["binary"]
            assert "is not a regular file" in reasons["dirconf"]
            assert "refers outside the model repository" in reasons["passwd"]
            assert "refers outside the model repository" in reasons["etcpasswd"]
            assert "no version directory" in rows["verlink"]["reason"]
            assert rows["fifomodel"]["state"] == "UNAVAILABLE"
            assert "linkout" not in rows  # a directory leading outside is not part of the repository
            index_reveals_nothing(server, outside)
            # load / unload outside explicit mode: a permanent refusal, 400 (never 503) / Triton's gRPC code
            response = client.post("/v2/repository/models/simple/load")
            assert response.status_code == 400 and "--model-control-mode=explicit" in response.json()["error"]
            assert client.post("/v2/repository/models/simple/unload").status_code == 400
        with grpc.insecure_channel(server.grpc_url) as channel:
            load = channel.unary_unary(f"{SERVICE}/RepositoryModelLoad")
            with pytest.raises(grpc.RpcError) as info:
                load(pb.RepositoryModelLoadRequest(model_name="simple").SerializeToString(), timeout=10)
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "not allowed unless --model-control-mode=explicit" in info.value.details()
    finally:
        assert server.stop(timeout=15) == 0  # a FIFO config never hangs the process


def raw_post(server: ServingProcess, path: bytes) -> tuple[int, str]:
    with socket.create_connection(("127.0.0.1", server.http_port), timeout=10) as sock:
        sock.sendall(b"POST " + path + b" HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body.decode(errors="replace")


@pytest.fixture(scope="module")
def explicit(layout: tuple[Path, Path]) -> Iterator[ServingProcess]:
    root, _ = layout
    server = ServingProcess(root, args=["--model-control-mode=explicit", "--load-model=simple"]).start()
    yield server
    assert server.stop() == 0


def ready_names(server: ServingProcess) -> set[str]:
    return {r["name"] for r in index(server) if r.get("state") == "READY"}


HTTP_TRAVERSALS = [
    b"/v2/repository/models/../load",
    b"/v2/repository/models/%2e%2e/load",
    b"/v2/repository/models/%2E%2E/load",
    b"/v2/repository/models/..%2foutside%2fescaped/load",
    b"/v2/repository/models/%2e%2e%2Foutside%2Fescaped/load",
    b"/v2/repository/models/%2Ftmp/load",
    b"/v2/repository/models/..%5Coutside/load",
    b"/v2/repository/models/simple%00/load",
    b"/v2/repository/models/.hidden/load",
    b"/v2/repository/models/linkout/load",
    b"/v2/repository/models/passwd/load",
    b"/v2/repository/models/etcpasswd/load",
    b"/v2/repository/models/../unload",
]


@pytest.mark.parametrize("path", HTTP_TRAVERSALS, ids=[p.decode() for p in HTTP_TRAVERSALS])
def test_http_traversal_loads_nothing_and_reveals_nothing(
    explicit: ServingProcess, layout: tuple[Path, Path], path: bytes
) -> None:
    status, body = raw_post(explicit, path)
    assert status in (400, 404), body
    message = json.loads(body)["error"]
    assert "\n" not in message and len(message) < 300
    reveals_nothing(message, layout[1])
    assert ready_names(explicit) == {"simple"}
    index_reveals_nothing(explicit, layout[1])


def grpc_load_error(server: ServingProcess, name: str) -> tuple[grpc.StatusCode, str]:
    with grpc.insecure_channel(server.grpc_url) as channel:
        load = channel.unary_unary(f"{SERVICE}/RepositoryModelLoad")
        try:
            load(pb.RepositoryModelLoadRequest(model_name=name).SerializeToString(), timeout=20)
        except grpc.RpcError as exc:
            return exc.code(), exc.details()
    raise AssertionError(f"loading {name!r} succeeded")


def test_grpc_traversal_loads_nothing_and_reveals_nothing(explicit: ServingProcess, layout: tuple[Path, Path]) -> None:
    outside = layout[1]
    names = [
        "../outside/escaped",
        str(outside / "escaped"),
        "..",
        ".",
        "",
        "sub/../simple",
        "simple\0",
        "..\\outside",
        "linkout",
        "passwd",
        "etcpasswd",
        "x" * 100_000,
    ]
    for name in names:
        code, message = grpc_load_error(explicit, name)
        assert code == grpc.StatusCode.INVALID_ARGUMENT, (name[:50], message)
        assert "\n" not in message and len(message) < 400
        reveals_nothing(message, outside)
    assert ready_names(explicit) == {"simple"}
    index_reveals_nothing(explicit, outside)


def test_errors_do_not_tell_whether_an_outside_target_exists(explicit: ServingProcess) -> None:
    """A symlink out of the repository reads like a missing model, whatever it points to."""
    root, _ = explicit.repository, None
    (root / "danglingout").symlink_to("/nonexistent-dir-for-modelserve-tests")
    try:
        _, linked = grpc_load_error(explicit, "linkout")
        _, dangling = grpc_load_error(explicit, "danglingout")
        _, missing = grpc_load_error(explicit, "nosuchmodel")
        assert (
            linked.replace("linkout", "X")
            == dangling.replace("danglingout", "X")
            == missing.replace("nosuchmodel", "X")
        )
        _, up1 = grpc_load_error(explicit, "../outside")
        _, up2 = grpc_load_error(explicit, "../definitely-not-there")
        assert up1.replace("../outside", "X") == up2.replace("../definitely-not-there", "X")
    finally:
        (root / "danglingout").unlink()


def test_explicit_load_of_bad_configs_is_that_models_error(explicit: ServingProcess) -> None:
    for name, fragment in [
        ("fifo", "is not a regular file"),
        ("binary", "not UTF-8"),
        ("dirconf", "is not a regular file"),
        ("passwd", "refers outside the model repository"),
    ]:
        code, message = grpc_load_error(explicit, name)
        assert code == grpc.StatusCode.INVALID_ARGUMENT and fragment in message, message
    with grpc.insecure_channel(explicit.grpc_url) as channel:
        load = channel.unary_unary(f"{SERVICE}/RepositoryModelLoad")
        load(pb.RepositoryModelLoadRequest(model_name="mlp").SerializeToString(), timeout=30)
    assert ready_names(explicit) == {"simple", "mlp"}
    with grpc.insecure_channel(explicit.grpc_url) as channel:
        unload = channel.unary_unary(f"{SERVICE}/RepositoryModelUnload")
        unload(pb.RepositoryModelUnloadRequest(model_name="mlp").SerializeToString(), timeout=30)
    assert ready_names(explicit) == {"simple"}
