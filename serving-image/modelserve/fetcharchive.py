"""Unpack a model archive (tar, tar.gz, zip) into a directory, refusing traversal, links and bombs.

A tar is read as a stream (straight from the download: the archive itself is never stored);
a zip needs its central directory, so it is read from a file. Every member's name must stay
inside the target; links, devices and FIFOs are refused; the bytes actually written (not the
sizes the archive declares) are counted against the unpacked limit, and members against the
file-count limit.
"""

from __future__ import annotations

import shutil
import stat
import tarfile
import zipfile
import zlib
from pathlib import Path, PurePosixPath
from typing import IO

from modelserve.fetchlimits import CHUNK, FetchError, Readable, human

TAR_SUFFIXES = (".tar.gz", ".tgz", ".tar")
ZIP_SUFFIXES = (".zip",)


class _Budget:
    """Bytes and files an archive may still write."""

    def __init__(self, max_bytes: int, max_files: int, what: str) -> None:
        self.bytes_left = max_bytes
        self.files_left = max_files
        self.max_bytes = max_bytes
        self.max_files = max_files
        self.what = what

    def add_file(self, name: str) -> None:
        self.files_left -= 1
        if self.files_left < 0:
            raise FetchError(f"archive has more than {self.max_files} members (--max-files) at {name!r}")

    def spend(self, size: int, name: str) -> None:
        self.bytes_left -= size
        if self.bytes_left < 0:
            raise FetchError(f"archive unpacks to more than {human(self.max_bytes)} ({self.what}) at {name!r}")


def member_path(target: Path, name: str) -> Path | None:
    """Where a member goes inside `target`; None for the archive's root; refused if outside."""
    if "\\" in name or "\x00" in name:
        raise FetchError(f"archive member {name[:100]!r} has a backslash or NUL in its name")
    pure = PurePosixPath(name)
    if pure.is_absolute() or ".." in pure.parts:
        raise FetchError(f"archive member {name[:100]!r} escapes the model directory")
    parts = [p for p in pure.parts if p not in ("", ".")]
    return target.joinpath(*parts) if parts else None


def _copy(source: IO[bytes] | Readable, dest: Path, budget: _Budget, name: str) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    with dest.open("wb") as out:
        while chunk := source.read(CHUNK):
            budget.spend(len(chunk), name)
            out.write(chunk)


def extract_tar_stream(stream: Readable, target: Path, max_bytes: int, max_files: int, what: str) -> None:
    """Unpack a (possibly compressed) tar read sequentially from `stream`."""
    budget = _Budget(max_bytes, max_files, what)
    try:
        with tarfile.open(fileobj=stream, mode="r|*") as archive:  # type: ignore[call-overload]
            for member in archive:
                budget.add_file(member.name)
                dest = member_path(target, member.name)
                if member.isdir():
                    if dest is not None:
                        dest.mkdir(parents=True, exist_ok=True)
                    continue
                if not member.isfile() or dest is None:
                    raise FetchError(f"archive member {member.name[:100]!r} is a link or special file (refused)")
                if member.size > budget.bytes_left:
                    budget.spend(member.size, member.name)
                source = archive.extractfile(member)
                if source is None:
                    raise FetchError(f"archive member {member.name[:100]!r} cannot be read")
                _copy(source, dest, budget, member.name)
    except (tarfile.TarError, EOFError, zlib.error) as exc:
        raise FetchError(f"not a valid tar archive: {exc or type(exc).__name__}") from None
    except OSError as exc:
        # The stream's own errors arrive mapped (TransientError/FetchError); an OSError here is
        # a corrupt compressed stream (gzip.BadGzipFile) or the model volume being full.
        if isinstance(exc, tarfile.ReadError | EOFError) or "gzip" in type(exc).__name__.lower():
            raise FetchError(f"not a valid tar archive: {exc}") from None
        raise FetchError(f"cannot write the model: {exc.strerror or exc}") from None


def extract_zip(path: Path, target: Path, max_bytes: int, max_files: int, what: str) -> None:
    """Unpack a zip file (declared sizes checked first, written bytes counted)."""
    budget = _Budget(max_bytes, max_files, what)
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
            if len(members) > max_files:
                raise FetchError(f"archive has {len(members)} members, more than {max_files} (--max-files)")
            declared = sum(info.file_size for info in members)
            if declared > max_bytes:
                raise FetchError(f"archive declares {human(declared)} unpacked, over {human(max_bytes)} ({what})")
            for info in members:
                budget.add_file(info.filename)
                dest = member_path(target, info.filename)
                if info.is_dir():
                    if dest is not None:
                        dest.mkdir(parents=True, exist_ok=True)
                    continue
                mode = info.external_attr >> 16
                if dest is None or (mode and not stat.S_ISREG(mode)):
                    raise FetchError(f"archive member {info.filename[:100]!r} is a link or special file (refused)")
                with archive.open(info) as source:
                    _copy(source, dest, budget, info.filename)
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError) as exc:
        raise FetchError(f"not a valid zip archive: {exc}") from None
    except OSError as exc:
        raise FetchError(f"cannot write the model: {exc.strerror or exc}") from None


def is_archive(name: str) -> bool:
    return name.endswith(TAR_SUFFIXES + ZIP_SUFFIXES)


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
