"""`vidsift verify [--repair]`: check that an archive holds what its video rows promise.

Per model (``models`` table): every video row has its segments (indices 0..n_segments-1, bounds
inside the video) and, when it was indexed keeping frames, its ``n_frames`` frames; no segment or
frame row without its video row (orphans); no key stored twice (segment_id, frame_id, video_id,
and no path held by two videos); every vector finite and of unit length; the ANN index, when
there is one, covering every segment row (else the gap is reported). Then the failures: each one
names a file that still exists and that is not indexed meanwhile.

``--repair`` fixes what it can without losing anything that cannot be redone:
- orphan segment/frame rows are deleted (their video has no row: they are invisible leftovers);
- exact copies of a row (same key, same content) are deleted down to one;
- a video with anything else wrong (missing or extra segments or frames, copies that differ, bad
  vectors, two videos at one path) is re-queued: its rows are deleted, video row first, so the
  next ``vidsift index`` of its folder indexes it again. A video whose local file is gone is left
  as it is (re-indexing it would be impossible) and still reported;
- the ANN index is brought up to date (``optimize``);
- failures of files that are gone, or that are indexed now, are deleted.

Rows are read a few columns at a time (vectors in batches), so memory stays bounded.
"""
from __future__ import annotations

import collections
import json
import os
from dataclasses import asdict, dataclass, field

import numpy as np

from .errors import StoreWriteError
from .model_store import ModelRef, ModelTables
from .store import VideoStore

NORM_TOLERANCE = 1e-3


@dataclass
class Problem:
    kind: str           # orphan_rows, duplicate_rows, missing_segments, ... (see ``_check_model``)
    detail: str         # one sentence a person can act on
    model: str | None = None
    video_id: str | None = None
    path: str | None = None
    table: str | None = None
    repaired: str | None = None  # what --repair did, or why it could not


@dataclass
class VerifyReport:
    db: str
    models: list[dict] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    repair: bool = False

    @property
    def remaining(self) -> list[Problem]:
        """Problems not (or not yet) repaired."""
        return [p for p in self.problems if not (p.repaired and not p.repaired.startswith("not repaired"))]

    @property
    def needs_attention(self) -> bool:
        """Problems remain (the CLI exits 3: ``app.exit_codes``)."""
        return bool(self.remaining)

    def to_dict(self) -> dict:
        return {"db": self.db, "models": self.models, "problems": [asdict(p) for p in self.problems],
                "found": len(self.problems), "remaining": len(self.remaining), "repair": self.repair,
                "clean": not self.remaining}


def verify_store(store: VideoStore, repair: bool = False) -> VerifyReport:
    """Check (and with ``repair``, fix) every model's tables and the failures of ``store``."""
    report = VerifyReport(db=store.uri, repair=repair)
    try:
        hold = store.exclusive_writer()  # a job writing meanwhile would show half-committed batches
        hold.__enter__()
    except StoreWriteError:
        if repair:
            raise
        hold = None  # a read-only database: no job can be writing it, and checking needs no writes
    try:
        for model in store.models():
            report.models.append(_check_model(store, model, report, repair))
        _check_failures(store, report, repair)
    finally:
        if hold is not None:
            hold.__exit__(None, None, None)
    return report


# ---- reading ------------------------------------------------------------------------------------
def _column_rows(table, columns: list[str]) -> list[dict]:
    return table.to_lance().to_table(columns=columns, with_row_id=True).to_pylist()


def _bad_vectors(table, key: str) -> dict[str, str]:
    """key -> what is wrong with its vector (non-finite, or not of unit length), in batches."""
    bad: dict[str, str] = {}
    scanner = table.to_lance().scanner(columns=[key, "vector"], batch_size=8192)
    for batch in scanner.to_batches():
        if batch.num_rows == 0:
            continue
        vectors = batch.column("vector")
        dim = vectors.type.list_size
        values = vectors.values.to_numpy(zero_copy_only=False).reshape(-1, dim) if len(vectors) else np.zeros((0, dim))
        keys = batch.column(key).to_pylist()
        finite = np.isfinite(values).all(axis=1)
        norms = np.linalg.norm(np.where(np.isfinite(values), values, 0), axis=1)
        for i in np.flatnonzero(~finite | (np.abs(norms - 1.0) > NORM_TOLERANCE)):
            bad[keys[i]] = "not finite" if not finite[i] else f"length {norms[i]:.4f}, not 1"
    return bad


def _video_of(key: str) -> str:
    return key.rsplit(":", 1)[0]


# ---- one model ------------------------------------------------------------------------------------
def _check_model(store: VideoStore, model: dict, report: VerifyReport, repair: bool) -> dict:
    key_name = model["model"]
    tables = store.model(ModelRef(key_name, model["suffix"]))
    videos_t, segments_t, frames_t = tables.videos(), tables.segments(), tables.frames()
    summary = {"model": key_name, "videos": 0, "segments": 0, "frames": 0, "ann_index": None}
    if videos_t is None:
        return summary
    problems: list[Problem] = []

    def add(kind, detail, **where):
        problems.append(Problem(kind=kind, detail=detail, model=key_name, **where))

    videos = _column_rows(videos_t, ["video_id", "path", "duration", "n_frames", "n_segments", "settings"])
    segments = _column_rows(segments_t, ["segment_id", "video_id", "segment_index", "start", "end"]) \
        if segments_t is not None else []
    frames = _column_rows(frames_t, ["frame_id", "video_id"]) if frames_t is not None else []
    summary.update(videos=len(videos), segments=len(segments), frames=len(frames))
    by_id: dict[str, list[dict]] = collections.defaultdict(list)
    for row in videos:
        by_id[row["video_id"]].append(row)
    requeue: dict[str, str] = {}  # video_id -> why

    # keys stored twice
    exact_copies: dict[str, list[int]] = collections.defaultdict(list)  # table -> row ids to delete
    for table_name, rows, key in (("videos", videos, "video_id"), ("segments", segments, "segment_id"),
                                  ("frames", frames, "frame_id")):
        seen: dict[str, dict] = {}
        for row in rows:
            first = seen.setdefault(row[key], row)
            if first is row:
                continue
            video_id = row["video_id"] if key != "video_id" else row[key]
            same = {k: v for k, v in row.items() if k != "_rowid"} == {k: v for k, v in first.items() if k != "_rowid"}
            path = by_id[video_id][0]["path"] if by_id.get(video_id) else None
            add("duplicate_rows", f"{table_name} row {row[key]} is stored more than once"
                + ("" if same or table_name != "videos" else " with different contents"),
                video_id=video_id, path=path, table=table_name)
            if same and table_name != "videos":
                exact_copies[table_name].append(row["_rowid"])
            else:
                requeue.setdefault(video_id, "two different video rows with one id")
    paths = collections.Counter(row["path"] for row in videos)
    for row in videos:
        if paths[row["path"]] > 1:
            add("duplicate_path", f"{row['path']} is stored as {paths[row['path']]} different videos",
                video_id=row["video_id"], path=row["path"], table="videos")
            requeue.setdefault(row["video_id"], "one path stored as several videos")

    # orphans
    for table_name, rows in (("segments", segments), ("frames", frames)):
        orphan_rows = [row for row in rows if row["video_id"] not in by_id]
        if orphan_rows:  # what a job stopped between its commits left (the next job clears them too)
            ids = sorted({row["video_id"] for row in orphan_rows})
            add("orphan_rows", f"{len(orphan_rows)} {table_name} rows of {len(ids)} videos that have no video row "
                f"(left by a job stopped between its commits): {', '.join(ids[:3])}{' ...' if len(ids) > 3 else ''}",
                table=table_name)

    # every video has its segments and frames
    seg_by_video: dict[str, list[dict]] = collections.defaultdict(list)
    for row in segments:
        seg_by_video[row["video_id"]].append(row)
    frames_by_video = collections.Counter(row["video_id"] for row in frames)
    for video_id, rows in by_id.items():
        video = rows[0]
        mine = {r["segment_index"]: r for r in seg_by_video.get(video_id, [])}
        expected = video["n_segments"] or 0
        if sorted(mine) != list(range(expected)):
            add("missing_segments", f"{video['path']}: {len(mine)} segment rows (indices "
                f"{_ranges(sorted(mine))}) where its video row promises {expected}",
                video_id=video_id, path=video["path"], table="segments")
            requeue.setdefault(video_id, "segments missing")
        duration = float(video["duration"] or 0)
        outside = [r for r in mine.values() if not (0 <= r["start"] < r["end"] <= duration + 1e-3)]
        if outside:
            add("segment_bounds", f"{video['path']}: {len(outside)} segments lie outside 0-{duration:.2f} s "
                "or end before they start", video_id=video_id, path=video["path"], table="segments")
            requeue.setdefault(video_id, "segment bounds wrong")
        if _kept_frames(video) and frames_by_video.get(video_id, 0) != (video["n_frames"] or 0):
            add("missing_frames", f"{video['path']}: {frames_by_video.get(video_id, 0)} frame rows where its video "
                f"row promises {video['n_frames']}", video_id=video_id, path=video["path"], table="frames")
            requeue.setdefault(video_id, "frames missing")

    # vectors
    for table_name, table, key in (("videos", videos_t, "video_id"), ("segments", segments_t, "segment_id"),
                                   ("frames", frames_t, "frame_id")):
        if table is None:
            continue
        bad = _bad_vectors(table, key)
        per_video: dict[str, list[str]] = collections.defaultdict(list)
        for row_key, what in bad.items():
            per_video[row_key if table_name == "videos" else _video_of(row_key)].append(what)
        for video_id, whats in per_video.items():
            path = by_id[video_id][0]["path"] if video_id in by_id else None
            add("bad_vectors", f"{path or video_id}: {len(whats)} {table_name} vectors are {whats[0]}",
                video_id=video_id, path=path, table=table_name)
            if video_id in by_id:
                requeue.setdefault(video_id, "bad vectors")

    # the ANN index
    if segments_t is not None:
        for index in segments_t.list_indices():
            if "vector" not in index.columns:
                continue
            stats = segments_t.index_stats(index.name)
            summary["ann_index"] = {"indexed": stats.num_indexed_rows, "not_indexed": stats.num_unindexed_rows}
            if stats.num_unindexed_rows:
                add("ann_index_gap", f"{stats.num_unindexed_rows} of {len(segments)} segments are not in the ANN "
                    "index yet (search still finds them, by a slower exact scan)", table="segments")

    if repair:
        _repair_model(store, tables, problems, requeue, exact_copies, by_id)
    report.problems += problems
    summary["problems"] = len(problems)
    return summary


def _kept_frames(video: dict) -> bool:
    try:
        return bool(json.loads(video["settings"] or "{}").get("keep_frames", True))
    except (TypeError, ValueError):
        return True


def _ranges(values: list[int]) -> str:
    if not values:
        return "none"
    runs, start, prev = [], values[0], values[0]
    for v in values[1:] + [None]:
        if v is not None and v == prev + 1:
            prev = v
            continue
        runs.append(f"{start}" if start == prev else f"{start}-{prev}")
        if v is not None:
            start = prev = v
    return ", ".join(runs[:5]) + (" ..." if len(runs) > 5 else "")


def _file_gone(path: str | None) -> bool:
    return bool(path) and "://" not in path and not os.path.exists(path)


def _repair_model(store: VideoStore, model: ModelTables, problems: list[Problem], requeue: dict[str, str],
                  exact_copies: dict[str, list[int]], by_id: dict[str, list[dict]]) -> None:
    tables = {"videos": model.videos(), "segments": model.segments(), "frames": model.frames()}
    kept = {video_id for video_id in requeue if any(_file_gone(r["path"]) for r in by_id.get(video_id, []))}
    doomed = sorted(set(requeue) - kept)
    with store.exclusive_writer():
        model.delete_videos(doomed)  # re-queued: the next `vidsift index` of their folder redoes them
        for name, row_ids in exact_copies.items():
            for begin in range(0, len(row_ids), 1000):
                store.delete_rows(tables[name], "_rowid IN (" + ", ".join(map(str, row_ids[begin:begin + 1000])) + ")")
        orphans = model.clear_orphans()
        gap = any(p.kind == "ann_index_gap" for p in problems)
        if gap:
            model.optimize()
    for problem in problems:
        if problem.kind == "orphan_rows":
            problem.repaired = "deleted" if orphans else "deleted (already gone)"
        elif problem.kind == "ann_index_gap":
            problem.repaired = "index brought up to date"
        elif problem.video_id in kept:
            problem.repaired = (f"not repaired: {problem.path} no longer exists, so it could not be indexed again; "
                                "its rows were left as they are")
        elif problem.video_id in requeue:
            problem.repaired = "re-queued: its rows were deleted; the next `vidsift index` of its folder redoes it"
        elif problem.kind == "duplicate_rows":
            problem.repaired = "extra copies deleted"


# ---- failures ---------------------------------------------------------------------------------------
def _check_failures(store: VideoStore, report: VerifyReport, repair: bool) -> None:
    indexed: dict[str, set[str]] = {}
    for model in store.archive_models():
        indexed[model.key] = set(store.model(model).indexed_files())
    stale = []
    for failure in store.failures():
        path, model = failure["path"], failure["model"]
        if _file_gone(path) and not os.path.islink(path):
            stale.append(Problem("stale_failure", f"{path}: a failure is recorded for a file that no longer exists",
                                 model=model, path=path, table="failures"))
        elif path in indexed.get(model, set()):
            stale.append(Problem("stale_failure", f"{path}: a failure is recorded although the file is indexed",
                                 model=model, path=path, table="failures"))
    if repair and stale:
        with store.exclusive_writer():
            for problem in stale:
                store.delete_failure(problem.model, problem.path)
                problem.repaired = "failure record deleted"
    report.problems += stale


def format_report(report: VerifyReport) -> str:
    lines = []
    for model in report.models:
        ann = model.get("ann_index")
        lines.append(f"{model['model']}: {model['videos']} videos, {model['segments']} segments, {model['frames']} "
                     f"frames" + (f", ANN index over {ann['indexed']} rows" if ann else ""))
    for problem in report.problems:
        repaired = f" -> {problem.repaired}" if problem.repaired else ""
        lines.append(f"  PROBLEM {problem.kind}: {problem.detail}{repaired}")
    if not report.models:
        lines.append("nothing indexed yet")
    if not report.problems:
        lines.append(f"{report.db}: clean")
    elif report.remaining:
        hint = "" if report.repair else "; `vidsift verify --repair` fixes what can be fixed"
        lines.append(f"{report.db}: {len(report.problems)} problems found, {len(report.remaining)} remain{hint}")
    else:
        lines.append(f"{report.db}: {len(report.problems)} problems found and repaired; run `vidsift index` on the "
                     "same inputs to redo re-queued videos" if any(p.repaired and p.repaired.startswith("re-queued")
                                                                   for p in report.problems)
                     else f"{report.db}: {len(report.problems)} problems found and repaired")
    return "\n".join(lines)

