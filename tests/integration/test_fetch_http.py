"""`modelserve fetch` over http(s) against a loopback server: limits, deadline, retries, checksum, archives.

Every refusal is one line naming the URI, and leaves neither a model directory nor a staging
directory behind.
"""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import tarfile
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from modeldeploy import api, render
from modelserve.fetch import FetchError, FetchOptions, fetch
from tests.integration.fetch_env import FileServer, file_server

MiB = 1 << 20
FAST = {"retries": 2, "retry_backoff": 0.05, "timeout": 5.0}


@pytest.fixture
def server(tmp_path: Path) -> Iterator[FileServer]:
    root = tmp_path / "served"
    root.mkdir()
    with file_server(root) as state:
        yield state


def model_repo(tmp_path: Path) -> Path:
    volume = tmp_path / "models"
    volume.mkdir(exist_ok=True)
    return volume


def refused(uri: str, model_dir: Path, match: str, **options: object) -> str:
    with pytest.raises(FetchError, match=match) as info:
        fetch(uri, model_dir, 1, FetchOptions(**{**FAST, **options}))  # type: ignore[arg-type]
    message = str(info.value)
    assert "\n" not in message and len(message) < 500, message
    assert message.startswith(f"fetch {uri.split('?')[0]}"), message
    assert not model_dir.exists(), "a refused fetch left a model directory"
    assert not list(model_dir.parent.glob(f".{model_dir.name}.fetch-*")), "a staging directory was left"
    return message


def tar_gz(files: dict[str, bytes], links: dict[str, str] | None = None) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            archive.addfile(info)
    return buffer.getvalue()


def zip_bytes(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return buffer.getvalue()


MODEL_DIR_FILES = {"config.pbtxt": b"max_batch_size: 2\n", "1/model.onnx": b"onnx-bytes"}


def test_100_mib_model_with_the_rendered_volume_limits(tmp_path: Path, server: FileServer) -> None:
    """The rendered init container's own command, /tmp unusable, memory flat."""
    (server.root / "big.onnx").write_bytes(os.urandom(100 * MiB))
    md = api.parse_model_deployment(
        {
            "apiVersion": api.API_VERSION,
            "kind": api.KIND,
            "metadata": {"name": "big"},
            "spec": {
                "model": {
                    "name": "big",
                    "storageUri": f"{server.url}/big.onnx",
                    "storage": {"volumeSizeLimit": "160Mi"},
                }
            },
        }
    )
    deployment = next(o for o in render.render(md) if o["kind"] == "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    command = pod["initContainers"][0]["command"]
    assert "--volume-size-limit=160Mi" in command
    volume = model_repo(tmp_path)
    argv = [a.replace("--model-dir=/models/", f"--model-dir={volume}/") for a in command[1:]]
    # VmHWM: the peak RSS of this process image (ru_maxrss would include the forking parent's).
    probe = (
        "import re, sys; from modelserve.cli import main; rc = main(sys.argv[1:]);"
        " print('vmhwm_kib', re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1)); sys.exit(rc)"
    )
    env = {**os.environ, "TMPDIR": str(tmp_path / "no-such-tmp")}
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", probe, *argv], capture_output=True, text=True, env=env, timeout=60)
    elapsed = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    fetched = volume / "big" / "1" / "model.onnx"
    assert fetched.stat().st_size == 100 * MiB
    assert fetched.read_bytes() == (server.root / "big.onnx").read_bytes()
    rss_mib = int(done.stdout.split("vmhwm_kib")[1]) / 1024
    print(f"100 MiB fetched in {elapsed:.1f}s, peak RSS {rss_mib:.0f} MiB")
    assert rss_mib < 100, "the download was held in memory"
    assert sorted(p.name for p in volume.iterdir()) == ["big"]


def test_over_the_volume_limit_is_refused(tmp_path: Path, server: FileServer) -> None:
    (server.root / "big.onnx").write_bytes(b"\0" * (3 * MiB))
    message = refused(
        f"{server.url}/big.onnx", model_repo(tmp_path) / "m", "over the download limit", volume_size_limit=2 * MiB
    )
    assert "declares" in message or "is 3.0 MiB" in message


def test_declared_length_over_the_limit_is_refused_before_downloading(tmp_path: Path, server: FileServer) -> None:
    refused(f"{server.url}/huge-declared.onnx", model_repo(tmp_path) / "m", r"declares 1024\.0 GiB")


def test_endless_download_stops_at_the_limit(tmp_path: Path, server: FileServer) -> None:
    started = time.monotonic()
    refused(
        f"{server.url}/endless.onnx",
        model_repo(tmp_path) / "m",
        "exceeds the limit of 8.0 MiB",
        max_download_bytes=8 * MiB,
    )
    assert time.monotonic() - started < 10


def test_dripping_server_cannot_outlive_the_deadline(tmp_path: Path, server: FileServer) -> None:
    started = time.monotonic()
    refused(
        f"{server.url}/drip.onnx", model_repo(tmp_path) / "m", r"deadline of 1\.5s exceeded", deadline=1.5, timeout=1.0
    )
    assert time.monotonic() - started < 3.0


def test_dripping_headers_cannot_outlive_the_deadline(tmp_path: Path, server: FileServer) -> None:
    started = time.monotonic()
    refused(
        f"{server.url}/slow-headers.onnx", model_repo(tmp_path) / "m", r"deadline of 1\.5s", deadline=1.5, timeout=1.0
    )
    assert time.monotonic() - started < 3.0


def test_transient_errors_are_retried(tmp_path: Path, server: FileServer) -> None:
    (server.root / "m.onnx").write_bytes(b"model" * 100_000)
    server.failures["/m.onnx"] = [503, 502]
    server.truncate_once.add("/m.onnx")
    fetch(f"{server.url}/m.onnx", model_repo(tmp_path) / "m", 2, FetchOptions(retries=3, retry_backoff=0.05))
    assert (model_repo(tmp_path) / "m" / "2" / "model.onnx").read_bytes() == b"model" * 100_000
    assert server.hits["/m.onnx"] == 4


def test_client_errors_are_not_retried(tmp_path: Path, server: FileServer) -> None:
    refused(f"{server.url}/missing.onnx?X-Amz-Signature=secret", model_repo(tmp_path) / "m", "HTTP 404")
    assert server.hits["/missing.onnx"] == 1


def test_retries_give_up_with_the_last_error(tmp_path: Path, server: FileServer) -> None:
    server.failures["/m.onnx"] = [503] * 10
    refused(f"{server.url}/m.onnx", model_repo(tmp_path) / "m", r"HTTP 503 .*gave up after 3 attempts")
    assert server.hits["/m.onnx"] == 3


def test_unreachable_server(tmp_path: Path) -> None:
    refused("http://127.0.0.1:9/m.onnx", model_repo(tmp_path) / "m", "cannot connect.*gave up after 3 attempts")


def test_redirects_are_followed(tmp_path: Path, server: FileServer) -> None:
    (server.root / "m.onnx").write_bytes(b"model")
    fetch(f"{server.url}/redirect/m.onnx", model_repo(tmp_path) / "m", 1, FetchOptions(**FAST))  # type: ignore[arg-type]
    assert (model_repo(tmp_path) / "m" / "1" / "model.onnx").read_bytes() == b"model"


def test_checksum(tmp_path: Path, server: FileServer) -> None:
    data = tar_gz(MODEL_DIR_FILES)
    (server.root / "m.tar.gz").write_bytes(data)
    good = "sha256:" + hashlib.sha256(data).hexdigest()
    volume = model_repo(tmp_path)
    fetch(f"{server.url}/m.tar.gz", volume / "m", 1, FetchOptions(checksum=good))
    assert (volume / "m" / "config.pbtxt").read_bytes() == b"max_batch_size: 2\n"
    with pytest.raises(FetchError, match="checksum mismatch") as info:
        fetch(f"{server.url}/m.tar.gz", volume / "m", 1, FetchOptions(checksum="sha256:" + "0" * 64))
    assert "\n" not in str(info.value)
    assert (volume / "m" / "1" / "model.onnx").read_bytes() == b"onnx-bytes", "the previous model was not kept"
    assert not list(volume.glob(".m.fetch-*"))
    refused(f"{server.url}/m.tar.gz", volume / "n", "invalid checksum", checksum="md5:abc")


def test_a_refetch_replaces_the_model_whole(tmp_path: Path, server: FileServer) -> None:
    volume = model_repo(tmp_path)
    (server.root / "a.tar.gz").write_bytes(tar_gz({**MODEL_DIR_FILES, "1/extra.txt": b"old"}))
    (server.root / "b.tar.gz").write_bytes(tar_gz(MODEL_DIR_FILES))
    fetch(f"{server.url}/a.tar.gz", volume / "m", 1)
    fetch(f"{server.url}/b.tar.gz", volume / "m", 1)
    assert sorted(str(p.relative_to(volume / "m")) for p in (volume / "m").rglob("*")) == [
        "1",
        "1/model.onnx",
        "config.pbtxt",
    ]


BOMB = b"\0" * (64 * MiB)


@pytest.mark.parametrize(
    ("name", "make", "options", "match"),
    [
        (
            "tar-bomb.tar.gz",
            lambda: tar_gz({"config.pbtxt": b"", "1/model.onnx": BOMB}),
            {"max_unpacked_bytes": 16 * MiB},
            r"unpacks to more than 16\.0 MiB \(--max-unpacked-bytes\)",
        ),
        (
            "tar-bomb-volume.tgz",
            lambda: tar_gz({"1/model.onnx": BOMB}),
            {"volume_size_limit": 16 * MiB},
            r"unpacks to more than .*sizeLimit",
        ),
        (
            "zip-bomb.zip",
            lambda: zip_bytes({"1/model.onnx": BOMB}),
            {"max_unpacked_bytes": 16 * MiB},
            r"declares 64\.0 MiB unpacked",
        ),
        (
            "many.tar.gz",
            lambda: tar_gz({f"1/f{i}": b"x" for i in range(50)}),
            {"max_files": 20},
            r"more than 20 members",
        ),
        ("escape.tar.gz", lambda: tar_gz({"../escaped": b"x"}), {}, r"'\.\./escaped' escapes the model directory"),
        ("absolute.tar.gz", lambda: tar_gz({"/etc/escaped": b"x"}), {}, "escapes the model directory"),
        (
            "link.tar.gz",
            lambda: tar_gz({"1/model.onnx": b"x"}, {"config.pbtxt": "/etc/passwd"}),
            {},
            "is a link or special file",
        ),
        ("escape.zip", lambda: zip_bytes({"../../escaped": b"x"}), {}, "escapes the model directory"),
        ("corrupt.tar.gz", lambda: b"\x1f\x8b" + os.urandom(5000), {}, "not a valid tar archive"),
        ("corrupt.zip", lambda: b"PK" + os.urandom(5000), {}, "not a valid zip archive"),
        ("model.bin", lambda: b"x", {}, "expected a .onnx file"),
    ],
    ids=lambda v: v if isinstance(v, str) and "." in v and "\\" not in v and " " not in v else "",
)
def test_hostile_archives_are_refused(
    tmp_path: Path, server: FileServer, name: str, make, options: dict, match: str
) -> None:  # type: ignore[no-untyped-def]
    (server.root / name).write_bytes(make())
    volume = model_repo(tmp_path)
    started = time.monotonic()
    refused(f"{server.url}/{name}", volume / "m", match, **options)
    assert time.monotonic() - started < 10
    assert not (tmp_path / "escaped").exists() and not (volume / "escaped").exists()
    assert list(volume.iterdir()) == []


def test_cli_prints_one_error_line(tmp_path: Path, server: FileServer) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "modelserve.cli", "fetch", f"--uri={server.url}/nothing.onnx", f"--model-dir={tmp_path}/m", "--retries=0"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert done.returncode == 1
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: fetch {server.url}/nothing.onnx: HTTP 404 Not Found"], done.stderr
    assert "Traceback" not in done.stderr


def test_rendered_example_commands_parse() -> None:
    """Every flag the renderer writes is one `modelserve fetch` accepts."""
    from modelserve.fetchcli import build_parser

    for path in sorted(Path(__file__).parents[2].joinpath("examples").glob("*.yaml")):
        for obj in render.render(api.parse_model_deployment(yaml.safe_load(path.read_text()))):
            for init in obj.get("spec", {}).get("template", {}).get("spec", {}).get("initContainers", []):
                build_parser().parse_args(init["command"][2:])
