"""Turning what the user points at (folders, files, list files) into video paths and identities."""
from __future__ import annotations

import errno
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from .errors import InputError

VIDEO_EXTENSIONS = {".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".wmv", ".flv",
                    ".ts", ".3gp", ".ogv"}
LIST_EXTENSIONS = {".txt", ".lst", ".list"}


@dataclass(frozen=True)
class VideoFile:
    """One file to index; ``video_id`` is a hash of its bytes, so moved or renamed copies are one video."""

    path: str
    video_id: str
    size_bytes: int
    mtime_ns: int


def discover(inputs: list[str]) -> list[str]:
    """Expand folders (recursively, by video extension), single files and list files (one path per
    line, relative to the list) into absolute paths, sorted and without repeats."""
    found: list[str] = []
    for item in inputs:
        path = Path(item).expanduser()
        if path.is_dir():
            found += [_resolved(p) for p in sorted(path.rglob("*"))
                      if p.suffix.lower() in VIDEO_EXTENSIONS and (p.is_file() or p.is_symlink())]
        elif path.suffix.lower() in LIST_EXTENSIONS and path.is_file():
            for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
                line = line.strip()
                if line and not line.startswith("#"):
                    entry = Path(line).expanduser()
                    found.append(str((entry if entry.is_absolute() else path.parent / entry).absolute()))
        elif path.exists() or path.suffix.lower() in VIDEO_EXTENSIONS:
            found.append(str(path.absolute()))
        else:
            raise InputError(f"{item}: no such file or folder")
    return list(dict.fromkeys(found))


def _resolved(path: Path) -> str:
    """A found file's real path; a symbolic link that leads nowhere (dangling, or a loop, on which
    ``Path.resolve`` raises) keeps the path of the link itself, where the user will look for it,
    and fails as such when it is read."""
    if path.is_symlink() and not path.exists():
        return os.path.abspath(path)
    try:
        return str(path.resolve())
    except (OSError, RuntimeError):
        return os.path.abspath(path)


def unreadable_reason(path: str, exc: OSError) -> str:
    """Why a local file cannot be read, in words (the same words as ``pipeline.storage``)."""
    if isinstance(exc, FileNotFoundError):
        return "broken symbolic link" if os.path.islink(path) else "file does not exist"
    if isinstance(exc, PermissionError):
        return "permission denied"
    if exc.errno == errno.ELOOP:
        return "symbolic link loop"
    return (exc.strerror or str(exc)).lower()


def content_hash(path: str, chunk: int = 1 << 20) -> str:
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def identify(path: str, known: dict[str, dict] | None = None) -> VideoFile:
    """Hash a file, reusing the stored hash when path, size and mtime are unchanged (cheap re-runs).
    Raises OSError (its ``strerror`` the cause in words) when the file cannot be read."""
    try:
        stat = os.stat(path)
        previous = (known or {}).get(path)
        if previous and previous["size_bytes"] == stat.st_size and previous["mtime_ns"] == stat.st_mtime_ns:
            video_id = previous["video_id"]
        else:
            video_id = content_hash(path)
    except OSError as exc:
        raise OSError(exc.errno, unreadable_reason(path, exc), path) from None
    return VideoFile(path=path, video_id=video_id, size_bytes=stat.st_size, mtime_ns=stat.st_mtime_ns)
