"""Re-indexing is idempotent, changed files are replaced, and failures never damage what is stored."""
import shutil

import numpy as np
import pytest

from vidsift.pipeline.config import IndexConfig, SamplingConfig, SegmentConfig
from vidsift.pipeline.indexing import index_sequential
from vidsift.pipeline.model_store import ModelRef
from vidsift.pipeline.search import search_vector
from vidsift.pipeline.sources import discover
from vidsift.pipeline.store import VideoStore
from tests.conftest import make_video, writer_held_by_another_process

MT = ModelRef("m", "t")
CONFIG = IndexConfig(sampling=SamplingConfig(fps=2.0), segments=SegmentConfig(mode="fixed", window_s=2.0))


def _counts(store, encoder):
    tables = store.model(encoder.spec)
    return tables.videos().count_rows(), tables.segments().count_rows()


def test_reindex_is_idempotent_and_adds_new_files(tmp_path, random_vit, small_archive):
    store = VideoStore(str(tmp_path / "db"))
    report = index_sequential(store, random_vit, discover([str(small_archive)]), CONFIG)
    assert (report.indexed, report.skipped, len(report.failures)) == (3, 0, 0)
    first = _counts(store, random_vit)
    assert first[0] == 3 and first[1] == 3 + 1 + 3  # 5.5 s, 2 s and 4.2 s in 2-second windows

    again = index_sequential(store, random_vit, discover([str(small_archive)]), CONFIG)
    assert (again.indexed, again.skipped) == (0, 3)
    assert _counts(store, random_vit) == first

    folder = tmp_path / "more"
    shutil.copytree(small_archive, folder)
    make_video(folder / "d.mp4", fps=24, durations=(2.0,), pairs=[("orange", "star")])
    grown = index_sequential(store, random_vit, discover([str(folder)]), CONFIG)
    # d.mp4 is new; the copies of a, b, c are the same content as already indexed videos.
    assert (grown.indexed, grown.skipped) == (1, 3)
    assert _counts(store, random_vit) == (4, first[1] + 1)


def test_file_changed_in_place_replaces_its_rows(tmp_path, random_vit):
    path = tmp_path / "v.mp4"
    make_video(path, fps=24, durations=(6.0,))
    store = VideoStore(str(tmp_path / "db"))
    index_sequential(store, random_vit, [str(path)], CONFIG)
    tables = store.model(random_vit.spec)
    old_id = tables.videos().to_arrow().column("video_id")[0].as_py()
    assert _counts(store, random_vit) == (1, 3)

    make_video(path, fps=24, durations=(3.0,), pairs=[("green", "triangle")])  # overwrite, shorter
    report = index_sequential(store, random_vit, [str(path)], CONFIG)
    assert report.indexed == 1
    rows = tables.segments().to_arrow().to_pylist()
    assert _counts(store, random_vit) == (1, 2)
    assert {r["video_id"] for r in rows} != {old_id}
    assert max(r["end"] for r in rows) == pytest.approx(3.0)


def test_a_file_that_breaks_keeps_its_previous_rows_and_records_the_failure(tmp_path, random_vit):
    path = tmp_path / "v.mp4"
    make_video(path, fps=24, durations=(4.0,))
    store = VideoStore(str(tmp_path / "db"))
    index_sequential(store, random_vit, [str(path)], CONFIG)
    before = store.model(random_vit.spec).segments().to_arrow().to_pylist()

    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])  # truncated in place
    report = index_sequential(store, random_vit, [str(path)], CONFIG)
    assert report.indexed == 0 and len(report.failures) == 1
    assert report.failures[0].path == str(path)
    after = store.model(random_vit.spec).segments().to_arrow().to_pylist()
    assert [r["segment_id"] for r in after] == [r["segment_id"] for r in before]
    assert store.failures()[0]["path"] == str(path)

    make_video(path, fps=24, durations=(2.0,))  # repaired: the failure is cleared
    index_sequential(store, random_vit, [str(path)], CONFIG)
    assert store.failures() == []


def test_models_never_share_a_table(tmp_path, random_vit, small_archive):
    from vidsift.models.encoder import ClipEncoder
    from vidsift.models.spec import resolve_spec

    other = ClipEncoder.from_spec(resolve_spec("RN50", "none"))
    store = VideoStore(str(tmp_path / "db"))
    paths = discover([str(small_archive)])
    index_sequential(store, random_vit, paths[:1], CONFIG)
    index_sequential(store, other, paths, CONFIG)
    summary = {m["model"]: m for m in store.summary()}
    assert summary["ViT-B-32|random"]["videos"] == 1
    assert summary["RN50|random"]["videos"] == 3
    assert summary["RN50|random"]["dim"] == 1024 and summary["ViT-B-32|random"]["dim"] == 512
    query = other.encode_texts(["a red circle"])[0]
    hits = search_vector(store, other.spec.table_suffix, query, k=10)
    assert len(hits) == 7


def test_search_per_video_and_filters(tmp_path, random_vit, small_archive):
    store = VideoStore(str(tmp_path / "db"))
    index_sequential(store, random_vit, discover([str(small_archive)]), CONFIG)
    suffix = random_vit.spec.table_suffix
    query = random_vit.encode_texts(["anything"])[0]
    hits = search_vector(store, suffix, query, k=10)
    assert len(hits) == 7
    scores = [h.score for h in hits]
    assert scores == sorted(scores, reverse=True)
    per_video = search_vector(store, suffix, query, k=10, per_video=True)
    assert len(per_video) == 3 and len({h.video_id for h in per_video}) == 3
    # each video's best segment is the first of its segments in the full ranking
    first_seen = {}
    for h in hits:
        first_seen.setdefault(h.video_id, h.segment_index)
    assert {h.video_id: h.segment_index for h in per_video} == first_seen
    only_mkv = search_vector(store, suffix, query, k=10, where="path LIKE '%.mkv'")
    assert [h.path.endswith(".mkv") for h in only_mkv] == [True]
    assert all(h.thumbnail[:2] == b"\xff\xd8" for h in hits)  # JPEG thumbnails
    exact = search_vector(store, suffix, query, k=3, exact=True)
    assert [h.segment_index for h in exact] == [h.segment_index for h in hits[:3]]


@pytest.mark.parametrize("kind", ["ivf_sq", "ivf_pq"])
def test_ann_index_is_built_and_searched(tmp_path, kind):
    """Plumbing of `--build-index`: an ANN index over the segments (IVF_SQ by default), used unless --exact."""
    from vidsift.pipeline.ann_index import VectorIndexConfig

    rng = np.random.default_rng(0)
    store = VideoStore(str(tmp_path / "db"), vector_index=VectorIndexConfig(kind=kind))
    centres = rng.normal(size=(20, 64)).astype(np.float32)
    vectors = centres[rng.integers(0, 20, 600)] + 0.1 * rng.normal(size=(600, 64)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    rows = [{"segment_id": f"v{i}:00000", "video_id": f"v{i}", "path": f"/a/v{i}.mp4", "segment_index": 0,
             "start": 0.0, "end": 10.0, "n_frames": 10, "starts_scene": True, "model": "m", "tags": [],
             "thumbnail": b"", "vector": v.tolist()} for i, v in enumerate(vectors)]
    tables = store.model(MT)
    tables.replace_segments(64, rows, "false")
    assert not tables.has_vector_index()
    assert f"{kind.upper()} index built: 600 segments" in tables.build_vector_index()
    assert tables.has_vector_index()
    indexed = {column for idx in tables.segments().list_indices() for column in idx.columns}
    assert {"vector", "path", "video_id"} <= indexed  # B-trees for the prefilters of filtered search
    query = vectors[17]
    ann = search_vector(store, "t", query, k=5)
    exact = search_vector(store, "t", query, k=5, exact=True)
    assert exact[0].video_id == "v17" and ann[0].video_id == "v17"
    assert len(ann) == 5
    assert len({h.video_id for h in ann} & {h.video_id for h in exact}) >= 4
    # a path prefilter through the B-tree finds what a scan finds
    folder = "path LIKE '/a/v1%'"
    filtered = search_vector(store, "t", query, k=5, where=folder)
    assert filtered and all(h.path.startswith("/a/v1") for h in filtered)
    assert filtered[0].video_id == "v17"
    assert [h.video_id for h in filtered] == [h.video_id for h in search_vector(store, "t", query, k=5, where=folder,
                                                                               exact=True)]


def test_fast_arrow_conversion_equals_the_row_by_row_reference():
    """Writes build the vector column from one numpy block; the rows must be exactly those
    ``pyarrow.Table.from_pylist`` makes from plain lists (the reference path)."""
    import pyarrow as pa

    from vidsift.pipeline.records import FRAME, to_arrow

    rng = np.random.default_rng(0)
    rows = [{"frame_id": f"v:{i}", "video_id": "v", "frame_index": i, "time": i * 0.5, "thumbnail": b"jpg",
             "vector": rng.normal(size=8).astype(np.float32)} for i in range(5)]
    reference = pa.Table.from_pylist([{**r, "vector": r["vector"].tolist()} for r in rows], schema=FRAME.schema(8))
    assert to_arrow(rows, FRAME.schema(8)).equals(reference)
    assert to_arrow([], FRAME.schema(8)).equals(pa.Table.from_pylist([], schema=FRAME.schema(8)))


def _record(video_id: str, path: str, n_segments: int, rng, dim: int = 8):
    from vidsift.pipeline.records import FrameRows, SegmentRow, VideoRecord

    unit = lambda: (v := rng.normal(size=dim).astype(np.float32)) / np.linalg.norm(v)  # noqa: E731
    return VideoRecord(
        video_id=video_id, path=path, size_bytes=1, mtime_ns=1, duration=2.0 * n_segments, fps=25.0,
        width=160, height=120, n_frames=2 * n_segments, settings="{}", vector=unit(),
        segments=[SegmentRow(start=2.0 * i, end=2.0 * i + 2, n_frames=2, thumbnail=b"jpg", vector=unit())
                  for i in range(n_segments)],
        frames=FrameRows(np.arange(2 * n_segments, dtype=float), np.stack([unit() for _ in range(2 * n_segments)]),
                         [b"jpg"] * (2 * n_segments)))


def _rows(store):
    model = store.model(MT)
    tables = (model.videos(), model.segments(), model.frames())
    return [sorted(t.to_arrow().drop_columns(["indexed_at"] if "indexed_at" in t.schema.names else [])
                   .to_pylist(), key=lambda r: str(list(r.values())[0])) for t in tables]


def test_appending_new_videos_stores_what_merging_them_stores(tmp_path):
    """Videos known to be new are appended (constant cost per flush) instead of merged (a scan of
    the whole table per flush); the rows must be the same as the reference merge path gives, and a
    later batch that changes one of them in place still replaces its rows."""
    batches = [[_record(f"v{b}{i}", f"/a/v{b}{i}.mp4", 1 + i % 3, np.random.default_rng(10 * b + i))
                for i in range(4)] for b in range(3)]
    merged, appended = VideoStore(str(tmp_path / "merged")), VideoStore(str(tmp_path / "appended"))
    for batch in batches:
        merged.model(MT).write_videos(batch)
        appended.model(MT).write_videos(batch, new_ids={r.video_id for r in batch})
    assert _rows(appended) == _rows(merged)
    assert [len(rows) for rows in _rows(appended)] == [12, 21, 42]

    changed = _record("v1x", "/a/v11.mp4", 1, np.random.default_rng(99))  # same path, new content
    appended.model(MT).write_videos([changed], new_ids=set())
    merged.model(MT).write_videos([changed])
    assert _rows(appended) == _rows(merged)
    videos, segments, frames = _rows(appended)
    assert "v11" not in {r["video_id"] for r in videos + segments + frames}
    assert [len(rows) for rows in (videos, segments, frames)] == [12, 20, 40]


def test_rows_left_by_a_crashed_run_are_cleared_before_new_videos_are_appended(tmp_path, random_vit, small_archive):
    """A run that stopped between its segment and video commits leaves segment and frame rows of a
    video with no video row. The next run redoes that video; its rows must not be doubled."""
    store = VideoStore(str(tmp_path / "db"))
    paths = discover([str(small_archive)])
    index_sequential(store, random_vit, paths, CONFIG)
    tables = store.model(random_vit.spec)
    reference = _counts(store, random_vit)
    segments = tables.segments()
    crashed = [r for r in segments.to_arrow().to_pylist() if r["path"] == paths[0]]
    tables.videos().delete(f"path = '{paths[0]}'")  # as if the video commit never happened
    assert segments.count_rows(f"path = '{paths[0]}'") == len(crashed) > 0

    report = index_sequential(store, random_vit, paths, CONFIG)
    assert (report.indexed, report.skipped) == (1, 2)
    assert _counts(store, random_vit) == reference
    assert len({r["segment_id"] for r in tables.segments().to_arrow().to_pylist()}) == reference[1]
    frames = tables.frames().to_arrow().to_pylist()
    assert len({r["frame_id"] for r in frames}) == len(frames)


def test_a_second_indexing_job_on_the_same_database_is_refused_clearly(tmp_path, random_vit, small_archive):
    """New videos are appended, so two jobs indexing the same file at once would store it twice:
    while one job holds a local database, another fails at once with a message, and nothing is
    written; once the first is done, the second runs."""
    from vidsift.pipeline.errors import StoreBusyError

    store = VideoStore(str(tmp_path / "db"))
    paths = discover([str(small_archive)])
    with writer_held_by_another_process(tmp_path / "db"):
        with pytest.raises(StoreBusyError, match=r"another vidsift indexing job \(pid \d+"):
            index_sequential(store, random_vit, paths, CONFIG)
        assert store.model(random_vit.spec).videos() is None
    report = index_sequential(store, random_vit, paths, CONFIG)
    assert report.indexed == 3
    assert all(name.endswith(suffix) or name in ("models", "failures")
               for name in store._names() for suffix in [random_vit.spec.table_suffix])  # the lock is no table


# ---- the archive remembers its models ------------------------------------------------------------
def _old_style(db) -> None:
    """Turn ``db``'s models table into what vidsift wrote before it kept weights and a default:
    the columns ``suffix``, ``model``, ``dim`` only (rows kept)."""
    import lancedb

    from vidsift.pipeline.store import MODELS_TABLE

    conn = lancedb.connect(str(db))
    rows = conn.open_table(MODELS_TABLE).to_arrow().select(["suffix", "model", "dim"])
    conn.drop_table(MODELS_TABLE)
    conn.create_table(MODELS_TABLE, data=rows)
    assert conn.open_table(MODELS_TABLE).schema.names == ["suffix", "model", "dim"]


def test_the_archive_records_how_to_load_each_model_and_one_default(tmp_path):
    from vidsift.models.spec import ModelSpec
    from vidsift.pipeline.errors import InputError

    rng = np.random.default_rng(0)
    store = VideoStore(str(tmp_path / "db"))
    tag = ModelSpec("ViT-B-32", "laion2b_s34b_b79k")
    store.model(tag).write_videos([_record("a", "/v/a.mp4", 2, rng)])
    checkpoint = tmp_path / "weights.pt"
    checkpoint.write_bytes(b"fine-tuned weights")
    tuned = ModelSpec("ViT-S-32", str(checkpoint))
    store.remember_spec(tuned)  # what `index --pretrained PATH` tells the store before writing
    store.model(tuned).write_videos([_record("a", "/v/a.mp4", 3, rng, dim=4)])

    reader = VideoStore(str(tmp_path / "db"))  # another process: what is on disk
    first, second = reader.archive_models()
    assert (first.key, first.pretrained, first.is_default) == ("ViT-B-32|laion2b_s34b_b79k", "laion2b_s34b_b79k", True)
    assert (second.name, second.pretrained, second.is_default) == ("ViT-S-32", str(checkpoint), False)
    assert second.weights.startswith("ckpt-") and second.spec().key == tuned.key
    assert reader.default_model() == first
    assert [(m["name"], m["dim"], m["videos"], m["segments"], m["default"]) for m in reader.summary()] == [
        ("ViT-B-32", 8, 1, 2, True), ("ViT-S-32", 4, 1, 3, False)]

    store.set_default(second.suffix)  # one commit: the other process sees the switch at once
    assert reader.default_model().key == tuned.key
    assert [m.is_default for m in reader.archive_models()] == [False, True]
    with pytest.raises(ValueError, match="no model"):
        store.set_default("nope")

    checkpoint.write_bytes(b"other weights under the same name")
    with pytest.raises(InputError, match="gone or changed"):
        reader.default_model().spec()


def test_an_archive_from_before_defaults_opens_and_gets_one_on_its_next_write(tmp_path):
    from vidsift.models.spec import ModelSpec
    from vidsift.pipeline.errors import InputError

    rng = np.random.default_rng(1)
    db = tmp_path / "db"
    store = VideoStore(str(db))
    old = ModelSpec("shapes-tiny", "none")
    store.model(old).write_videos([_record("a", "/v/a.mp4", 2, rng)])
    _old_style(db)

    reader = VideoStore(str(db))
    (model,) = reader.archive_models()
    assert (model.pretrained, model.is_default) == ("none", False)  # read back from the key
    assert reader.default_model() == model  # its only model
    assert model.spec().key == old.key
    assert reader.summary()[0]["default"] is True

    new = ModelSpec("ViT-B-32", "none")  # a second model: the one the archive had stays the default
    VideoStore(str(db)).model(new).write_videos([_record("a", "/v/a.mp4", 1, rng, dim=4)])
    assert [(m.key, m.is_default) for m in reader.archive_models()] == [(old.key, True), (new.key, False)]

    _old_style(db)  # two models and no default: a command must be told which
    with pytest.raises(InputError, match="none is its default.*vidsift models --default"):
        VideoStore(str(db)).default_model()


def test_a_checkpoint_path_an_old_archive_never_recorded_is_asked_for_then_learnt(tmp_path):
    from vidsift.models.spec import ModelSpec
    from vidsift.pipeline.errors import InputError

    db = tmp_path / "db"
    checkpoint = tmp_path / "tuned.safetensors"
    checkpoint.write_bytes(b"weights")
    spec = ModelSpec("ViT-S-32", str(checkpoint))
    VideoStore(str(db)).model(spec).write_videos([_record("a", "/v/a.mp4", 1, np.random.default_rng(2))])
    _old_style(db)
    (model,) = VideoStore(str(db)).archive_models()
    assert model.pretrained is None
    with pytest.raises(InputError, match="--pretrained PATH"):
        model.spec()
    writer = VideoStore(str(db))
    writer.remember_spec(spec)  # the user gave --pretrained PATH to index again
    writer.model(spec).write_videos([_record("b", "/v/b.mp4", 1, np.random.default_rng(3))])
    (model,) = VideoStore(str(db)).archive_models()
    assert model.pretrained == str(checkpoint) and model.spec().key == spec.key
