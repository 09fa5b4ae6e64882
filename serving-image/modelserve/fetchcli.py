"""`modelserve fetch` command line: flags to FetchOptions, one `error:` line and exit 1 on failure."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from modelserve.fetch import FetchError, FetchOptions, fetch
from modelserve.fetchlimits import DEFAULT_MAX_FILES, parse_size


def _size(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="modelserve fetch",
        description="Download a model into the repository, bounded in size and time, all or nothing.",
    )
    p.add_argument("--uri", required=True, help="http(s)://, s3://bucket/key-or-prefix, gs://..., or a local path")
    p.add_argument("--model-dir", required=True, type=Path, help="model directory, e.g. /models/<name>")
    p.add_argument("--version", type=int, default=1, help="version directory for a single .onnx file")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds a connect or a read may wait")
    p.add_argument("--deadline", type=float, default=1800.0, help="seconds the whole fetch may take, retries included")
    p.add_argument(
        "--volume-size-limit",
        type=_size,
        help="sizeLimit of the model volume (e.g. 10Gi): the default of both size limits, and their ceiling",
    )
    p.add_argument("--max-download-bytes", type=_size, help="most bytes downloaded (default: the volume size limit)")
    p.add_argument("--max-unpacked-bytes", type=_size, help="most bytes an archive unpacks to (default: the same)")
    p.add_argument("--max-files", type=int, default=DEFAULT_MAX_FILES, help="most files an archive or prefix holds")
    p.add_argument("--checksum", help="sha256:<hex> of the downloaded file (.onnx or archive)")
    p.add_argument("--retries", type=int, default=4, help="retries of transient failures (5xx, 429, resets, timeouts)")
    p.add_argument("--retry-backoff", type=float, default=1.0, help="first backoff in seconds, doubled each retry")
    p.add_argument("--s3-endpoint", help="S3 API endpoint other than AWS (MinIO, Ceph), e.g. http://minio:9000")
    p.add_argument("--s3-region", help="S3 region")
    return p


def main(argv: Sequence[str]) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    options = FetchOptions(
        timeout=args.timeout,
        deadline=args.deadline,
        volume_size_limit=args.volume_size_limit,
        max_download_bytes=args.max_download_bytes,
        max_unpacked_bytes=args.max_unpacked_bytes,
        max_files=args.max_files,
        checksum=args.checksum,
        retries=args.retries,
        retry_backoff=args.retry_backoff,
        s3_endpoint=args.s3_endpoint,
        s3_region=args.s3_region,
    )
    try:
        fetch(args.uri, args.model_dir, args.version, options)
    except FetchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0
