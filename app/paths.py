"""Which files the web app may read or serve: an allowlist of folders, checked lexically and after
resolving symbolic links.

The app reads and serves only files inside its *roots*: the ``--allow-dir`` folders, its managed
uploads folder, and the folders holding indexed videos. A path a user typed is refused, with a
message that says why, when it:

- contains a ``..`` component (a traversal attempt, even one that would land back inside),
- is, written as given, outside every root (``/etc/passwd``), or
- is inside a root as written but really somewhere else (a symbolic link leading out).

Pure functions over paths and the file system; no Gradio here.
"""
from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path, PurePath


class PathRefused(ValueError):
    """A path the app will not read or serve; the message is meant for the user."""


class UploadRefused(ValueError):
    """An uploaded file the app will not accept (type or size); the message is meant for the user."""


def absolute(path: str | os.PathLike) -> Path:
    """Absolute and normalised, without touching the file system (no symlink resolution)."""
    return Path(os.path.normpath(os.path.abspath(os.fspath(path))))


def real(path: str | os.PathLike) -> Path:
    """Absolute with every symbolic link resolved (as far as the path exists)."""
    return Path(os.path.realpath(os.fspath(path)))


def is_within(path: Path, root: Path) -> bool:
    """``path`` is ``root`` or below it, compared by whole components (``/a/bc`` is not in ``/a/b``).
    Both must be absolute and normalised."""
    return path == root or root in path.parents


def normalise_roots(roots: Iterable[str | os.PathLike]) -> tuple[Path, ...]:
    """Absolute, normalised, without repeats, in the given order."""
    return tuple(dict.fromkeys(absolute(r) for r in roots if str(r).strip()))


def _describe(roots: Sequence[Path]) -> str:
    return ", ".join(str(r) for r in roots) if roots else "none"


def check_inside(path: str | os.PathLike, roots: Iterable[str | os.PathLike], *, what: str = "path") -> Path:
    """The real location of ``path`` if it is inside one of ``roots``, else ``PathRefused``.

    ``path`` must be absolute. It must be inside a root as written and, with symbolic links
    resolved, inside a root again (the same or another one: links between allowed folders are fine).
    """
    text = os.fspath(path)
    roots = normalise_roots(roots)
    if not text or "\x00" in text:
        raise PathRefused(f"Refused {what} {text!r}: empty or contains a NUL byte.")
    if ".." in PurePath(text).parts:
        raise PathRefused(f"Refused {what} {text!r}: '..' is not allowed (path traversal).")
    if not os.path.isabs(text):
        raise PathRefused(f"Refused {what} {text!r}: not an absolute path.")
    written = absolute(text)
    if not any(is_within(written, root) for root in roots):
        raise PathRefused(f"Refused {what} {text!r}: it is outside the allowed folders ({_describe(roots)}).")
    resolved = real(written)
    if not any(is_within(resolved, real(root)) for root in roots):
        raise PathRefused(f"Refused {what} {text!r}: it is a symbolic link leading outside the allowed "
                          f"folders ({_describe(roots)}).")
    return resolved


def resolve_user_path(text: str, roots: Iterable[str | os.PathLike], base: str | os.PathLike | None = None,
                      *, what: str = "path") -> Path:
    """A path typed by a user (absolute, or relative to ``base``, default the first root), resolved
    inside ``roots``; ``PathRefused`` otherwise. ``~`` is not expanded: it is just a name."""
    roots = normalise_roots(roots)
    text = (text or "").strip()
    if "\x00" in text:
        raise PathRefused(f"Refused {what} {text!r}: contains a NUL byte.")
    if ".." in PurePath(text).parts:
        raise PathRefused(f"Refused {what} {text!r}: '..' is not allowed (path traversal).")
    if not roots:
        raise PathRefused(f"Refused {what} {text!r}: no folders are allowed on this server "
                          "(start it with --allow-dir FOLDER).")
    if os.path.isabs(text):
        candidate = text
    else:
        anchor = absolute(base) if base is not None else roots[0]
        candidate = os.path.join(anchor, text) if text else str(anchor)
    return check_inside(candidate, roots, what=what)


def indexed_roots(video_paths: Iterable[str]) -> tuple[Path, ...]:
    """The folders holding indexed videos: the parents of their stored (absolute) paths."""
    return normalise_roots(absolute(p).parent for p in video_paths if p and os.path.isabs(p))


def check_extension(name: str, extensions: Iterable[str], *, what: str = "file") -> str:
    """The lower-case extension of ``name`` if allowed, else ``UploadRefused`` listing the allowed ones."""
    allowed = sorted({e.lower() if e.startswith(".") else "." + e.lower() for e in extensions})
    ext = os.path.splitext(name)[1].lower()
    if ext not in allowed:
        raise UploadRefused(f"{os.path.basename(name) or name!r} is not a {what} this server accepts "
                            f"(extension {ext or 'none'}; allowed: {' '.join(allowed)}).")
    return ext


def check_upload(path: str | os.PathLike, extensions: Iterable[str], max_bytes: int | None,
                 *, what: str = "video file", name: str | None = None) -> Path:
    """An uploaded file that exists, has an allowed extension and is at most ``max_bytes``."""
    path = Path(path)
    check_extension(name or path.name, extensions, what=what)
    try:
        size = path.stat().st_size
    except OSError:
        raise UploadRefused(f"The uploaded file {path.name!r} is gone; upload it again.") from None
    if max_bytes is not None and size > max_bytes:
        raise UploadRefused(f"{path.name!r} is {size / 1e6:.1f} MB, more than the {max_bytes / 1e6:g} MB "
                            "this server accepts.")
    if size == 0:
        raise UploadRefused(f"{path.name!r} is empty (0 bytes).")
    return path


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_filename(name: str, default: str = "upload") -> str:
    """A file name safe to create: the last component only, unusual characters replaced by ``_``,
    no leading dots, at most 120 characters (keeping the extension)."""
    base = PurePath(str(name).replace("\\", "/")).name
    stem, dot, ext = base.rpartition(".")
    if not dot:
        stem, ext = base, ""
    stem = _UNSAFE.sub("_", stem).strip("._") or default
    ext = "." + _UNSAFE.sub("", ext)[:15] if _UNSAFE.sub("", ext) else ""
    return stem[: 120 - len(ext)] + ext
