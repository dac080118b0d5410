"""Rows written where a video is processed, committed by one process.

A worker that has pooled a video writes its segment and frame rows as Lance data files
(``lance.fragment.write_fragments``) straight into the archive's tables, and hands back only the
fragments' metadata and the video's own row (one vector). Nothing is visible until the job's
driver commits those fragments: one ``Append`` transaction per table per batch, then the video
rows, which mark the videos done. So vectors and thumbnails never pass through the driver, a slow
store never stalls the stream, and a single committer keeps the one-writer guarantee (concurrent
``merge_insert`` of new keys duplicates rows, lance#4585).

Fragments written by a worker that dies, or by a copy found to be a duplicate, are never
committed: they are invisible data files that ``optimize`` / ``cleanup_old_versions`` may reclaim.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

from .model_store import ModelTables
from .records import FRAME, SEGMENT, VIDEO, Failure, VideoRecord, frame_rows, now_utc, segment_rows, video_rows
from .sql_filters import sql_in


@dataclass(frozen=True)
class StagingTarget:
    """Where a worker writes: the segments and frames tables of one model (absolute URIs), their
    vector width and the storage options to reach them. Small and picklable: sent with each task."""

    segments_uri: str
    frames_uri: str
    dim: int
    model_key: str
    storage_options: dict = field(default_factory=dict)


@dataclass
class StagedVideo:
    """One processed video, ready to commit: its video row and its uncommitted fragments."""

    video_id: str
    path: str
    n_frames: int
    video_row: dict
    segment_fragments: list = field(default_factory=list)  # lance FragmentMetadata (picklable)
    frame_fragments: list = field(default_factory=list)


def stage_record(record: VideoRecord, target: StagingTarget) -> StagedVideo:
    """Write one video's segment (and frame) rows as uncommitted fragments of ``target``'s tables."""
    from lance.fragment import write_fragments  # lazy: lance costs ~1 s to import, paid only where rows are written

    options, dim = target.storage_options or None, target.dim
    segments = write_fragments(SEGMENT.to_arrow(segment_rows([record], target.model_key), dim),
                               target.segments_uri, schema=SEGMENT.schema(dim), storage_options=options)
    frames = []
    if record.frames is not None:
        frames = write_fragments(FRAME.to_arrow(frame_rows([record]), dim),
                                 target.frames_uri, schema=FRAME.schema(dim), storage_options=options)
    # indexed_at is stamped at commit, when the video becomes visible
    row = video_rows([record], target.model_key, now_utc())[0]
    row["vector"] = [float(x) for x in row["vector"]]
    return StagedVideo(video_id=record.video_id, path=record.path, n_frames=record.n_frames, video_row=row,
                       segment_fragments=list(segments), frame_fragments=list(frames))


def prepare_target(tables: ModelTables, dim: int, storage_options: dict | None = None,
                   keep_frames: bool = True) -> StagingTarget:
    """Create the model's tables (workers can only add fragments to tables that exist)."""
    segments, frames, _ = tables.create_tables(dim, keep_frames)
    return StagingTarget(segments_uri=segments.uri, frames_uri=frames.uri if frames is not None else "",
                         dim=dim, model_key=tables.key, storage_options=dict(storage_options or {}))


class Committer:
    """Makes staged videos visible. It keeps the tables open between commits: the driver commits
    every couple of seconds, and reopening each table's manifest (and the failures table) for
    every commit was most of the driver's CPU per video (``bench/cluster.py``)."""

    def __init__(self, tables: ModelTables, target: StagingTarget):
        self.tables, self.target = tables, target
        self.options = target.storage_options or None
        self.datasets: dict = {}  # uri -> lance dataset at the version this process last wrote
        self.videos = None
        self.failed_paths = {f["path"] for f in tables.failures()}  # to clear when they succeed

    def commit(self, batch: list[StagedVideo], replaced_ids: list[str]) -> None:
        """In the order that keeps a crash harmless: the fragments (one Append per table), then
        the old rows of the videos they replace (files changed in place, ``replaced_ids``), then
        the video rows, which mark them done. A crash before the last step leaves rows without a
        video row; the next job clears those first (``ModelTables.clear_orphans``) and redoes the
        videos."""
        for uri, fragments in ((self.target.segments_uri, [f for s in batch for f in s.segment_fragments]),
                               (self.target.frames_uri, [f for s in batch for f in s.frame_fragments])):
            if fragments:
                self._append(uri, fragments)
        if replaced_ids:
            for table in (self.tables.segments(), self.tables.frames()):
                if table is not None:
                    table.delete(sql_in("video_id", replaced_ids))
        stamp = now_utc()
        self._write_video_rows([{**staged.video_row, "indexed_at": stamp} for staged in batch], replaced_ids)
        recovered = [staged.path for staged in batch if staged.path in self.failed_paths]
        if recovered:
            self.tables.clear_failures(recovered)
            self.failed_paths.difference_update(recovered)

    def _append(self, uri: str, fragments: list) -> None:
        import lance  # lazy: as in ``stage_record``

        dataset = self.datasets.get(uri) or lance.dataset(uri, storage_options=self.options)
        # Appends never conflict, so a read version behind another commit (a delete) is rebased.
        self.datasets[uri] = lance.LanceDataset.commit(uri, lance.LanceOperation.Append(fragments),
                                                       read_version=dataset.version, storage_options=self.options)

    def _write_video_rows(self, rows: list[dict], replaced_ids: list[str]) -> None:
        if self.videos is None:
            self.videos = self.tables.videos(self.target.dim)
        if replaced_ids:
            self.videos.delete(sql_in("video_id", replaced_ids))
        if rows:
            self.videos.add(VIDEO.to_arrow(rows, self.target.dim))


class StagedWriter:
    """The driver's side: buffers staged videos and failures, commits them every ``every_seconds``
    (or ``every_videos``), and decides what each staged video is, now that its identity (a hash
    of its bytes, computed by the worker that read them) is known:

    - a copy of a video already stored, or already staged in this run: dropped (indexed once);
    - a file changed in place (its path was stored with another id): replaces the old rows;
    - otherwise new: appended.
    """

    def __init__(self, tables: ModelTables, target: StagingTarget, report, known: dict[str, dict],
                 every_videos: int = 64, every_seconds: float = 2.0):
        self.tables, self.target, self.report = tables, target, report
        self.stored_at = {row["path"]: row["video_id"] for row in known.values()}
        self.stored_ids = set(self.stored_at.values())
        self.every_videos, self.every_seconds = every_videos, every_seconds
        self.committer = Committer(tables, target)
        self.batch: list[StagedVideo] = []
        self.replaced: list[str] = []
        self.failures = []
        self.last_flush = time.monotonic()

    def add(self, staged: StagedVideo) -> None:
        previous = self.stored_at.get(staged.path)
        if staged.video_id in self.stored_ids and previous != staged.video_id:
            self.report.skipped += 1  # the same bytes are stored (or staged) under another path
            if previous is not None:  # this path now holds a copy of another video: its old rows go
                self.replaced.append(previous)
            return
        if previous is not None:
            self.replaced.append(previous)
        self.stored_at[staged.path] = staged.video_id
        self.stored_ids.add(staged.video_id)
        self.batch.append(staged)
        self.report.indexed += 1
        self.report.frames += staged.n_frames
        self.maybe_flush()

    def unchanged(self, video_id: str, mtime_ns: int) -> None:
        """The worker found the bytes identical to what is stored (only the mtime changed): store
        the new mtime, so the next run skips the file without reading it."""
        self.report.skipped += 1
        self.tables.update_video(video_id, mtime_ns=mtime_ns)

    def fail(self, path: str, stage: str, reason: str) -> None:
        failure = Failure(path, stage, reason)
        self.failures.append(failure)
        self.report.failures.append(failure)
        self.maybe_flush()

    def maybe_flush(self) -> None:
        if len(self.batch) >= self.every_videos or time.monotonic() - self.last_flush >= self.every_seconds:
            self.flush()

    def flush(self) -> None:
        if self.batch or self.replaced:
            self.committer.commit(self.batch, self.replaced)
        self.tables.record_failures(self.failures)
        self.batch, self.replaced, self.failures = [], [], []
        self.last_flush = time.monotonic()
