"""`modelserve fetch` of s3:// and gs:// against real API servers on loopback (moto, gcp-storage-emulator).

A model directory under a prefix, one archive with its checksum, the rendered init container's
command with credentials in its environment; a wrong key, a missing object, a missing prefix and
an unreachable endpoint each end in one line naming the URI.
"""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from modeldeploy import api, render
from modelserve.fetch import FetchError, FetchOptions, fetch
from tests.integration.store_servers import S3Server, free_port, gcs_emulator, moto_s3

CONFIG = b"max_batch_size: 4\n"
MODEL = b"onnx model bytes"


def archive() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in (("config.pbtxt", CONFIG), ("3/model.onnx", MODEL)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


ARCHIVE = archive()
OBJECTS = {
    "models/iris/config.pbtxt": CONFIG,
    "models/iris/3/model.onnx": MODEL,
    "models/iris-old/3/model.onnx": b"not this one",
    "archives/iris.tar.gz": ARCHIVE,
}


def assert_one_line(exc: pytest.ExceptionInfo[FetchError], uri: str) -> None:
    message = str(exc.value)
    assert "\n" not in message and len(message) < 500, message
    assert message.startswith(f"fetch {uri}: "), message


def no_aws_config(monkeypatch: pytest.MonkeyPatch) -> None:
    """Credentials only from the environment; never the instance metadata service."""
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    import boto3

    with moto_s3(tmp_path_factory.mktemp("moto")) as server:
        client = boto3.client(
            "s3",
            endpoint_url=server.endpoint,
            region_name="eu-west-1",
            aws_access_key_id=server.access_key,
            aws_secret_access_key=server.secret_key,
        )
        client.create_bucket(Bucket="ml-models", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
        for key, data in OBJECTS.items():
            client.put_object(Bucket="ml-models", Key=key, Body=data)
        yield server


@pytest.fixture
def s3_env(s3: S3Server, monkeypatch: pytest.MonkeyPatch) -> S3Server:
    no_aws_config(monkeypatch)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3.secret_key)
    return s3


def s3_options(server: S3Server, **extra: Any) -> FetchOptions:
    return FetchOptions(s3_endpoint=server.endpoint, s3_region="eu-west-1", retries=1, retry_backoff=0.05, **extra)


def test_s3_prefix_is_a_model_directory(tmp_path: Path, s3_env: S3Server) -> None:
    fetch("s3://ml-models/models/iris", tmp_path / "iris", 3, s3_options(s3_env))
    assert (tmp_path / "iris" / "config.pbtxt").read_bytes() == CONFIG
    assert (tmp_path / "iris" / "3" / "model.onnx").read_bytes() == MODEL
    assert sorted(p.name for p in tmp_path.iterdir()) == ["iris"], "iris-old leaked in, or staging was left"


def test_s3_archive_with_checksum(tmp_path: Path, s3_env: S3Server) -> None:
    checksum = "sha256:" + hashlib.sha256(ARCHIVE).hexdigest()
    fetch("s3://ml-models/archives/iris.tar.gz", tmp_path / "iris", 3, s3_options(s3_env, checksum=checksum))
    assert (tmp_path / "iris" / "3" / "model.onnx").read_bytes() == MODEL


def test_rendered_init_container_with_credentials_from_the_environment(tmp_path: Path, s3: S3Server) -> None:
    """The renderer's fetch command, run as the init container would, with the Secret's values as env."""
    md = api.parse_model_deployment(
        {
            "apiVersion": api.API_VERSION,
            "kind": api.KIND,
            "metadata": {"name": "iris"},
            "spec": {
                "model": {
                    "name": "iris",
                    "version": 3,
                    "storageUri": "s3://ml-models/archives/iris.tar.gz",
                    "checksum": "sha256:" + hashlib.sha256(ARCHIVE).hexdigest(),
                    "storage": {
                        "s3Endpoint": s3.endpoint,
                        "s3Region": "eu-west-1",
                        "env": [
                            {"name": "AWS_ACCESS_KEY_ID", "valueFrom": {"secretKeyRef": {"name": "s3", "key": "id"}}},
                            {
                                "name": "AWS_SECRET_ACCESS_KEY",
                                "valueFrom": {"secretKeyRef": {"name": "s3", "key": "secret"}},
                            },
                        ],
                    },
                }
            },
        }
    )
    pod = next(o for o in render.render(md) if o["kind"] == "Deployment")["spec"]["template"]["spec"]
    init = pod["initContainers"][0]
    secret = {"id": s3.access_key, "secret": s3.secret_key}
    env = {e["name"]: secret[e["valueFrom"]["secretKeyRef"]["key"]] for e in init["env"]}
    argv = [a.replace("--model-dir=/models/", f"--model-dir={tmp_path}/") for a in init["command"][1:]]
    clean = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    run_env = {
        **clean,
        **env,
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    done = subprocess.run(
        [sys.executable, "-m", "modelserve.cli", *argv], capture_output=True, text=True, env=run_env, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "iris" / "3" / "model.onnx").read_bytes() == MODEL


@pytest.mark.parametrize(
    ("uri", "match"),
    [
        ("s3://ml-models/archives/missing.tar.gz", "NoSuchKey"),
        ("s3://ml-models/models/missing", r"no objects under s3://ml-models/models/missing/"),
        ("s3://no-such-bucket/models/iris", "NoSuchBucket"),
    ],
)
def test_s3_missing_objects(tmp_path: Path, s3_env: S3Server, uri: str, match: str) -> None:
    with pytest.raises(FetchError, match=match) as info:
        fetch(uri, tmp_path / "m", 3, s3_options(s3_env))
    assert_one_line(info, uri)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("key_id", "match"), [("AKIAWRONGWRONGWRONG0", "InvalidAccessKeyId"), (None, "SignatureDoesNotMatch")]
)
def test_s3_wrong_key(
    tmp_path: Path, s3_env: S3Server, monkeypatch: pytest.MonkeyPatch, key_id: str | None, match: str
) -> None:
    if key_id is not None:
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret")
    uri = "s3://ml-models/archives/iris.tar.gz"
    with pytest.raises(FetchError, match=match) as info:
        fetch(uri, tmp_path / "m", 3, s3_options(s3_env))
    assert_one_line(info, uri)
    assert "gave up" not in str(info.value), "a wrong key is not worth a retry"


def test_s3_without_credentials(tmp_path: Path, s3: S3Server, monkeypatch: pytest.MonkeyPatch) -> None:
    no_aws_config(monkeypatch)
    monkeypatch.delenv("AWS_ACCESS_KEY_ID", raising=False)
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY", raising=False)
    uri = "s3://ml-models/models/iris"
    with pytest.raises(FetchError, match="no S3 credentials") as info:
        fetch(uri, tmp_path / "m", 3, s3_options(s3))
    assert_one_line(info, uri)


def test_s3_unreachable_endpoint(tmp_path: Path, s3_env: S3Server) -> None:
    uri = "s3://ml-models/models/iris"
    options = FetchOptions(s3_endpoint=f"http://127.0.0.1:{free_port()}", retries=2, retry_backoff=0.05, timeout=2)
    with pytest.raises(FetchError, match=r"cannot connect to .*gave up after 3 attempts") as info:
        fetch(uri, tmp_path / "m", 3, options)
    assert_one_line(info, uri)


@pytest.fixture(scope="module")
def gcs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with gcs_emulator(tmp_path_factory.mktemp("gcs")) as host:
        yield host


@pytest.fixture
def gcs_env(gcs: str, monkeypatch: pytest.MonkeyPatch) -> str:
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs)
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    client = storage.Client(project="test", credentials=AnonymousCredentials())
    bucket = client.bucket("ml-models")
    if not bucket.exists():
        bucket = client.create_bucket("ml-models")
        for key, data in OBJECTS.items():
            bucket.blob(key).upload_from_string(data)
    return gcs


GCS_FAST = FetchOptions(retries=1, retry_backoff=0.05, timeout=5)


def test_gcs_prefix_is_a_model_directory(tmp_path: Path, gcs_env: str) -> None:
    fetch("gs://ml-models/models/iris/", tmp_path / "iris", 3, GCS_FAST)
    assert (tmp_path / "iris" / "config.pbtxt").read_bytes() == CONFIG
    assert (tmp_path / "iris" / "3" / "model.onnx").read_bytes() == MODEL
    assert sorted(p.name for p in tmp_path.iterdir()) == ["iris"]


def test_gcs_archive_with_checksum(tmp_path: Path, gcs_env: str) -> None:
    checksum = "sha256:" + hashlib.sha256(ARCHIVE).hexdigest()
    fetch("gs://ml-models/archives/iris.tar.gz", tmp_path / "iris", 3, FetchOptions(checksum=checksum))
    assert (tmp_path / "iris" / "config.pbtxt").read_bytes() == CONFIG
    with pytest.raises(FetchError, match="checksum mismatch") as info:
        fetch("gs://ml-models/archives/iris.tar.gz", tmp_path / "other", 3, FetchOptions(checksum="sha256:" + "1" * 64))
    assert_one_line(info, "gs://ml-models/archives/iris.tar.gz")


@pytest.mark.parametrize(
    ("uri", "match"),
    [
        ("gs://ml-models/archives/missing.tar.gz", r"NotFound \(HTTP 404\)"),
        ("gs://ml-models/models/missing", "no objects under"),
    ],
)
def test_gcs_missing_objects(tmp_path: Path, gcs_env: str, uri: str, match: str) -> None:
    with pytest.raises(FetchError, match=match) as info:
        fetch(uri, tmp_path / "m", 3, GCS_FAST)
    assert_one_line(info, uri)
    assert list(tmp_path.iterdir()) == []


def test_gcs_unreachable_endpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{free_port()}")
    uri = "gs://ml-models/models/iris"
    with pytest.raises(FetchError, match=r"connection failed.*gave up after 2 attempts") as info:
        fetch(uri, tmp_path / "m", 3, GCS_FAST)
    assert_one_line(info, uri)


def test_gcs_bad_key_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A broken service-account key from a Secret fails before any request is sent."""
    monkeypatch.delenv("STORAGE_EMULATOR_HOST", raising=False)
    key = tmp_path / "key.json"
    key.write_text('{"type": "service_account", "client_email": "x"}')
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(key))
    uri = "gs://ml-models/models/iris"
    with pytest.raises(FetchError, match="Google credentials") as info:
        fetch(uri, tmp_path / "m", 3, GCS_FAST)
    assert_one_line(info, uri)
