"""Real S3 (moto server, with IAM auth) and GCS (gcp-storage-emulator) API servers on loopback."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

BIN = Path(sys.executable).parent
# The first three requests (create the user, its key, its policy) need no signature;
# every later one is checked against moto's IAM, so a wrong key is refused.
SETUP_ACTIONS = 3


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_http(url: str, process: subprocess.Popen[bytes], seconds: float = 20.0) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if process.poll() is not None:
            raise RuntimeError(f"{url}: server exited with {process.returncode}")
        try:
            urllib.request.urlopen(url, timeout=1).close()
            return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{url}: server did not start")


@contextmanager
def _serve(command: list[str], url: str, cwd: Path, env: dict[str, str] | None = None) -> Iterator[None]:
    process = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_http(url, process)
        yield
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclass(frozen=True)
class S3Server:
    endpoint: str
    access_key: str
    secret_key: str


@contextmanager
def moto_s3(workdir: Path) -> Iterator[S3Server]:
    import os

    import boto3

    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": str(SETUP_ACTIONS)}
    with _serve([str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)], f"{endpoint}/moto-api/", workdir, env):
        iam = boto3.client(
            "iam",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id="setup",
            aws_secret_access_key="setup",
        )
        iam.create_user(UserName="model-reader")
        key = iam.create_access_key(UserName="model-reader")["AccessKey"]
        iam.put_user_policy(
            UserName="model-reader",
            PolicyName="all-s3",
            PolicyDocument='{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:*","Resource":"*"}]}',
        )
        yield S3Server(endpoint, key["AccessKeyId"], key["SecretAccessKey"])


@contextmanager
def gcs_emulator(workdir: Path) -> Iterator[str]:
    port = free_port()
    host = f"http://127.0.0.1:{port}"
    command = [str(BIN / "gcp-storage-emulator"), "start", "--host=127.0.0.1", f"--port={port}", "--in-memory", "-q"]
    with _serve(command, f"{host}/storage/v1/b", workdir):
        yield host
