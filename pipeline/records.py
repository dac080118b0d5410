"""Each stored record (video, segment, frame, failure) declared once: its columns, their Arrow types
and nullability, and the one function that builds its rows.

Why: a segment used to change form four times on its way to LanceDB, and adding one column meant
editing a schema, two hand-written row builders and the catalog's column list. Now the LanceDB schema
(``Record.schema``), the row (``Record.row``, which refuses a value for a column that is not
declared and fills an undeclared-by-caller nullable column with None) and the columns search reads
back (``Record.catalog_columns``, see ``pipeline.catalog``) all come from the declaration below, so
adding a column is one line here (plus where its value comes from). A search hit is read back from a
row in one place too: ``pipeline.search.SearchHit.from_row``.

The in-memory forms a worker builds before writing (``VideoRecord``, ``SegmentRow``, ``FrameRows``,
``Failure``) live here as well, beside the builders that turn them into rows.
"""
from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

PRIMARY_KEY = {"lance-schema:unenforced-primary-key": "true"}


def vector_type(dim: int) -> pa.DataType:
    return pa.list_(pa.float32(), dim)


@dataclass(frozen=True)
class Column:
    """One column of a stored record. ``type``: an Arrow type, or a function of the model's vector
    width (the ``vector`` column). ``catalog``: search shows it, so the in-memory catalog holds it."""

    name: str
    type: pa.DataType | Callable[[int], pa.DataType]
    nullable: bool = True
    key: bool = False
    catalog: bool = False

    def field(self, dim: int | None) -> pa.Field:
        arrow_type = self.type(dim) if callable(self.type) else self.type
        return pa.field(self.name, arrow_type, nullable=self.nullable, metadata=PRIMARY_KEY if self.key else None)


@dataclass(frozen=True)
class Record:
    """A stored record: its table's columns, in order."""

    name: str
    columns: tuple[Column, ...]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    @property
    def key(self) -> str:
        return next(c.name for c in self.columns if c.key)

    @property
    def catalog_columns(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns if c.catalog)

    def schema(self, dim: int | None = None) -> pa.Schema:
        return pa.schema([c.field(dim) for c in self.columns])

    def row(self, **values) -> dict:
        """One row in declaration order. A value for an undeclared column is a bug (``KeyError``);
        a declared column the caller does not give is None (it must be nullable)."""
        unknown = set(values) - set(self.names)
        if unknown:
            raise KeyError(f"{self.name} rows have no column {', '.join(sorted(unknown))}")
        missing = [c.name for c in self.columns if c.name not in values and not c.nullable]
        if missing:
            raise KeyError(f"{self.name} rows need {', '.join(missing)}")
        return {name: values.get(name) for name in self.names}

    def to_arrow(self, rows: list[dict], dim: int | None = None) -> pa.Table:
        return to_arrow(rows, self.schema(dim))


SEGMENT = Record("segment", (
    Column("segment_id", pa.string(), nullable=False, key=True, catalog=True),
    Column("video_id", pa.string(), catalog=True),
    Column("path", pa.string(), catalog=True),
    Column("segment_index", pa.int32(), catalog=True),
    Column("start", pa.float64(), catalog=True),
    Column("end", pa.float64(), catalog=True),
    Column("n_frames", pa.int32(), catalog=True),
    Column("starts_scene", pa.bool_(), catalog=True),
    Column("model", pa.string()),
    Column("tags", pa.list_(pa.string()), catalog=True),
    Column("thumbnail", pa.binary()),
    Column("vector", vector_type),
))

FRAME = Record("frame", (
    Column("frame_id", pa.string(), nullable=False, key=True),
    Column("video_id", pa.string()),
    Column("frame_index", pa.int32()),
    Column("time", pa.float64()),
    Column("thumbnail", pa.binary()),
    Column("vector", vector_type),
))

VIDEO = Record("video", (
    Column("video_id", pa.string(), nullable=False, key=True),
    Column("path", pa.string()),
    Column("size_bytes", pa.int64()),
    Column("mtime_ns", pa.int64()),
    Column("duration", pa.float64()),
    Column("fps", pa.float64()),
    Column("width", pa.int32()),
    Column("height", pa.int32()),
    Column("n_frames", pa.int32()),
    Column("n_segments", pa.int32()),
    Column("model", pa.string()),
    Column("settings", pa.string()),
    Column("tags", pa.list_(pa.string())),
    Column("indexed_at", pa.timestamp("us", tz="UTC")),
    Column("vector", vector_type),
))

FAILURE = Record("failure", (
    Column("failure_id", pa.string(), nullable=False, key=True),
    Column("path", pa.string()),
    Column("model", pa.string()),
    Column("stage", pa.string()),
    Column("reason", pa.string()),
    Column("time", pa.timestamp("us", tz="UTC")),
))


FAILURES_SCHEMA = FAILURE.schema()


def to_arrow(rows: list[dict], schema: pa.Schema) -> pa.Table:
    """Rows -> Arrow, the ``vector`` column (always last) from one numpy block: converting 512
    floats per row through Python lists was most of a write's cost (``bench/stages.py``)."""
    if "vector" not in schema.names:
        return pa.Table.from_pylist(rows, schema=schema)
    field = schema.field("vector")
    dim = field.type.list_size
    vectors = (np.stack([np.asarray(r["vector"], dtype=np.float32) for r in rows]) if rows
               else np.zeros((0, dim), np.float32))
    others = schema.remove(schema.get_field_index("vector"))
    table = pa.Table.from_pylist([{k: v for k, v in r.items() if k != "vector"} for r in rows], schema=others)
    column = pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel(), pa.float32()), dim)
    return table.append_column(field, column)


# ---- what a worker builds before writing -------------------------------------------------------
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

    def vectors_between(self, start: float, end: float) -> np.ndarray:
        """The vectors of the frames sampled in [start, end) (a segment's own frames: its end is the
        next one's start), with 1 µs of slack for times that went through float32."""
        inside = (self.times >= start - 1e-6) & (self.times < end - 1e-6)
        return np.asarray(self.vectors, dtype=np.float32)[inside]


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


# ---- the one builder of each record's rows --------------------------------------------------------
def segment_row(video_id: str, path: str, index: int, piece, model_key: str, tags, thumbnail: bytes) -> dict:
    """The row of a video's ``index``-th segment. ``piece``: anything with ``start``, ``end``,
    ``n_frames``, ``starts_scene`` and ``vector`` (a ``SegmentRow`` at indexing, a pooled
    ``pipeline.segments`` segment when re-segmenting stored frames)."""
    return SEGMENT.row(
        segment_id=f"{video_id}:{index:05d}", video_id=video_id, path=path, segment_index=index,
        start=float(piece.start), end=float(piece.end), n_frames=int(piece.n_frames),
        starts_scene=bool(piece.starts_scene), model=model_key, tags=list(tags or []), thumbnail=thumbnail,
        vector=piece.vector)


def segment_rows(records: list[VideoRecord], model_key: str) -> list[dict]:
    return [segment_row(rec.video_id, rec.path, i, seg, model_key, rec.tags, seg.thumbnail)
            for rec in records for i, seg in enumerate(rec.segments)]


def frame_rows(records: list[VideoRecord]) -> list[dict]:
    return [FRAME.row(frame_id=f"{rec.video_id}:{i:06d}", video_id=rec.video_id, frame_index=i, time=float(t),
                      thumbnail=rec.frames.thumbnails[i], vector=rec.frames.vectors[i])
            for rec in records if rec.frames is not None for i, t in enumerate(rec.frames.times)]


def video_rows(records: list[VideoRecord], model_key: str, stamp: dt.datetime) -> list[dict]:
    return [VIDEO.row(
        video_id=r.video_id, path=r.path, size_bytes=r.size_bytes, mtime_ns=r.mtime_ns, duration=r.duration,
        fps=r.fps, width=r.width, height=r.height, n_frames=r.n_frames, n_segments=len(r.segments),
        model=model_key, settings=r.settings, tags=list(r.tags), indexed_at=stamp, vector=r.vector,
    ) for r in records]


def failure_rows(failures: list[Failure], model_key: str, stamp: dt.datetime) -> list[dict]:
    return [FAILURE.row(failure_id=failure_id(model_key, f.path), path=f.path, model=model_key, stage=f.stage,
                        reason=f.reason, time=stamp) for f in failures]


def failure_id(model_key: str, path: str) -> str:
    return f"{model_key}|{path}"


def now_utc() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)
