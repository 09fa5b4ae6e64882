"""`modelserve fetch`: download a storage URI into a Triton-layout model directory.

Used by the init container the operator renders. A `.onnx` file becomes
`<model-dir>/<version>/model.onnx`; a `.tar.gz`/`.tgz`/`.zip` archive or an s3/gs prefix
is a whole Triton model directory (`config.pbtxt`, `<version>/model.onnx`).
"""

from __future__ import annotations

import logging
import shutil
import tarfile
import tempfile
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path

log = logging.getLogger(__name__)
ARCHIVES = (".tar.gz", ".tgz", ".zip")


class FetchError(Exception):
    pass


def _download(url: str, target: Path, timeout: float) -> None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, target.open("wb") as out:
            shutil.copyfileobj(response, out, 1 << 20)
    except (OSError, ValueError) as exc:
        raise FetchError(f"cannot download {url}: {exc}") from None


def _place(source: Path, name: str, model_dir: Path, version: int) -> None:
    """Put a fetched file (a model or an archive of a model directory) into place."""
    if name.endswith(".onnx"):
        (model_dir / str(version)).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, model_dir / str(version) / "model.onnx")
    elif name.endswith((".tar.gz", ".tgz")):
        with tarfile.open(source) as archive:
            archive.extractall(model_dir, filter="data")
    elif name.endswith(".zip"):
        with zipfile.ZipFile(source) as archive:
            for member in archive.namelist():
                if Path(member).is_absolute() or ".." in Path(member).parts:
                    raise FetchError(f"archive member {member!r} escapes the model directory")
            archive.extractall(model_dir)
    else:
        raise FetchError(f"{name}: expected a .onnx file or a {'/'.join(ARCHIVES)} archive of a model directory")


def _fetch_bucket(scheme: str, bucket: str, prefix: str, model_dir: Path) -> None:
    if scheme == "s3":
        try:
            import boto3  # type: ignore[import-not-found]
        except ImportError:
            raise FetchError("s3:// needs the boto3 package in the serving image (pip install boto3)") from None
        client = boto3.client("s3")
        paginator = client.get_paginator("list_objects_v2")
        keys = [o["Key"] for page in paginator.paginate(Bucket=bucket, Prefix=prefix) for o in page.get("Contents", [])]
        download = lambda key, dest: client.download_file(bucket, key, str(dest))  # noqa: E731
    else:
        try:
            from google.cloud import storage  # type: ignore[import-not-found]
        except ImportError:
            raise FetchError("gs:// needs the google-cloud-storage package in the serving image") from None
        gcs_bucket = storage.Client().bucket(bucket)
        keys = [blob.name for blob in gcs_bucket.list_blobs(prefix=prefix)]
        download = lambda key, dest: gcs_bucket.blob(key).download_to_filename(str(dest))  # noqa: E731
    if not keys:
        raise FetchError(f"{scheme}://{bucket}/{prefix}: no objects found")
    for key in keys:
        relative = key[len(prefix) :].lstrip("/")
        if not relative or key.endswith("/"):
            continue
        dest = model_dir / relative
        dest.parent.mkdir(parents=True, exist_ok=True)
        download(key, dest)


def fetch(uri: str, model_dir: Path, version: int, timeout: float = 300.0) -> None:
    parsed = urllib.parse.urlparse(uri)
    model_dir.mkdir(parents=True, exist_ok=True)
    if parsed.scheme in ("http", "https"):
        with tempfile.TemporaryDirectory() as tmp:
            target = Path(tmp) / "download"
            _download(uri, target, timeout)
            _place(target, parsed.path, model_dir, version)
    elif parsed.scheme in ("", "file"):
        source = Path(parsed.path if parsed.scheme else uri)
        if source.is_dir():
            shutil.copytree(source, model_dir, dirs_exist_ok=True)
        elif source.is_file():
            _place(source, source.name, model_dir, version)
        else:
            raise FetchError(f"{source}: no such file or directory")
    elif parsed.scheme in ("s3", "gs"):
        _fetch_bucket(parsed.scheme, parsed.netloc, parsed.path.lstrip("/"), model_dir)
    elif parsed.scheme == "pvc":
        raise FetchError("pvc:// models are mounted into the pod, not fetched")
    else:
        raise FetchError(f"unsupported storage URI scheme '{parsed.scheme}' in {uri}")
    if not (model_dir / str(version)).is_dir():
        found = sorted(p.name for p in model_dir.iterdir())
        raise FetchError(f"{uri}: fetched, but {model_dir}/{version}/ does not exist (found: {found})")
    log.info("fetched %s into %s", uri, model_dir)
