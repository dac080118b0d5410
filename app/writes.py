"""The app's two writes: add an uploaded clip to the archive (with tags), index a folder inside an
allowed root. One at a time (a lock per server), through ``pipeline.indexing.index_sequential``
as `vidsift index --no-ray` does.

A clip that fails leaves the archive as it was: no failure row, no copy in the uploads folder.
Returns plain records (``Added``, ``FolderIndexed``); ``app.render`` words them, the Gradio layer
shows them.
"""
from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from vidsift.app.app_config import AppConfig
from vidsift.app.paths import PathRefused, absolute, check_inside, resolve_user_path, safe_filename
from vidsift.pipeline.decode import open_video, probe
from vidsift.pipeline.errors import InputError, VideoError
from vidsift.pipeline.indexing import JobReport, index_sequential
from vidsift.pipeline.search_request import clean_tags
from vidsift.pipeline.sources import VIDEO_EXTENSIONS, content_hash, discover

Progress = Callable[..., None]  # called as gr.Progress is: progress((done, total) or fraction, desc=..., unit=...)


def no_progress(*args, **kwargs) -> None:
    """Progress reported to nobody."""


@dataclass(frozen=True)
class Added:
    """An upload added (or found already there: ``already``)."""

    name: str
    dest: str
    tags: tuple[str, ...]
    frames: int = 0
    already: bool = False

    @property
    def tag_text(self) -> str:
        return ", ".join(self.tags) if self.tags else "no tags"


@dataclass(frozen=True)
class FolderIndexed:
    """A folder indexed: the job's report, and how many links leading out were skipped."""

    folder: str
    report: JobReport
    outside: int = 0


def copy_upload(src: Path, uploads_dir: Path) -> tuple[Path, bool]:
    """Copy an upload into the managed uploads folder (by content, so re-uploads are one file);
    the copy, and whether it was made now."""
    folder = uploads_dir / content_hash(str(src))[:16]
    dest = folder / safe_filename(src.name)
    if dest.is_file() and dest.stat().st_size == src.stat().st_size:
        return dest, False
    folder.mkdir(parents=True, exist_ok=True)
    staging = folder / f".{dest.name}.part"
    shutil.copyfile(src, staging)
    os.replace(staging, dest)
    return dest, True


class ArchiveWriter:
    """The server's writes, one at a time. ``store``: the archive; ``encoder()``: the served model's."""

    def __init__(self, config: AppConfig, store, encoder: Callable[[], object]):
        self.config, self.store, self._encoder = config, store, encoder
        self._lock = threading.Lock()

    def add_clip(self, src: Path, name: str, tags, progress: Progress = no_progress) -> Added:
        """Index the upload ``src`` (checked) with ``tags``; ``name``: the file name the user gave."""
        chosen = clean_tags(tags)
        probe(open_video(str(src)), str(src))  # not a video / no stream: refused before any copy
        encoder = self._encoder()
        with self._lock:
            dest, created = copy_upload(src, self.config.uploads_dir)
            try:
                report = index_sequential(self.store, encoder, [str(dest)], self.config.index, tags=chosen,
                                          on_progress=_videos(progress))
            except BaseException:
                if created:
                    dest.unlink(missing_ok=True)
                raise
            if created and (report.failures or report.skipped):
                dest.unlink(missing_ok=True)
            if report.failures:  # leave the archive as it was: no failure row, no copy
                self.store.clear_failures(encoder.model_key, [str(dest)])
                failure = report.failures[0]
                raise VideoError(name, failure.stage, failure.reason)
        return Added(name, str(dest), chosen, report.frames, already=bool(report.skipped))

    def index_folder(self, root: str = "", subfolder: str = "", progress: Progress = no_progress) -> FolderIndexed:
        """Index a folder inside one of the --allow-dir roots (links leading out are skipped)."""
        allowed = self.config.allow_dirs
        if not allowed:
            raise PathRefused("No folders may be indexed from the page: start the server with --allow-dir FOLDER.")
        root = (root or allowed[0]).strip()
        if str(absolute(root)) not in allowed or ".." in Path(root).parts:
            raise PathRefused(f"Refused folder {root!r}: not one of the allowed folders ({', '.join(allowed)}).")
        folder = resolve_user_path(subfolder, allowed, base=root, what="folder")
        if not folder.is_dir():
            raise InputError(f"{folder} is not a folder.")
        found, outside = [], []
        for path in discover([str(folder)]):
            try:
                found.append(str(check_inside(path, allowed, what="video")))
            except PathRefused:
                outside.append(path)
        found = list(dict.fromkeys(found))
        if not found and outside:
            raise PathRefused(f"Refused folder {str(folder)!r}: its {len(outside)} video(s) are symbolic links "
                              "leading outside the allowed folders.")
        if not found:
            raise InputError(f"No videos in {folder} (extensions: {' '.join(sorted(VIDEO_EXTENSIONS))}).")
        encoder = self._encoder()
        progress((0, len(found)), desc="Indexing", unit="videos")
        with self._lock:
            report = index_sequential(self.store, encoder, found, self.config.index, on_progress=_videos(progress))
        return FolderIndexed(str(folder), report, len(outside))


def _videos(progress: Progress) -> Callable[[int, int], None]:
    """``index_sequential``'s progress (videos done, total) as a progress bar's step."""
    return lambda done, total: progress((done, total), desc="Indexing", unit="videos")
