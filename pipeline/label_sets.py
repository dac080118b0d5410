"""Bundled label sets: text files in ``pipeline/label_sets/`` (one label per line, ``#`` comments),
listed and loaded by name (the file's stem, e.g. ``shapes-world``). ``NAME.templates.txt`` beside a
set holds its prompt templates in the style of CLIP's published prompts.

Names are looked up in the folder's listing, never joined into a path, so a name such as
``../../etc/passwd`` is simply unknown.
"""
from __future__ import annotations

from pathlib import Path

from .classify import parse_labels, parse_templates
from .errors import InputError

LABEL_SET_DIR = Path(__file__).resolve().parent / "label_sets"


TEMPLATES_SUFFIX = ".templates.txt"


def _files() -> dict[str, Path]:
    return {p.stem: p for p in sorted(LABEL_SET_DIR.glob("*.txt"))
            if p.is_file() and not p.name.endswith(TEMPLATES_SUFFIX)}


def available() -> list[str]:
    """Names of the bundled label sets, sorted."""
    return sorted(_files())


def path_of(name: str) -> Path:
    """The file of a bundled label set; ``InputError`` naming the known sets when unknown."""
    files = _files()
    key = (name or "").strip()
    if key not in files:
        raise InputError(f"Unknown label set {name!r}: bundled sets are {', '.join(files) or 'none'}")
    return files[key]


def load(name: str) -> list[str]:
    """The labels of a bundled set, in file order, without duplicates."""
    return parse_labels(file=str(path_of(name)))


def templates(name: str) -> list[str] | None:
    """The set's own prompt templates, or None when it has none (then the default ensemble applies)."""
    path = path_of(name).with_name(f"{name}{TEMPLATES_SUFFIX}")
    return parse_templates(file=str(path)) if path.is_file() else None
