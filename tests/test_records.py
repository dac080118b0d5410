"""Each record is declared once (``pipeline.records``): the segment columns listed from that one
place are what the LanceDB schema holds, what the row builder writes (at indexing and when
re-segmenting), what the catalog reads and what a search hit is read from; and adding a column to
the declaration is the only edit a new column needs."""
import dataclasses

import numpy as np
import pyarrow as pa
import pytest

from vidsift.pipeline import records
from vidsift.pipeline.config import SegmentConfig
from vidsift.pipeline.indexing import resegment_store
from vidsift.pipeline.model_store import ModelRef
from vidsift.pipeline.records import (FAILURE, FRAME, SEGMENT, VIDEO, Column, FrameRows, SegmentRow, VideoRecord,
                                      frame_rows, segment_rows, video_rows)
from vidsift.pipeline.search import SearchHit, search_vector
from vidsift.pipeline.store import VideoStore

DIM = 8
MODEL = ModelRef("m|test", "t")
SEGMENT_COLUMNS = ("segment_id", "video_id", "path", "segment_index", "start", "end", "n_frames", "starts_scene",
                   "model", "tags", "thumbnail", "vector")


def _unit(rng) -> np.ndarray:
    v = rng.normal(size=DIM).astype(np.float32)
    return v / np.linalg.norm(v)


def _record(video_id: str, n_segments: int, rng) -> VideoRecord:
    n_frames = 4 * n_segments
    return VideoRecord(
        video_id=video_id, path=f"/nowhere/{video_id}.mp4", size_bytes=1, mtime_ns=1, duration=2.0 * n_segments,
        fps=25.0, width=160, height=120, n_frames=n_frames, settings="{}", vector=_unit(rng),
        segments=[SegmentRow(start=2.0 * i, end=2.0 * i + 2, n_frames=4, thumbnail=b"seg", vector=_unit(rng),
                             starts_scene=i == 0) for i in range(n_segments)],
        tags=("holiday",),
        frames=FrameRows(np.arange(n_frames, dtype=float) * 0.5, np.stack([_unit(rng) for _ in range(n_frames)]),
                         [f"frame{i}".encode() for i in range(n_frames)]))


def _stored(store: VideoStore) -> list[dict]:
    return sorted(store.model(MODEL).segments().to_arrow().to_pylist(), key=lambda r: r["segment_id"])


def test_the_segment_columns_come_from_one_declaration_and_every_consumer_agrees(tmp_path):
    assert SEGMENT.names == SEGMENT_COLUMNS  # the list a reader of the code sees, in one place
    assert tuple(SEGMENT.schema(DIM).names) == SEGMENT.names
    assert SEGMENT.key == "segment_id" and SEGMENT.schema(DIM).field("vector").type.list_size == DIM

    rng = np.random.default_rng(0)
    built = segment_rows([_record("a", 3, rng)], MODEL.key)
    assert [tuple(row) for row in built] == [SEGMENT.names] * 3  # the row builder: every column, no other

    store = VideoStore(str(tmp_path / "db"))
    store.model(MODEL).write_videos([_record("a", 3, rng), _record("b", 2, rng)], new_ids={"a"})
    written = _stored(store)
    assert len(written) == 5 and all(tuple(row) == SEGMENT.names for row in written)

    report = resegment_store(store, MODEL, SegmentConfig(mode="fixed", window_s=1.0))
    assert report.videos == 2 and report.without_frames == []
    repooled = _stored(store)
    assert len(repooled) == 10 and all(tuple(row) == SEGMENT.names for row in repooled)
    # the same builder as at indexing: ids, the model, tags and a frame's thumbnail are filled the same way
    first = repooled[0]
    assert (first["segment_id"], first["model"], first["tags"]) == ("a:00000", MODEL.key, ["holiday"])
    assert first["thumbnail"] in {f"frame{i}".encode() for i in range(12)}

    # a search hit: read from the catalog columns, every one of its segment fields is one of them
    hit_fields = {f.name for f in dataclasses.fields(SearchHit)} - {"rank", "score", "thumbnail", "confidence",
                                                                    "match"}
    assert hit_fields <= set(SEGMENT.catalog_columns) <= set(SEGMENT.names)
    (found,) = store.model(MODEL).search_segments(np.asarray(first["vector"], np.float32), 1, exact=True)
    assert set(found) == set(SEGMENT.catalog_columns) | {"score"}
    (hit,) = search_vector(store, MODEL.table_suffix, np.asarray(first["vector"], np.float32), k=1, exact=True)
    assert hit == SearchHit.from_row({**found, "thumbnail": first["thumbnail"]}, rank=1)
    assert (hit.video_id, hit.segment_index, hit.path, hit.tags) == ("a", 0, "/nowhere/a.mp4", ["holiday"])


def test_each_other_record_is_declared_once_too():
    rng = np.random.default_rng(1)
    record = _record("a", 2, rng)
    stamp = records.now_utc()
    assert all(tuple(row) == FRAME.names for row in frame_rows([record]))
    assert [tuple(row) for row in video_rows([record], "m", stamp)] == [VIDEO.names]
    failure = records.failure_rows([records.Failure("/x.mp4", "decode", "bad")], "m", stamp)
    assert [tuple(row) for row in failure] == [FAILURE.names]
    for record_kind, rows in ((FRAME, frame_rows([record])), (VIDEO, video_rows([record], "m", stamp)),
                              (FAILURE, failure)):
        assert record_kind.to_arrow(rows, DIM).schema == record_kind.schema(DIM)
    with pytest.raises(KeyError, match="no column colour"):
        SEGMENT.row(segment_id="a:00000", colour="red")  # a value for an undeclared column is a bug
    with pytest.raises(KeyError, match="need segment_id"):
        SEGMENT.row(video_id="a")  # the key is not nullable


def test_adding_a_column_to_the_declaration_is_the_only_edit(tmp_path):
    """Declare one more segment column (what search shows, so the catalog holds it): the schema, the
    rows written at indexing and when re-segmenting, and the search's rows all carry it, with no
    other edit. Done in place on the declaration, restored after."""
    original = SEGMENT.columns
    extra = Column("camera", pa.string(), catalog=True)
    object.__setattr__(SEGMENT, "columns", original[:-1] + (extra, original[-1]))  # before the vector, as a new column would go
    try:
        rng = np.random.default_rng(2)
        store = VideoStore(str(tmp_path / "db"))
        store.model(MODEL).write_videos([_record("a", 2, rng)], new_ids={"a"})
        assert "camera" in store.model(MODEL).segments().schema.names
        assert all(row["camera"] is None for row in _stored(store))  # not set by this version's builder: null
        resegment_store(store, MODEL, SegmentConfig(mode="fixed", window_s=1.0))
        assert all(tuple(row) == SEGMENT.names and "camera" in row for row in _stored(store))
        query = np.asarray(_stored(store)[0]["vector"], np.float32)
        for catalog in (True, False):
            reader = VideoStore(str(tmp_path / "db"), search_catalog=catalog)
            (found,) = reader.model(MODEL).search_segments(query, 1, exact=True)
            assert "camera" in found and found["camera"] is None
    finally:
        object.__setattr__(SEGMENT, "columns", original)
    assert "camera" not in SEGMENT.names


def test_frames_are_grouped_by_video_in_one_place_and_query_scored_pooling_reads_them(tmp_path):
    """``ModelTables.frames_by_video``: each video's stored frames in time order; query-scored
    pooling re-scores a segment from its own frames (softmax(q.f / T)-weighted mean), by hand here."""
    from vidsift.pipeline.search import QS_TEMPERATURE, query_scored

    rng = np.random.default_rng(3)
    store = VideoStore(str(tmp_path / "db"))
    a, b = _record("a", 2, rng), _record("b", 1, rng)
    store.model(MODEL).write_videos([b, a], new_ids={"a", "b"})
    grouped = store.model(MODEL).frames_by_video(["a", "b", "missing"], thumbnails=True)
    assert set(grouped) == {"a", "b"}
    assert np.array_equal(grouped["a"].times, a.frames.times)
    assert np.allclose(grouped["a"].vectors, a.frames.vectors) and grouped["a"].thumbnails == a.frames.thumbnails
    assert store.model(MODEL).frames_by_video(["a"])["a"].thumbnails == []  # not read unless asked

    query = _unit(rng)
    rows = [{"video_id": "a", "start": 2.0, "end": 4.0, "score": 0.0},
            {"video_id": "b", "start": 0.0, "end": 2.0, "score": 0.0},
            {"video_id": "gone", "start": 0.0, "end": 2.0, "score": -2.0}]  # no stored frames: keeps its score
    scored = {r["video_id"]: r["score"] for r in query_scored(store.model(MODEL), query, rows)}
    for video, start, end in ((a, 2.0, 4.0), (b, 0.0, 2.0)):
        inside = video.frames.vectors[(video.frames.times >= start) & (video.frames.times < end)]
        weights = np.exp((inside @ query - (inside @ query).max()) / QS_TEMPERATURE)
        pooled = (weights[:, None] * inside).sum(axis=0)
        assert scored[video.video_id] == pytest.approx(float(pooled @ query / np.linalg.norm(pooled)), abs=1e-5)
    assert scored["gone"] == -2.0
