"""One model's part of an archive: its tables, every write to them, its search and its ANN index policy.

Why a handle: vectors of different models never mix, so every model key gets its own segments,
videos and frames tables (named after its table suffix). Reads and writes used to be ``VideoStore``
methods that each took the suffix (and often the model key beside it); now ``VideoStore.model(spec)``
returns this handle, made once per model and kept by the store (it holds that model's search catalog,
``pipeline.catalog``). What is archive-wide stays on ``VideoStore``: opening the database, the
writer lock, the ``models`` table, the default model, the failures table and the summary.

Writes are done by one process (the job's driver): concurrent ``merge_insert`` of new keys can
duplicate rows (lance#4585), and one writer keeps every batch one atomic commit per table.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .ann_index import ANN_AUTO_THRESHOLD, build_vector_index
from .catalog import SegmentCatalog, table_has_vector_index
from .errors import InputError
from .records import (FRAME, SEGMENT, VIDEO, Failure, FrameRows, Record, VideoRecord, frame_rows, now_utc,
                      segment_rows, video_rows)
from .sql_filters import check_filter, explain_filter_error, sql_in, sql_str
from .store_writes import writes

if TYPE_CHECKING:
    from .store import VideoStore

DELETE_CHUNK = 2000  # ids per ``IN (...)`` delete: one SQL statement stays a manageable size


@dataclass(frozen=True)
class ModelRef:
    """A model named by its key and table suffix alone (what ``store.model`` needs of a ``ModelSpec``),
    for callers that know no spec: tests, maintenance over the ``models`` table's rows."""

    key: str
    table_suffix: str


def table_name(kind: str, suffix: str) -> str:
    """``segments_<suffix>``, ``videos_<suffix>`` or ``frames_<suffix>``."""
    return f"{kind}_{suffix}"


class ModelTables:
    """The tables of one model (``key``, ``suffix``) in ``store``. Get it from ``VideoStore.model``."""

    def __init__(self, store: VideoStore, key: str | None, suffix: str):
        self.store, self.key, self.suffix = store, key, suffix
        self.uri = store.uri
        self._catalog_cache: SegmentCatalog | None = None

    # ---- tables ----------------------------------------------------------------------------
    def segments(self, dim: int | None = None):
        """The segments table; created (``dim`` wide) when given a ``dim``, else None if absent."""
        return self._table("segments", SEGMENT, dim)

    def videos(self, dim: int | None = None):
        return self._table("videos", VIDEO, dim)

    def frames(self, dim: int | None = None):
        return self._table("frames", FRAME, dim)

    def _table(self, kind: str, record, dim: int | None):
        name = table_name(kind, self.suffix)
        return self.store.open_or_create_table(name, record.schema(dim)) if dim else self.store.open_table(name)

    def create_tables(self, dim: int, keep_frames: bool = True) -> tuple:
        """Register the model and create its tables (workers can only add fragments to tables that
        exist). Returns (segments, frames or None, videos)."""
        self.store.register_model(self.key, self.suffix, dim)
        return self.segments(dim), self.frames(dim) if keep_frames else None, self.videos(dim)

    # ---- reads -----------------------------------------------------------------------------
    def indexed_files(self) -> dict[str, dict]:
        """path -> {video_id, size_bytes, mtime_ns} of every indexed video for this model."""
        return {r["path"]: r for r in self.video_rows(["video_id", "path", "size_bytes", "mtime_ns"])}

    def video_rows(self, columns: list[str] | None = None) -> list[dict]:
        table = self.videos()
        if table is None:
            return []
        cols = columns or ["video_id", "path", "duration", "n_segments", "tags", "indexed_at"]
        return table.to_lance().to_table(columns=cols).to_pylist()

    def frame_rows(self, video_ids: list[str], columns: list[str] | None = None) -> list[dict]:
        """The stored frames of some videos, in time order."""
        table = self.frames()
        if table is None or not video_ids:
            return []
        cols = list(dict.fromkeys(["video_id", "time", *(columns or ["frame_index", "thumbnail", "vector"])]))
        rows = table.search().where(sql_in("video_id", video_ids)).select(cols).limit(None).to_list()
        return sorted(rows, key=lambda r: (r["video_id"], r["time"]))

    def frames_by_video(self, video_ids: list[str], thumbnails: bool = False) -> dict[str, FrameRows]:
        """The stored frames of some videos, grouped by video, in time order: times, vectors
        (float32, one row a frame) and, when asked, thumbnails. Videos without stored frames
        (indexed with ``--no-frames``) are absent."""
        columns = ["vector", *(["thumbnail"] if thumbnails else [])]
        grouped: dict[str, list[dict]] = {}
        for row in self.frame_rows(video_ids, columns):
            grouped.setdefault(row["video_id"], []).append(row)
        return {video_id: FrameRows(times=np.array([r["time"] for r in rows], dtype=np.float64),
                                    vectors=np.array([r["vector"] for r in rows], dtype=np.float32),
                                    thumbnails=[r["thumbnail"] for r in rows] if thumbnails else [])
                for video_id, rows in grouped.items()}

    def failures(self) -> list[dict]:
        return self.store.failures(self.key)

    # ---- writes ----------------------------------------------------------------------------
    @writes
    def write_videos(self, records: list[VideoRecord], new_ids: frozenset[str] | set[str] = frozenset()) -> None:
        """Store a batch of indexed videos.

        Segments and frames first, then the video rows: a video row is the "done" marker, so a
        crash between the commits leaves the video to be redone, never half-visible as done.

        ``new_ids`` are videos the caller knows are absent (no row has their id or their path; the
        job learns this when it plans its work, and clears what a crashed run may have left with
        ``delete_unfinished``). Their rows are appended: a commit whose cost does not grow with the
        table. The others go through ``merge_insert``, which replaces the rows of the same video
        and of an earlier version of the same path (a file changed in place) in one commit per
        table, but joins against, and so scans, the whole table: over a long job every flush got
        slower (``bench/writes.py``).
        """
        if not records:
            return
        dim = int(records[0].vector.shape[0])
        self.store.register_model(self.key, self.suffix, dim)
        fresh = [r for r in records if r.video_id in new_ids]
        known = [r for r in records if r.video_id not in new_ids]
        stale = (f"({sql_in('video_id', [r.video_id for r in known])} OR {sql_in('path', [r.path for r in known])})"
                 if known else None)
        frames = self.frames(dim if any(r.frames is not None for r in records) else None)
        if frames is not None:  # also when this batch keeps no frames: old versions' frames go
            replaced = self._ids_at_paths([r.path for r in known])
            self._write(frames, FRAME, dim, frame_rows(fresh), frame_rows(known),
                        sql_in("video_id", [r.video_id for r in known] + replaced) if known else None)
        self._write(self.segments(dim), SEGMENT, dim, segment_rows(fresh, self.key),
                    segment_rows(known, self.key), stale)
        stamp = now_utc()
        self._write(self.videos(dim), VIDEO, dim, video_rows(fresh, self.key, stamp),
                    video_rows(known, self.key, stamp), stale)
        self.store.clear_failures(self.key, [r.path for r in records])

    @staticmethod
    def _write(table, record: Record, dim: int, appended: list[dict], upserted: list[dict],
               stale: str | None) -> None:
        """Append ``appended``; upsert ``upserted`` by the record's key, deleting the rows matching
        ``stale`` that it does not hold (one commit each)."""
        if appended:
            table.add(record.to_arrow(appended, dim))
        if stale is not None:
            (table.merge_insert(record.key).when_matched_update_all().when_not_matched_insert_all()
             .when_not_matched_by_source_delete(stale)
             .execute(record.to_arrow(upserted, dim)))

    def _ids_at_paths(self, paths: list[str]) -> list[str]:
        """Ids of the videos stored at ``paths`` (earlier versions a batch replaces)."""
        videos = self.videos()
        if videos is None or not paths:
            return []
        return [r["video_id"] for r in
                videos.search().where(sql_in("path", paths)).select(["video_id"]).limit(None).to_list()]

    @writes
    def replace_segments(self, dim: int, seg_rows: list[dict], stale: str) -> None:
        """Upsert segment rows and delete the rows matching ``stale`` that the batch does not hold
        (old versions, or a video segmented into fewer pieces): one commit."""
        self._write(self.segments(dim), SEGMENT, dim, [], seg_rows, stale)

    @writes
    def update_video(self, video_id: str, **values) -> None:
        self.videos().update(where=f"video_id = {sql_str(video_id)}", values=values)

    def delete_videos(self, video_ids: list[str], chunk: int = DELETE_CHUNK) -> None:
        """Remove videos and all their rows, a commit per table and chunk (``VideoStore.delete_rows``).
        The video rows first (the "done" marker): a crash in between leaves orphans, which the next
        job (or ``vidsift verify``) clears, never a video marked done without its rows."""
        for table in (self.videos(), self.segments(), self.frames()):
            for begin in range(0, len(video_ids), chunk):
                self.store.delete_rows(table, sql_in("video_id", video_ids[begin:begin + chunk]))

    @writes
    def clear_orphans(self, chunk: int = DELETE_CHUNK) -> int:
        """Delete segment and frame rows whose video has no video row: what a job that crashed
        between committing a batch's fragments and its video rows left behind. Reads the
        ``video_id`` column of each table once (a job calls it once, before it writes)."""
        videos = self.videos()
        if videos is None:
            return 0
        done = set(videos.to_lance().to_table(columns=["video_id"]).column(0).to_pylist())
        removed = 0
        for table in (self.segments(), self.frames()):
            if table is None:
                continue
            ids = set(table.to_lance().to_table(columns=["video_id"]).column(0).unique().to_pylist())
            orphans = sorted(ids - done)
            for begin in range(0, len(orphans), chunk):
                table.delete(sql_in("video_id", orphans[begin:begin + chunk]))
            removed += len(orphans)
        return removed

    @writes
    def delete_unfinished(self, video_ids: list[str], paths: list[str], chunk: int = DELETE_CHUNK) -> None:
        """Remove the segment and frame rows of videos that have no video row (``video_ids``, or at
        ``paths``): what a run that crashed between its commits left behind. A job calls it once,
        for the videos it will append."""
        for table in (self.segments(), self.frames()):
            if table is None:
                continue
            for begin in range(0, len(video_ids), chunk):
                condition = sql_in("video_id", video_ids[begin:begin + chunk])
                if "path" in table.schema.names:
                    condition = f"({condition} OR {sql_in('path', paths[begin:begin + chunk])})"
                table.delete(condition)

    def record_failures(self, failures: list[Failure]) -> None:
        self.store.record_failures(self.key, failures)

    def clear_failures(self, paths: list[str]) -> None:
        self.store.clear_failures(self.key, paths)

    # ---- the ANN index ---------------------------------------------------------------------
    def has_vector_index(self) -> bool:
        return table_has_vector_index(self.segments())

    @writes
    def build_vector_index(self) -> str:
        """The ANN index over segment vectors (``pipeline.ann_index``). Returns a description."""
        table = self.segments()
        if table is None:
            raise ValueError("nothing indexed with this model yet")
        return build_vector_index(table, self.store.vector_index)

    @writes
    def optimize(self) -> None:
        """Fold new rows into the ANN index and compact small fragments (the Ray job writes a
        fragment per video)."""
        for table in (self.segments(), self.videos(), self.frames()):
            if table is not None:
                table.optimize()

    def upkeep_ann_index(self, report, build_index: bool) -> None:
        """After a job's last commit, whichever path indexed (local run, Ray job, the app): build
        the ANN index when asked or when the table has grown past ``ANN_AUTO_THRESHOLD`` without
        one; otherwise, when anything was indexed (``report.indexed``), compact the per-video
        fragments and fold new rows into an existing index. Sets ``report.ann_index``."""
        table = self.segments()
        if table is not None and (build_index or (table.count_rows() >= ANN_AUTO_THRESHOLD
                                                  and not self.has_vector_index())):
            report.ann_index = self.build_vector_index()
        elif table is not None and report.indexed:
            self.optimize()
            if self.has_vector_index():
                report.ann_index = "updated"

    # ---- search ----------------------------------------------------------------------------
    def search_segments(self, vector: np.ndarray, limit: int, where: str | None = None, exact: bool = False,
                        thumbnails: bool = False, vectors: bool = False) -> list[dict]:
        """The ``limit`` nearest segments, best first, as dicts of the segment columns marked ``catalog`` (``records.SEGMENT``) plus
        ``score`` (cosine similarity) and, when asked, ``thumbnail`` and ``vector`` (lance reads the
        vectors anyway to re-rank, so confidence scoring needs no second read). lance finds the row
        ids and distances (and reads the thumbnails of those rows only); with the store's
        ``search_catalog`` the other columns come from the in-memory catalog (see
        ``pipeline.catalog`` for why), else lance reads them too."""
        table = self.segments()
        if table is None:
            return []
        catalog = self._catalog(table) if self.store.search_catalog else None
        query = (table.search(vector.astype(np.float32), vector_column_name="vector").distance_type("cosine")
                 .with_row_id(True))
        if where:
            query = query.where(check_filter(where), prefilter=True)
        if exact:
            query = query.bypass_vector_index()
        elif catalog.has_vector_index if catalog else table_has_vector_index(table):
            query = self.store.vector_index.tune(query, filtered=bool(where))
        shown = list(SEGMENT.catalog_columns)
        columns = ["_distance", *(["thumbnail"] if thumbnails else []), *(["vector"] if vectors else []),
                   *([] if catalog else shown)]
        try:
            hits = query.select(columns).limit(limit).to_arrow()
        except Exception as exc:
            if not where:
                raise
            raise InputError(explain_filter_error(where, exc)) from None
        row_ids = hits.column("_rowid").to_numpy()
        rows = catalog.rows(row_ids) if catalog else hits.select(shown).to_pylist()
        if rows is None:  # written since the catalog was loaded
            rows = self._catalog(table, reload=True).rows(row_ids)
        if rows is None:  # written again meanwhile: read these rows from the table itself
            rows = _take_rows(table, row_ids.tolist(), shown)
        scores = [1.0 - float(d) for d in hits.column("_distance").to_pylist()]
        images = hits.column("thumbnail").to_pylist() if thumbnails else [None] * len(scores)
        found = (np.asarray(hits.column("vector").combine_chunks().flatten().to_numpy(zero_copy_only=False),
                            dtype=np.float32).reshape(len(scores), -1) if vectors and scores else [None] * len(scores))
        return [{**row, "score": score, **({"thumbnail": image} if thumbnails else {}),
                 **({"vector": vec} if vectors else {})}
                for row, score, image, vec in zip(rows, scores, images, found)
                if row is not None]  # None: deleted since the search ran

    def _catalog(self, table, reload: bool = False) -> SegmentCatalog:
        """The segments table's catalog at its current version, loaded when the table changed."""
        if reload or self._catalog_cache is None or self._catalog_cache.version != table.version:
            self._catalog_cache = SegmentCatalog.load(table)
        return self._catalog_cache

    # ---- what `vidsift models` shows -------------------------------------------------------
    def stats(self) -> dict:
        """Videos, segments, ANN index and when a video was last indexed (ISO time, or None)."""
        videos, segments = self.videos(), self.segments()
        last = None
        if videos is not None and videos.count_rows():
            last = max(videos.to_lance().to_table(columns=["indexed_at"]).column(0).to_pylist())
        return {"videos": videos.count_rows() if videos is not None else 0,
                "segments": segments.count_rows() if segments is not None else 0,
                "ann_index": table_has_vector_index(segments),
                "last_indexed": last.isoformat() if last else None}


def _take_rows(table, row_ids: list[int], columns: list[str]) -> list[dict | None]:
    """``columns`` of the rows ``row_ids`` of a LanceDB table, in that order (None where gone)."""
    found = table.take_row_ids(row_ids).select(columns).with_row_id().to_arrow().to_pylist()
    by_id = {row.pop("_rowid"): row for row in found}
    return [by_id.get(row_id) for row_id in row_ids]
