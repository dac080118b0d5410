"""The LanceDB store: one table of segments and one of videos per model, plus failures.

Vectors of different models never mix: every model key (name + weights) gets its own pair of
tables, named after it, and a small ``models`` table says which key each pair belongs to, how to
load its weights again and which model is the archive's default (``pipeline.archive_models``). Writes
are done by one process (the job's driver): concurrent ``merge_insert`` of new keys can duplicate
rows (lance#4585), and one writer keeps every batch one atomic commit per table.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import errno
import functools
import math
import os
import re
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from . import interrupts
from .archive_models import ArchiveModel, default_model, pretrained_from_key
from .catalog import CATALOG_COLUMNS, SegmentCatalog, table_has_vector_index
from .lock import WRITER_LOCK, write_error  # noqa: F401 - WRITER_LOCK: the lock file, inside a local database

VIDEO_KEY = pa.field("video_id", pa.string(), nullable=False,
                     metadata={"lance-schema:unenforced-primary-key": "true"})
SEGMENT_KEY = pa.field("segment_id", pa.string(), nullable=False,
                       metadata={"lance-schema:unenforced-primary-key": "true"})
ANN_AUTO_THRESHOLD = 100_000  # rows past which `index` builds an ANN index by itself
FILTER_INDEX_COLUMNS = ("path", "video_id")  # B-trees built with the ANN index, for prefilters
MODELS_TABLE = "models"
FAILURES_TABLE = "failures"


def segments_schema(dim: int) -> pa.Schema:
    return pa.schema([
        SEGMENT_KEY,
        pa.field("video_id", pa.string()),
        pa.field("path", pa.string()),
        pa.field("segment_index", pa.int32()),
        pa.field("start", pa.float64()),
        pa.field("end", pa.float64()),
        pa.field("n_frames", pa.int32()),
        pa.field("starts_scene", pa.bool_()),
        pa.field("model", pa.string()),
        pa.field("tags", pa.list_(pa.string())),
        pa.field("thumbnail", pa.binary()),
        pa.field("vector", pa.list_(pa.float32(), dim)),
    ])


def frames_schema(dim: int) -> pa.Schema:
    return pa.schema([
        pa.field("frame_id", pa.string(), nullable=False,
                 metadata={"lance-schema:unenforced-primary-key": "true"}),
        pa.field("video_id", pa.string()),
        pa.field("frame_index", pa.int32()),
        pa.field("time", pa.float64()),
        pa.field("thumbnail", pa.binary()),
        pa.field("vector", pa.list_(pa.float32(), dim)),
    ])


def videos_schema(dim: int) -> pa.Schema:
    return pa.schema([
        VIDEO_KEY,
        pa.field("path", pa.string()),
        pa.field("size_bytes", pa.int64()),
        pa.field("mtime_ns", pa.int64()),
        pa.field("duration", pa.float64()),
        pa.field("fps", pa.float64()),
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
        pa.field("n_frames", pa.int32()),
        pa.field("n_segments", pa.int32()),
        pa.field("model", pa.string()),
        pa.field("settings", pa.string()),
        pa.field("tags", pa.list_(pa.string())),
        pa.field("indexed_at", pa.timestamp("us", tz="UTC")),
        pa.field("vector", pa.list_(pa.float32(), dim)),
    ])


FAILURES_SCHEMA = pa.schema([
    pa.field("failure_id", pa.string(), nullable=False,
             metadata={"lance-schema:unenforced-primary-key": "true"}),
    pa.field("path", pa.string()),
    pa.field("model", pa.string()),
    pa.field("stage", pa.string()),
    pa.field("reason", pa.string()),
    pa.field("time", pa.timestamp("us", tz="UTC")),
])

MODELS_SCHEMA = pa.schema([
    pa.field("suffix", pa.string(), nullable=False),
    pa.field("model", pa.string()),
    pa.field("dim", pa.int32()),
    # Added after the first release: what loads the weights again, and the archive's default
    # (``pipeline.archive_models``); older archives get them on their next write.
    pa.field("pretrained", pa.string()),
    pa.field("is_default", pa.bool_()),
])


def to_arrow(rows: list[dict], schema: pa.Schema) -> pa.Table:
    """Rows -> Arrow, the ``vector`` column (always last) from one numpy block: converting 512
    floats per row through Python lists was most of a write's cost (``bench/stages.py``)."""
    field = schema.field("vector")
    dim = field.type.list_size
    vectors = (np.stack([np.asarray(r["vector"], dtype=np.float32) for r in rows]) if rows
               else np.zeros((0, dim), np.float32))
    others = schema.remove(schema.get_field_index("vector"))
    table = pa.Table.from_pylist([{k: v for k, v in r.items() if k != "vector"} for r in rows], schema=others)
    column = pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel(), pa.float32()), dim)
    return table.append_column(field, column)


@dataclass(frozen=True)
class VectorIndexConfig:
    """The ANN index over segment vectors and how it is searched.

    ``kind``: ``ivf_sq`` (default: 8-bit scalar quantisation, 4x smaller than float32 and accurate
    enough that ranking inside the probed partitions stays right), ``ivf_pq`` (64 bytes a vector,
    smallest, but its coarse distances missed true neighbours: recall@10 0.62 against IVF_SQ's
    1.00 at 1M rows, ``bench/RESULTS.md``) or ``ivf_flat``.
    Partitions default to sqrt(rows); ``nprobes`` partitions are searched at least (more under a
    narrow filter), and ``refine_factor`` x limit candidates are re-ranked on the full vectors.
    Each candidate is one random read: at 1M segments 5 gave the same recall@10 (1.000) as 10 in
    0.85-0.9x the time; 16 probes instead of 32 was as fast or faster, but how many partitions a
    query's true neighbours spread over depends on the embeddings, so 32 stays (``bench/RESULTS.md``).
    """

    kind: str = "ivf_sq"
    partitions: int | None = None
    nprobes: int = 32
    refine_factor: int = 5
    kmeans_iterations: int = 25

    def __post_init__(self):
        if self.kind not in ("ivf_sq", "ivf_pq", "ivf_flat"):
            raise ValueError(f"unknown vector index kind {self.kind!r}")

    def lancedb_config(self, rows: int, dim: int):
        from lancedb.index import IvfFlat, IvfPq, IvfSq

        common = dict(distance_type="cosine", max_iterations=self.kmeans_iterations,
                      num_partitions=self.partitions or max(1, min(4096, int(math.sqrt(rows)))))
        if self.kind == "ivf_pq":
            sub_vectors = next(d for d in (dim // 8, dim // 4, dim // 2, dim, 1) if d >= 1 and dim % d == 0)
            return IvfPq(num_sub_vectors=sub_vectors, **common)
        return (IvfSq if self.kind == "ivf_sq" else IvfFlat)(**common)


@dataclass
class SegmentRow:
    start: float
    end: float
    n_frames: int
    thumbnail: bytes
    vector: np.ndarray
    starts_scene: bool = True


@dataclass
class FrameRows:
    """A video's sampled frames, kept so segments can be re-pooled without decoding again."""

    times: np.ndarray
    vectors: np.ndarray
    thumbnails: list[bytes]


@dataclass
class VideoRecord:
    """Everything one indexed video adds to the store."""

    video_id: str
    path: str
    size_bytes: int
    mtime_ns: int
    duration: float
    fps: float
    width: int
    height: int
    n_frames: int
    settings: str
    vector: np.ndarray
    segments: list[SegmentRow]
    tags: tuple[str, ...] = ()
    frames: FrameRows | None = None


@dataclass
class Failure:
    path: str
    stage: str
    reason: str


def sql_str(value: str) -> str:
    """A SQL string literal (LanceDB filters are SQL)."""
    return "'" + str(value).replace("'", "''") + "'"


def sql_in(column: str, values) -> str:
    values = list(values)
    if not values:
        return "false"
    return f"{column} IN ({', '.join(sql_str(v) for v in values)})"


def check_filter(where: str) -> str:
    """A user's SQL filter, made safe to hand to LanceDB, or ``InputError``.

    LanceDB reads the first complete expression of a filter and silently ignores the rest
    (``path LIKE '%x%' garbage`` and ``1=1; DROP TABLE x`` both ran as their first part). Wrapped
    in parentheses the parser must reach the closing one, so anything left over is a parse
    error instead; that holds only if the filter's own parentheses balance, which is checked
    here (outside string literals, quoted names and comments), with ``;`` refused outright."""
    from .errors import InputError

    text = str(where)
    depth, i, n = 0, 0, len(text)
    while i < n:
        char = text[i]
        if char in "'\"`":  # a string literal or a quoted name; doubled quotes stay inside
            end = i + 1
            while True:
                end = text.find(char, end)
                if end < 0:
                    raise InputError(f"unterminated {'string' if char == chr(39) else 'quoted name'} starting at "
                                     f"{text[i:i + 20]!r}")
                if end + 1 < n and text[end + 1] == char:
                    end += 2
                    continue
                break
            i = end + 1
            continue
        if text.startswith("--", i):
            newline = text.find("\n", i)
            i = n if newline < 0 else newline
            continue
        if text.startswith("/*", i):
            close = text.find("*/", i + 2)
            if close < 0:
                raise InputError("unterminated /* comment")
            i = close + 2
            continue
        if char == ";":
            raise InputError("a filter is one SQL expression: ';' is not allowed")
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth < 0:
                raise InputError(f"unbalanced parentheses: ')' at position {i + 1} closes nothing")
        i += 1
    if depth:
        raise InputError(f"unbalanced parentheses: {depth} '(' not closed")
    return f"({text}\n)"


def explain_filter_error(where: str, exc: Exception) -> str:
    """LanceDB's parse error for a filter (it quotes a whole SQL statement) in a few words."""
    text = str(exc)
    found = re.search(r"Expected: (.*?), found: (\S+?)(?: at Line: \d+, Column: \d+)?\)*\s*$", text, re.S)
    if found:
        expected, what = found.group(1).strip(), found.group(2).strip()
        if what in ("EOF", ")"):  # the closing parenthesis is ours: the user's filter stopped short
            return "not a complete SQL expression: it ends too early"
        if expected == ")":
            return f"not one SQL expression: {what!r} follows a complete expression (join conditions with AND / OR)"
        return f"not one SQL expression: {what!r} is unexpected there (expected {expected})"
    message = re.sub(r"^.*?(Error during planning|Schema error|Invalid user input): ", "", text.strip().splitlines()[0])
    return message.split(" { ")[0][:200]


def write_failure(uri: str, exc: BaseException):
    """``exc``, met while writing ``uri``, as a ``StoreWriteError`` when the cause is the storage
    itself (disk full, read-only, permissions); None for anything else. LanceDB reports these as
    long Rust errors naming its source files, not the database."""
    from .errors import StoreWriteError

    if isinstance(exc, StoreWriteError):
        return exc
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM):
        return write_error(uri, exc)
    text = str(exc)
    for needle, code in (("No space left on device", errno.ENOSPC), ("Disk quota exceeded", errno.EDQUOT),
                         ("Read-only file system", errno.EROFS), ("Permission denied", errno.EACCES)):
        if needle in text:
            return write_error(uri, OSError(code, needle))
    return None


def guarded_write(uri: str, write, *args, **kwargs):
    """Run ``write`` so that a signal waits until it is done (``pipeline.interrupts``) and a
    storage failure becomes one line naming the database ``uri``."""
    with interrupts.deferred():
        try:
            return write(*args, **kwargs)
        except Exception as exc:
            failure = write_failure(uri, exc)
            if failure is None or failure is exc:
                raise
            raise failure from None


def _writes(method):
    """A store method that writes (``guarded_write``)."""
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        return guarded_write(self.uri, method, self, *args, **kwargs)
    return wrapper


def now_utc() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _segment_rows(records: list[VideoRecord], model_key: str) -> list[dict]:
    return [{
        "segment_id": f"{rec.video_id}:{i:05d}", "video_id": rec.video_id, "path": rec.path,
        "segment_index": i, "start": float(seg.start), "end": float(seg.end),
        "n_frames": int(seg.n_frames), "starts_scene": bool(seg.starts_scene),
        "model": model_key, "tags": list(rec.tags), "thumbnail": seg.thumbnail, "vector": seg.vector,
    } for rec in records for i, seg in enumerate(rec.segments)]


def _frame_rows(records: list[VideoRecord]) -> list[dict]:
    return [{"frame_id": f"{rec.video_id}:{i:06d}", "video_id": rec.video_id, "frame_index": i,
             "time": float(t), "thumbnail": rec.frames.thumbnails[i], "vector": rec.frames.vectors[i]}
            for rec in records if rec.frames is not None for i, t in enumerate(rec.frames.times)]


def _video_rows(records: list[VideoRecord], model_key: str, stamp: dt.datetime) -> list[dict]:
    return [{
        "video_id": r.video_id, "path": r.path, "size_bytes": r.size_bytes, "mtime_ns": r.mtime_ns,
        "duration": r.duration, "fps": r.fps, "width": r.width, "height": r.height,
        "n_frames": r.n_frames, "n_segments": len(r.segments), "model": model_key,
        "settings": r.settings, "tags": list(r.tags), "indexed_at": stamp, "vector": r.vector,
    } for r in records]


def _take_rows(table, row_ids: list[int], columns: list[str]) -> list[dict | None]:
    """``columns`` of the rows ``row_ids`` of a LanceDB table, in that order (None where gone)."""
    found = table.take_row_ids(row_ids).select(columns).with_row_id().to_arrow().to_pylist()
    by_id = {row.pop("_rowid"): row for row in found}
    return [by_id.get(row_id) for row_id in row_ids]


class VideoStore:
    """Reads and writes one LanceDB database (a folder, or any LanceDB URI such as s3://...)."""

    def __init__(self, uri: str, storage_options: dict | None = None,
                 vector_index: VectorIndexConfig = VectorIndexConfig(), search_catalog: bool = True):
        """``search_catalog``: keep what search shows of each segment in memory (``pipeline.catalog``),
        for a process that searches more than once (the app, evaluation). A process that searches
        once (``vidsift search``) is better off without: loading the catalog costs more than the
        one search it speeds up (0.55 s against ~10 ms at 1M segments)."""
        import lancedb

        self.uri = uri
        self.vector_index = vector_index
        self.search_catalog = search_catalog
        from .lock import is_local, local_folder

        if is_local(uri) and local_folder(uri).exists() and not local_folder(uri).is_dir():
            from .storage import StorageError

            raise StorageError(f"{uri}: it is a file, not a database folder: give --db a folder")
        with self._reaching():
            self.db = lancedb.connect(uri, storage_options=storage_options)
        self._catalogs: dict[str, SegmentCatalog] = {}  # per model suffix, see ``search_segments``
        self._weights_given: dict[str, str] = {}  # model key -> pretrained, see ``remember_spec``
        self._registered: set[str] = set()  # suffixes this store has registered (or found registered)
        self._models_cache: tuple[int, list[ArchiveModel]] | None = None  # (models table version, models)

    @contextlib.contextmanager
    def exclusive_writer(self):
        """Hold the database for one indexing job. Jobs append new videos without reading the
        table, so two jobs indexing the same new file at once would store it twice: a second job
        on a local database fails at once with a message instead (an OS file lock, released
        even when the process dies; ``pipeline.lock``). Remote URIs (s3://...) cannot be locked
        this way: run one indexing job per database at a time there."""
        from .lock import writer_lock

        with writer_lock(self.uri):
            yield

    # ---- tables -------------------------------------------------------------------------
    def _names(self) -> set[str]:
        names, token = set(), None
        while True:
            page = self.db.list_tables(page_token=token)
            names.update(page.tables)
            token = page.page_token
            if not token:
                return names

    def _open_or_create(self, name: str, schema: pa.Schema):
        table = self._open(name)
        if table is not None:
            return table
        with self._reaching():
            return self.db.create_table(name, schema=schema, exist_ok=True)

    def _open(self, name: str):
        """The table, or None if it does not exist (one call: listing the tables first doubled
        the cost of opening one, which every search pays)."""
        try:
            with self._reaching():
                return self.db.open_table(name)
        except ValueError as exc:  # LanceDB: "Table 'name' was not found"
            if "not found" in str(exc):
                return None
            raise

    @contextlib.contextmanager
    def _reaching(self):
        """LanceDB's errors for a store it cannot reach or is refused by are Rust debug dumps;
        turn them into one line naming the URI and the cause (``pipeline.storage``)."""
        try:
            yield
        except ValueError as exc:
            if "not found" in str(exc) and "bucket" not in str(exc).lower():
                raise
            raise self._unreachable(exc) from None
        except (OSError, RuntimeError) as exc:
            failure = write_failure(self.uri, exc)  # creating a table on a full or read-only disk
            if failure is None or getattr(failure, "errno", None) not in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
                failure = self._unreachable(exc)
            raise failure from None

    def _unreachable(self, exc: BaseException) -> Exception:
        from .storage import StorageError, explain_storage_error

        return StorageError(explain_storage_error(self.uri, exc))

    @staticmethod
    def segments_table_name(suffix: str) -> str:
        return f"segments_{suffix}"

    @staticmethod
    def videos_table_name(suffix: str) -> str:
        return f"videos_{suffix}"

    @staticmethod
    def frames_table_name(suffix: str) -> str:
        return f"frames_{suffix}"

    def remember_spec(self, spec) -> None:
        """Note how ``spec``'s weights are loaded, so that registering its key records it: a
        checkpoint's key holds its content hash, not its path (``pipeline.archive_models``)."""
        self._weights_given[spec.key] = os.path.abspath(spec.pretrained) if spec.is_local_file else spec.pretrained

    def _models_for_write(self):
        """The ``models`` table, with the columns of this version (an older archive's gain them:
        nullable, so its rows read as before)."""
        table = self._open_or_create(MODELS_TABLE, MODELS_SCHEMA)
        missing = [f for f in MODELS_SCHEMA if f.name not in table.schema.names]
        if missing:
            try:
                table.add_columns(missing)
            except Exception:  # noqa: BLE001 - another process migrated it at the same moment
                table = self._open(MODELS_TABLE)
                if any(f.name not in table.schema.names for f in MODELS_SCHEMA):
                    raise
        return table

    @_writes
    def register_model(self, model_key: str, suffix: str, dim: int, pretrained: str | None = None) -> None:
        """Record a model before its first rows are written. The first model of an archive becomes
        its default; adding a second to an archive from before defaults were kept marks the one it
        had, so that the app serving it goes on serving it."""
        if suffix not in self._registered:
            if pretrained is None:
                pretrained = self._weights_given.get(model_key, pretrained_from_key(model_key))
            table = self._models_for_write()
            rows = table.to_arrow().to_pylist()
            known = next((r for r in rows if r["suffix"] == suffix), None)
            if known is None:
                if len(rows) == 1 and not rows[0].get("is_default"):
                    table.update(where=f"suffix = {sql_str(rows[0]['suffix'])}", values={"is_default": True})
                table.add(pa.Table.from_pylist([{"suffix": suffix, "model": model_key, "dim": dim,
                                                 "pretrained": pretrained, "is_default": not rows}],
                                               schema=MODELS_SCHEMA))
            elif known.get("pretrained") is None and pretrained is not None:  # a checkpoint's path, learnt now
                table.update(where=f"suffix = {sql_str(suffix)}", values={"pretrained": pretrained})
            self._registered.add(suffix)
        existing = self._open(self.videos_table_name(suffix))
        if existing is not None:
            stored_dim = existing.schema.field("vector").type.list_size
            if stored_dim != dim:
                raise ValueError(f"Table for {model_key} holds {stored_dim}-d vectors, model gives {dim}-d")

    def models(self) -> list[dict]:
        table = self._open(MODELS_TABLE)
        return table.to_arrow().to_pylist() if table is not None else []

    def archive_models(self) -> list[ArchiveModel]:
        """The archive's models (``pipeline.archive_models``), read again only when the table has
        changed: a server asks before every search (opening the table to see its version costs
        well under a millisecond, reading it several)."""
        table = self._open(MODELS_TABLE)
        if table is None:
            return []
        cached, version = self._models_cache, table.version
        if cached is None or cached[0] != version:
            rows = table.to_arrow().to_pylist()
            # In a stable order (an update rewrites the rows it changes at the table's end).
            models = sorted((ArchiveModel.from_row(r) for r in rows), key=lambda m: (m.key.casefold(), m.suffix))
            cached = self._models_cache = (version, models)
        return list(cached[1])

    def default_model(self) -> ArchiveModel | None:
        """The model used when none is named (see ``archive_models.default_model``)."""
        return default_model(self.archive_models(), where=self.uri)

    @_writes
    def set_default(self, suffix: str) -> None:
        """Make the model of ``suffix`` the archive's default: one commit, so a reader sees the old
        default or the new one, never none or two."""
        if suffix not in {m.suffix for m in self.archive_models()}:
            raise ValueError(f"no model with table suffix {suffix!r} in {self.uri}")
        self._models_for_write().update(values_sql={"is_default": f"suffix = {sql_str(suffix)}"})

    def segments_table(self, suffix: str, dim: int | None = None):
        name = self.segments_table_name(suffix)
        return self._open_or_create(name, segments_schema(dim)) if dim else self._open(name)

    def videos_table(self, suffix: str, dim: int | None = None):
        name = self.videos_table_name(suffix)
        return self._open_or_create(name, videos_schema(dim)) if dim else self._open(name)

    def frames_table(self, suffix: str, dim: int | None = None):
        name = self.frames_table_name(suffix)
        return self._open_or_create(name, frames_schema(dim)) if dim else self._open(name)

    # ---- reads used by the job to skip done work -------------------------------------------
    def indexed_files(self, suffix: str) -> dict[str, dict]:
        """path -> {video_id, size_bytes, mtime_ns} of every indexed video for this model."""
        table = self.videos_table(suffix)
        if table is None:
            return {}
        rows = table.to_lance().to_table(columns=["video_id", "path", "size_bytes", "mtime_ns"]).to_pylist()
        return {r["path"]: r for r in rows}

    # ---- writes ----------------------------------------------------------------------------
    @_writes
    def write_videos(self, model_key: str, suffix: str, records: list[VideoRecord],
                     new_ids: frozenset[str] | set[str] = frozenset()) -> None:
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
        self.register_model(model_key, suffix, dim)
        fresh = [r for r in records if r.video_id in new_ids]
        known = [r for r in records if r.video_id not in new_ids]
        stale = (f"({sql_in('video_id', [r.video_id for r in known])} OR {sql_in('path', [r.path for r in known])})"
                 if known else None)
        frames = self.frames_table(suffix, dim if any(r.frames is not None for r in records) else None)
        if frames is not None:  # also when this batch keeps no frames: old versions' frames go
            replaced = self._ids_at_paths(suffix, [r.path for r in known])
            self._write(frames, "frame_id", frames_schema(dim), _frame_rows(fresh), _frame_rows(known),
                        sql_in("video_id", [r.video_id for r in known] + replaced) if known else None)
        segments = self.segments_table(suffix, dim)
        self._write(segments, "segment_id", segments_schema(dim), _segment_rows(fresh, model_key),
                    _segment_rows(known, model_key), stale)
        videos = self.videos_table(suffix, dim)
        stamp = now_utc()
        self._write(videos, "video_id", videos_schema(dim), _video_rows(fresh, model_key, stamp),
                    _video_rows(known, model_key, stamp), stale)
        self.clear_failures(model_key, [r.path for r in records])

    @staticmethod
    def _write(table, key: str, schema: pa.Schema, appended: list[dict], upserted: list[dict],
               stale: str | None) -> None:
        """Append ``appended``; upsert ``upserted`` by ``key``, deleting the rows matching
        ``stale`` that it does not hold (one commit each)."""
        if appended:
            table.add(to_arrow(appended, schema))
        if stale is not None:
            (table.merge_insert(key).when_matched_update_all().when_not_matched_insert_all()
             .when_not_matched_by_source_delete(stale)
             .execute(to_arrow(upserted, schema)))

    def _ids_at_paths(self, suffix: str, paths: list[str]) -> list[str]:
        """Ids of the videos stored at ``paths`` (earlier versions a batch replaces)."""
        videos = self.videos_table(suffix)
        if videos is None or not paths:
            return []
        return [r["video_id"] for r in
                videos.search().where(sql_in("path", paths)).select(["video_id"]).limit(None).to_list()]

    @_writes
    def clear_orphans(self, suffix: str, chunk: int = 2000) -> int:
        """Delete segment and frame rows whose video has no video row: what a job that crashed
        between committing a batch's fragments and its video rows left behind. Reads the
        ``video_id`` column of each table once (a job calls it once, before it writes)."""
        videos = self.videos_table(suffix)
        if videos is None:
            return 0
        done = set(videos.to_lance().to_table(columns=["video_id"]).column(0).to_pylist())
        removed = 0
        for table in (self.segments_table(suffix), self.frames_table(suffix)):
            if table is None:
                continue
            ids = set(table.to_lance().to_table(columns=["video_id"]).column(0).unique().to_pylist())
            orphans = sorted(ids - done)
            for begin in range(0, len(orphans), chunk):
                table.delete(sql_in("video_id", orphans[begin:begin + chunk]))
            removed += len(orphans)
        return removed

    @_writes
    def delete_unfinished(self, suffix: str, video_ids: list[str], paths: list[str], chunk: int = 2000) -> None:
        """Remove the segment and frame rows of videos that have no video row (``video_ids``, or at
        ``paths``): what a run that crashed between its commits left behind. A job calls it once,
        for the videos it will append."""
        for table in (self.segments_table(suffix), self.frames_table(suffix)):
            if table is None:
                continue
            for begin in range(0, len(video_ids), chunk):
                condition = sql_in("video_id", video_ids[begin:begin + chunk])
                if "path" in table.schema.names:
                    condition = f"({condition} OR {sql_in('path', paths[begin:begin + chunk])})"
                table.delete(condition)

    @_writes
    def replace_segments(self, suffix: str, dim: int, seg_rows: list[dict], stale: str) -> None:
        """Upsert segment rows and delete the rows matching ``stale`` that the batch does not hold
        (old versions, or a video segmented into fewer pieces): one commit."""
        self._write(self.segments_table(suffix, dim), "segment_id", segments_schema(dim), [], seg_rows, stale)

    def frame_rows(self, suffix: str, video_ids: list[str], columns: list[str] | None = None) -> list[dict]:
        """The stored frames of some videos, in time order."""
        table = self.frames_table(suffix)
        if table is None or not video_ids:
            return []
        cols = list(dict.fromkeys(["video_id", "time", *(columns or ["frame_index", "thumbnail", "vector"])]))
        rows = table.search().where(sql_in("video_id", video_ids)).select(cols).limit(None).to_list()
        return sorted(rows, key=lambda r: (r["video_id"], r["time"]))

    @_writes
    def update_video(self, suffix: str, video_id: str, **values) -> None:
        self.videos_table(suffix).update(where=f"video_id = {sql_str(video_id)}", values=values)

    @_writes
    def record_failures(self, model_key: str, failures: list[Failure]) -> None:
        if not failures:
            return
        table = self._open_or_create(FAILURES_TABLE, FAILURES_SCHEMA)
        stamp = now_utc()
        rows = [{"failure_id": f"{model_key}|{f.path}", "path": f.path, "model": model_key,
                 "stage": f.stage, "reason": f.reason, "time": stamp} for f in failures]
        (table.merge_insert("failure_id").when_matched_update_all().when_not_matched_insert_all()
         .execute(pa.Table.from_pylist(rows, schema=FAILURES_SCHEMA)))

    @_writes
    def delete_rows(self, table, where: str) -> None:
        """Delete the rows of one of this store's tables matching ``where`` (one commit)."""
        if table is not None:
            table.delete(where)

    @_writes
    def delete_failure(self, model_key: str, path: str) -> None:
        table = self._open(FAILURES_TABLE)
        if table is not None:
            table.delete(f"failure_id = {sql_str(f'{model_key}|{path}')}")

    @_writes
    def clear_failures(self, model_key: str, paths: list[str]) -> None:
        table = self._open(FAILURES_TABLE)
        if table is not None and paths:
            table.delete(f"model = {sql_str(model_key)} AND {sql_in('path', paths)}")

    def failures(self, model_key: str | None = None) -> list[dict]:
        table = self._open(FAILURES_TABLE)
        if table is None:
            return []
        rows = table.to_arrow().to_pylist()
        rows = [r for r in rows if model_key is None or r["model"] == model_key]
        return sorted(rows, key=lambda r: r["time"])

    # ---- search ----------------------------------------------------------------------------
    def has_vector_index(self, suffix: str) -> bool:
        return table_has_vector_index(self.segments_table(suffix))

    @_writes
    def build_vector_index(self, suffix: str) -> str:
        """The ANN index over segment vectors (see ``VectorIndexConfig``). Returns a description."""
        table = self.segments_table(suffix)
        if table is None:
            raise ValueError("nothing indexed with this model yet")
        rows = table.count_rows()
        if rows < 256:
            return f"not built: {rows} segments are too few to train an index (exact search is used)"
        dim = table.schema.field("vector").type.list_size
        config = self.vector_index.lancedb_config(rows, dim)
        table.create_index("vector", config=config, replace=True)
        self._build_filter_indexes(table)
        return (f"{self.vector_index.kind.upper()} index built: {rows} segments, {config.num_partitions} partitions; "
                f"B-tree on {', '.join(FILTER_INDEX_COLUMNS)}")

    @staticmethod
    def _build_filter_indexes(table) -> None:
        """B-trees on the columns filters name most (``path LIKE 'folder/%'`` for a folder,
        ``video_id IN (...)`` for a video's rows): a prefilter then reads the index instead of every
        row's path, 58 -> 15 ms a filtered search at 300K segments (``bench/RESULTS.md``). lance
        uses a B-tree for ``LIKE 'prefix%'`` too. Built in well under a second; ``optimize`` keeps
        them up to date with the vector index."""
        from lancedb.index import BTree

        for column in FILTER_INDEX_COLUMNS:
            table.create_index(column, config=BTree(), replace=True)

    @_writes
    def optimize(self, suffix: str) -> None:
        """Fold new rows into the ANN index and compact small fragments (the Ray job writes a
        fragment per video)."""
        for table in (self.segments_table(suffix), self.videos_table(suffix), self.frames_table(suffix)):
            if table is not None:
                table.optimize()

    def search_segments(self, suffix: str, vector: np.ndarray, limit: int, where: str | None = None,
                        exact: bool = False, thumbnails: bool = False, vectors: bool = False) -> list[dict]:
        """The ``limit`` nearest segments, best first, as dicts of ``CATALOG_COLUMNS`` plus
        ``score`` (cosine similarity) and, when asked, ``thumbnail`` and ``vector`` (lance reads the
        vectors anyway to re-rank, so confidence scoring needs no second read). lance finds the row ids and
        distances (and reads the thumbnails of those rows only); with ``search_catalog`` the
        other columns come from the in-memory catalog (see ``pipeline.catalog`` for why), else
        lance reads them too."""
        table = self.segments_table(suffix)
        if table is None:
            return []
        catalog = self._catalog(suffix, table) if self.search_catalog else None
        query = (table.search(vector.astype(np.float32), vector_column_name="vector").distance_type("cosine")
                 .with_row_id(True))
        if where:
            query = query.where(check_filter(where), prefilter=True)
        if exact:
            query = query.bypass_vector_index()
        elif catalog.has_vector_index if catalog else table_has_vector_index(table):
            # Unfiltered: exactly `nprobes` partitions (letting lance probe on, maximum_nprobes 0,
            # cost 2.4x the latency for nothing). Under a filter, keep probing until `limit` rows
            # pass it, else a narrow filter's recall collapses (0.39 measured).
            ann = self.vector_index
            query = (query.minimum_nprobes(ann.nprobes).maximum_nprobes(0) if where
                     else query.nprobes(ann.nprobes)).refine_factor(ann.refine_factor)
        columns = ["_distance", *(["thumbnail"] if thumbnails else []), *(["vector"] if vectors else []),
                   *([] if catalog else CATALOG_COLUMNS)]
        try:
            hits = query.select(columns).limit(limit).to_arrow()
        except Exception as exc:
            if not where:
                raise
            from .errors import InputError

            raise InputError(explain_filter_error(where, exc)) from None
        row_ids = hits.column("_rowid").to_numpy()
        rows = catalog.rows(row_ids) if catalog else hits.select(list(CATALOG_COLUMNS)).to_pylist()
        if rows is None:  # written since the catalog was loaded
            rows = self._catalog(suffix, table, reload=True).rows(row_ids)
        if rows is None:  # written again meanwhile: read these rows from the table itself
            rows = _take_rows(table, row_ids.tolist(), list(CATALOG_COLUMNS))
        scores = [1.0 - float(d) for d in hits.column("_distance").to_pylist()]
        images = hits.column("thumbnail").to_pylist() if thumbnails else [None] * len(scores)
        found = (np.asarray(hits.column("vector").combine_chunks().flatten().to_numpy(zero_copy_only=False),
                            dtype=np.float32).reshape(len(scores), -1) if vectors and scores else [None] * len(scores))
        return [{**row, "score": score, **({"thumbnail": image} if thumbnails else {}),
                 **({"vector": vec} if vectors else {})}
                for row, score, image, vec in zip(rows, scores, images, found)
                if row is not None]  # None: deleted since the search ran

    def _catalog(self, suffix: str, table, reload: bool = False) -> SegmentCatalog:
        """The segments table's catalog at its current version, loaded when the table changed."""
        cached = self._catalogs.get(suffix)
        if reload or cached is None or cached.version != table.version:
            cached = self._catalogs[suffix] = SegmentCatalog.load(table)
        return cached

    # ---- summaries -------------------------------------------------------------------------
    def summary(self) -> list[dict]:
        """Each model: its key (``model``), name, weights, what loads them (``pretrained``; None
        for a checkpoint whose path is not recorded), dimension, videos, segments, ANN index, last
        indexed, and whether it is the default (the marked one, or the only one)."""
        out = []
        models = self.archive_models()
        marked = any(m.is_default for m in models)
        for model in models:
            videos = self.videos_table(model.suffix)
            segments = self.segments_table(model.suffix)
            last = None
            if videos is not None and videos.count_rows():
                last = max(videos.to_lance().to_table(columns=["indexed_at"]).column(0).to_pylist())
            out.append({
                "model": model.key, "name": model.name, "weights": model.weights, "pretrained": model.pretrained,
                "dim": model.dim,
                "videos": videos.count_rows() if videos is not None else 0,
                "segments": segments.count_rows() if segments is not None else 0,
                "ann_index": self.has_vector_index(model.suffix),
                "last_indexed": last.isoformat() if last else None,
                "default": model.is_default if marked else len(models) == 1,
            })
        return out

    def video_rows(self, suffix: str, columns: list[str] | None = None) -> list[dict]:
        table = self.videos_table(suffix)
        if table is None:
            return []
        cols = columns or ["video_id", "path", "duration", "n_segments", "tags", "indexed_at"]
        return table.to_lance().to_table(columns=cols).to_pylist()
