"""Paths inside the model repository, and nothing outside it.

A model name is one path component. Every directory and file the server reads for a
model is resolved (symlinks followed) and refused when it lands outside the repository;
the refusal reads the same whether or not the target exists, so it reveals nothing
about the file system outside. Files are checked by type before they are opened: a FIFO
or a directory where a file should be is that model's load error, never a hang.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from modelserve.errors import InvalidArgument, ModelLoadError, clip

MAX_NAME_LENGTH = 255  # one path component on every common file system
MAX_CONFIG_BYTES = 1 << 20
FORBIDDEN = ("/", "\\", "\0")


def check_model_name(name: str) -> str:
    """A model name the repository API accepts: a single, visible path component."""
    if not name or len(name) > MAX_NAME_LENGTH:
        raise InvalidArgument(f"model name must be 1 to {MAX_NAME_LENGTH} characters, got {len(name)}")
    if any(ch in name for ch in FORBIDDEN) or name in (".", "..") or name.startswith("."):
        raise InvalidArgument(f"model name {clip(name)!r} is not a single directory name in the model repository")
    return name


def inside(root: Path, path: Path) -> bool:
    """Whether `path`, every symlink resolved, is `root` or below it (`root` already resolved)."""
    try:
        resolved = path.resolve()
    except (OSError, RuntimeError):  # a symlink loop
        return False
    return resolved == root or root in resolved.parents


def is_model_dir(root: Path, name: str) -> bool:
    path = root / name
    return inside(root.resolve(), path) and path.is_dir()


def model_dir(root: Path, name: str) -> Path:
    """The model's directory; the same error for one that is missing and one that leads outside."""
    check_model_name(name)
    path = root / name
    if not is_model_dir(root, name):
        raise ModelLoadError(f"model '{name}' is not in the repository")
    return path


def read_config_text(root: Path, path: Path) -> str | None:
    """config.pbtxt as text, or None when there is none; refused when it is not a regular file inside."""
    relative = path.relative_to(root)
    if not os.path.lexists(path):
        return None
    regular_file_inside(root, path)
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ModelLoadError(f"{relative}: cannot read: {exc.strerror}") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ModelLoadError(f"{relative}: larger than {MAX_CONFIG_BYTES} bytes")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ModelLoadError(f"{relative}: not UTF-8 text (byte {exc.start})") from None


def regular_file_inside(root: Path, path: Path) -> Path:
    """`path` if it is a regular file inside the repository (links resolved); refused otherwise."""
    relative = path.relative_to(root)
    if not inside(root.resolve(), path):
        raise ModelLoadError(f"{relative}: refers outside the model repository")
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        raise ModelLoadError(f"{relative}: cannot read: {exc.strerror}") from None
    if not stat.S_ISREG(mode):
        raise ModelLoadError(f"{relative}: is not a regular file")
    return path
