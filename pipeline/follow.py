"""The archive follows its folders: the rows of deleted files are pruned (``prune``), and each
scan of a folder is recorded (``scan_once``; ``pipeline.watch`` keeps following them).

Safety comes first, because a prune deletes: a row goes only when its own file is confirmed gone
(``lstat`` says it does not exist, or object storage says NotFound; a permission error or an
unreachable store keeps it), only under the folder named, and never when that folder is missing,
unreadable or empty while the archive holds videos under it: an unmounted drive leaves an empty
mount point, and must not empty the archive (``allow_empty`` says the folder really is empty).

Crash safety follows the archive's rule (``ModelTables.write_videos``/``clear_orphans``): a
video's row is its "done" marker, so it is deleted first, then its segment and frame rows; a
crash in between leaves orphans that the next job's start clears, never a video row without its
segments.

The indexing itself is the caller's ``index_once(paths) -> report`` (a ``JobReport``: its
``failures`` name the paths that failed), so this module knows nothing of Ray or the model.
"""
from __future__ import annotations

import os
import posixpath
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from pyarrow import fs as pafs

from .errors import InputError
from .scans import ScanCounts, record_scan
from .sources import LIST_EXTENSIONS, VIDEO_EXTENSIONS
from .storage import ListedFile, StorageError, is_remote, list_inputs, open_filesystem
from .store import VideoStore

CHUNK = 1000  # ids per delete: one SQL IN list stays small


class FolderUnreachable(InputError):
    """A folder to prune is missing, unreadable or empty: nothing is deleted (one line)."""


@dataclass(frozen=True)
class Root:
    """One input as the archive stores its paths: a folder (everything under it), a video file, or a
    list file (the files it names)."""

    given: str
    path: str   # absolute local path, or a URI without a trailing slash
    kind: str   # folder, file or list

    def covers(self, path: str, named: frozenset[str] = frozenset()) -> bool:
        if self.kind == "folder":
            return path.startswith(self.path.rstrip("/") + "/")
        return path == self.path if self.kind == "file" else path in named


def root_of(item: str) -> Root:
    if is_remote(item):
        path = item.rstrip("/")
        ext = posixpath.splitext(path)[1].lower()
    else:
        path = os.path.abspath(os.path.expanduser(item[7:] if item.lower().startswith("file://") else item))
        ext = os.path.splitext(path)[1].lower()
        if os.path.isdir(path):
            ext = ""
    kind = "list" if ext in LIST_EXTENSIONS else "file" if ext in VIDEO_EXTENSIONS else "folder"
    return Root(item, path, kind)


def unreachable(root: Root) -> str | None:
    """Why ``root`` cannot be pruned safely, or None. Local only: a remote prefix that cannot be
    listed fails its listing instead."""
    if is_remote(root.path):
        return None
    if root.kind == "file":
        folder = os.path.dirname(root.path)
        return None if os.path.isdir(folder) else f"{root.given}: its folder {folder} does not exist"
    if root.kind == "list":
        return None if os.path.isfile(root.path) else f"{root.given}: no such list file"
    if not os.path.isdir(root.path):
        return f"{root.given}: no such folder" if not os.path.exists(root.path) else f"{root.given}: not a folder"
    try:
        with os.scandir(root.path) as entries:
            next(entries, None)
    except OSError as exc:
        return f"{root.given}: cannot be read: {(exc.strerror or str(exc)).lower()}"
    return None


def _is_empty_folder(root: Root) -> bool:
    if root.kind != "folder" or is_remote(root.path):
        return False  # an empty prefix is no prefix: its listing fails
    with os.scandir(root.path) as entries:
        return next(entries, None) is None


def file_gone(path: str, storage_options: dict | None = None) -> bool:
    """True only when ``path`` certainly does not exist; any doubt keeps its rows."""
    if not is_remote(path):
        try:
            os.lstat(path)
        except (FileNotFoundError, NotADirectoryError):
            return True
        except OSError:
            return False
        return False
    try:
        filesystem, fs_path = open_filesystem(path, storage_options)
        return filesystem.get_file_info(fs_path).type == pafs.FileType.NotFound
    except (OSError, StorageError):
        return False


def list_root(root: Root, storage_options: dict | None = None) -> list[ListedFile]:
    """The files under ``root`` (``pipeline.storage.list_inputs``), or ``FolderUnreachable``."""
    reason = unreachable(root)
    if reason is None:
        try:
            return list_inputs([root.given], storage_options)
        except (InputError, StorageError) as exc:
            reason = str(exc)
    raise FolderUnreachable(f"{reason}; nothing was pruned")


@dataclass
class PruneReport:
    """What a prune removed: model key -> paths of the videos whose rows were deleted, and the
    recorded failures dropped (model key -> paths)."""

    removed: dict[str, list[str]] = field(default_factory=dict)
    failures_cleared: dict[str, list[str]] = field(default_factory=dict)

    def paths(self) -> list[str]:
        return sorted({p for paths in self.removed.values() for p in paths})

    def models_of(self, path: str) -> list[str]:
        return sorted(model for model, paths in self.removed.items() if path in paths)

    def merge(self, other: "PruneReport") -> None:
        for mine, theirs in ((self.removed, other.removed), (self.failures_cleared, other.failures_cleared)):
            for model, paths in theirs.items():
                mine[model] = sorted(set(mine.get(model, [])) | set(paths))

    def to_dict(self) -> dict:
        return {"removed": [{"path": p, "models": self.models_of(p)} for p in self.paths()],
                "failures_cleared": sorted({p for paths in self.failures_cleared.values() for p in paths})}


def prune(store: VideoStore, inputs: Iterable[str], storage_options: dict | None = None,
          allow_empty: bool = False) -> PruneReport:
    """Delete, for every model in ``store``, the rows of videos under ``inputs`` whose files are gone,
    and the recorded failures of gone files. Every folder is checked before anything is deleted:
    ``FolderUnreachable`` if one is missing, unreadable, or empty while the archive holds videos
    under it (unless ``allow_empty``)."""
    roots = [root_of(item) for item in inputs]
    listings = {root: list_root(root, storage_options) for root in roots}
    report = PruneReport()
    with store.exclusive_writer():
        for root in roots:
            report.merge(prune_root(store, root, listings[root], storage_options, allow_empty=allow_empty))
    return report


def prune_root(store: VideoStore, root: Root, listed: list[ListedFile], storage_options: dict | None = None,
               only: set[str] | None = None, allow_empty: bool = False) -> PruneReport:
    """``prune`` for one root whose files were just listed (``listed``); ``only``: consider these
    paths only (the watch loop passes what vanished since its last listing)."""
    present = {f.path for f in listed} if root.kind == "folder" else set()
    named = frozenset(f.path for f in listed) if root.kind == "list" else frozenset()

    def candidate(path: str | None) -> bool:
        return bool(path) and path not in present and (only is None or path in only) and root.covers(path, named)

    doomed = {}  # the model's tables -> its video rows under the root that are not listed
    for model in store.archive_models():
        tables = store.model(model)
        rows = [r for r in tables.video_rows(["video_id", "path"]) if candidate(r["path"])]
        if rows:
            doomed[tables] = rows
    stale = [f for f in store.failures() if candidate(f["path"])]
    if (doomed or stale) and not allow_empty and _is_empty_folder(root):
        videos = len({r["path"] for rows in doomed.values() for r in rows})
        raise FolderUnreachable(
            f"{root.given}: the folder is empty but the archive holds {videos} videos under it; nothing was "
            "pruned (an unmounted drive looks like this: mount it; if the files really are gone, use --allow-empty)")
    gone: dict[str, bool] = {}

    def is_gone(path: str) -> bool:
        if path not in gone:
            gone[path] = file_gone(path, storage_options)
        return gone[path]

    report = PruneReport()
    for tables, rows in doomed.items():
        rows = [r for r in rows if is_gone(r["path"])]
        if not rows:
            continue
        tables.delete_videos(sorted({r["video_id"] for r in rows}), chunk=CHUNK)
        report.removed[tables.key] = sorted({r["path"] for r in rows})
    for model_key in sorted({f["model"] for f in stale}):
        paths = sorted({f["path"] for f in stale if f["model"] == model_key and is_gone(f["path"])})
        for begin in range(0, len(paths), CHUNK):
            store.clear_failures(model_key, paths[begin:begin + CHUNK])
        if paths:
            report.failures_cleared[model_key] = paths
    return report


def scan_once(store: VideoStore, inputs: list[str], spec,
              index_once: Callable[[list[str]], object], prune_first: bool = False,
              storage_options: dict | None = None, allow_empty: bool = False):
    """One ``vidsift index`` run: prune (when asked; first, so that a file moved inside the folder
    is indexed at its new path, not skipped as a copy of its old self), index, and record a scan
    of each folder. ``spec``: the model indexed (``key``, ``table_suffix``: a ``ModelSpec``).
    Returns (the indexer's report, ``PruneReport``, folder -> ``ScanCounts``)."""
    pruned = prune(store, inputs, storage_options, allow_empty) if prune_first else PruneReport()
    if prune_first:  # a video file named and pruned is not handed on, to be recorded as failed
        inputs = [i for i in inputs if not (root_of(i).kind == "file" and file_gone(root_of(i).path, storage_options))]
    tables = store.model(spec)
    before = tables.indexed_files()
    report = index_once(list(inputs))
    after = tables.indexed_files()
    failed = {f.path for f in getattr(report, "failures", [])}
    scans: dict[str, ScanCounts] = {}
    for root in (root_of(item) for item in inputs):
        if root.kind != "folder":
            continue
        counts = scans[root.path] = ScanCounts(failed=sum(root.covers(p) for p in failed),
                                               removed=sum(root.covers(p) for p in pruned.paths()))
        for path, row in after.items():
            if root.covers(path):
                old = before.get(path)
                counts.added += old is None
                counts.changed += old is not None and old["video_id"] != row["video_id"]
        with store.exclusive_writer():
            record_scan(store, root.path, spec.key, counts, "prune" if prune_first else "index")
    return report, pruned, scans
