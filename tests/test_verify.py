"""`vidsift verify [--repair]`: each kind of damage is found, repaired without losing what cannot
be redone, and a clean archive says so (exit 0; problems: exit 3)."""
from __future__ import annotations

import json

import lance
import numpy as np
import pytest

from vidsift.pipeline.config import IndexConfig, SamplingConfig, SegmentConfig
from vidsift.pipeline.indexing import index_sequential
from vidsift.pipeline.model_store import ModelRef
from vidsift.pipeline.records import FRAME, SEGMENT, Failure, SegmentRow, VideoRecord, to_arrow
from vidsift.pipeline.store import VideoStore
from vidsift.pipeline.verify import verify_store
from tests.conftest import make_video, run_cli

CONFIG = IndexConfig(sampling=SamplingConfig(fps=2.0), segments=SegmentConfig(mode="fixed", window_s=2.0))


@pytest.fixture(scope="module")
def tiny():
    from vidsift.models.encoder import ClipEncoder
    from vidsift.models.spec import resolve_spec

    return ClipEncoder.from_spec(resolve_spec("shapes-tiny", None, "cpu", "fp32"))


@pytest.fixture
def archive(tmp_path, tiny):
    """Three indexed videos (frames kept), their files on disk."""
    folder = tmp_path / "in"
    for i, pair in enumerate([("red", "circle"), ("blue", "square"), ("green", "star")]):
        make_video(folder / f"v{i}.mp4", fps=10, durations=(2.0, 2.0), pairs=[pair, ("white", "triangle")])
    store = VideoStore(str(tmp_path / "db"))
    report = index_sequential(store, tiny, [str(p) for p in sorted(folder.iterdir())], CONFIG)
    assert report.indexed == 3
    return store, folder, store.model(tiny.spec)


def _rows(tables, name):
    return getattr(tables, name)().to_arrow().to_pylist()


def _kinds(report):
    return sorted(p.kind for p in report.problems)


def test_a_clean_archive_is_clean(archive):
    store, _, _ = archive
    report = verify_store(store)
    assert report.problems == [] and not report.needs_attention
    assert report.models[0]["videos"] == 3 and report.models[0]["segments"] == 6


def test_orphans_and_exact_copies_are_found_and_deleted(archive):
    store, _, tables = archive
    segments = tables.segments()
    frames = tables.frames()
    dim = segments.schema.field("vector").type.list_size
    before = {r["segment_id"] for r in _rows(tables, "segments")}
    copy = _rows(tables, "segments")[0]
    orphan = {**copy, "segment_id": "ghost:00000", "video_id": "ghost"}
    segments.add(to_arrow([copy, orphan], SEGMENT.schema(dim)))  # a row stored twice, and an orphan
    frame = {**_rows(tables, "frames")[0], "frame_id": "ghost:000000", "video_id": "ghost"}
    frames.add(to_arrow([frame], FRAME.schema(dim)))

    found = verify_store(store)
    assert _kinds(found) == ["duplicate_rows", "orphan_rows", "orphan_rows"] and found.needs_attention
    repaired = verify_store(store, repair=True)
    assert not repaired.needs_attention and all(p.repaired for p in repaired.problems)
    after = [r["segment_id"] for r in _rows(tables, "segments")]
    assert sorted(after) == sorted(before)  # the original kept, the copy and the orphan gone
    assert verify_store(store).problems == []


def test_an_incomplete_video_is_requeued_and_the_next_index_redoes_it(archive, tiny):
    store, folder, tables = archive
    want = {r["segment_id"]: r for r in _rows(tables, "segments")}
    victim = _rows(tables, "videos")[0]
    tables.segments().delete(f"segment_id = '{victim['video_id']}:00001'")  # half a video
    other = _rows(tables, "videos")[1]
    key = f"{other['video_id']}:00000"
    (row,) = [r for r in _rows(tables, "segments") if r["segment_id"] == key]
    tables.segments().delete(f"segment_id = '{key}'")
    lance.write_dataset(to_arrow([{**row, "vector": [float("nan")] * len(row["vector"])}],  # LanceDB refuses NaN:
                                 SEGMENT.schema(len(row["vector"]))),  # a worker's fragment would not
                        tables.segments().to_lance().uri, mode="append")
    third = _rows(tables, "videos")[2]
    key = f"{third['video_id']}:00000"
    (row,) = [r for r in _rows(tables, "segments") if r["segment_id"] == key]
    tables.segments().delete(f"segment_id = '{key}'")
    tables.segments().add(to_arrow([{**row, "vector": [2 * x for x in row["vector"]]}],
                                              SEGMENT.schema(len(row["vector"]))))

    found = verify_store(store)
    assert _kinds(found) == ["bad_vectors", "bad_vectors", "missing_segments"]
    assert {p.path for p in found.problems} == {victim["path"], other["path"], third["path"]}
    assert sorted(p.detail.split(": ", 1)[1] for p in found.problems if p.kind == "bad_vectors") == [
        "1 segments vectors are length 2.0000, not 1", "1 segments vectors are not finite"]
    repaired = verify_store(store, repair=True)
    assert all(p.repaired.startswith("re-queued") for p in repaired.problems) and not repaired.needs_attention
    assert _rows(tables, "videos") == []  # out of the archive until re-indexed
    assert verify_store(store).problems == []

    again = index_sequential(store, tiny, [str(p) for p in sorted(folder.iterdir())], CONFIG)
    assert (again.indexed, again.skipped) == (3, 0)
    got = {r["segment_id"]: r for r in _rows(tables, "segments")}
    assert got.keys() == want.keys()
    for key, row in got.items():
        assert np.abs(np.asarray(row["vector"]) - np.asarray(want[key]["vector"])).max() < 1e-4
    assert verify_store(store).problems == []


def test_a_video_whose_file_is_gone_is_reported_but_never_deleted(archive):
    store, folder, tables = archive
    victim = _rows(tables, "videos")[0]
    tables.frames().delete(f"frame_id = '{victim['video_id']}:000000'")
    (folder / victim["path"].rsplit("/", 1)[1]).unlink()
    repaired = verify_store(store, repair=True)
    assert _kinds(repaired) == ["missing_frames"]
    assert repaired.problems[0].repaired.startswith("not repaired") and repaired.needs_attention
    assert victim["video_id"] in {r["video_id"] for r in _rows(tables, "videos")}


def test_stale_failures_and_an_ann_index_gap_are_reported_and_repaired(tmp_path):
    store = VideoStore(str(tmp_path / "db"))
    rng = np.random.default_rng(1)

    def records(start, count):
        out = []
        for i in range(start, start + count):
            vectors = rng.normal(size=(4, 16)).astype(np.float32)
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
            out.append(VideoRecord(video_id=f"v{i:04d}", path=f"/nowhere/v{i:04d}.mp4", size_bytes=1, mtime_ns=1,
                                   duration=8.0, fps=1.0, width=8, height=8, n_frames=4,
                                   settings=json.dumps({"keep_frames": False}), vector=vectors[0],
                                   segments=[SegmentRow(2.0 * k, 2.0 * k + 2, 1, b"", vectors[k]) for k in range(4)]))
        return out
    first = records(0, 80)
    tables = store.model(ModelRef("m", "m"))
    tables.write_videos(first, new_ids={r.video_id for r in first})
    assert tables.build_vector_index().startswith("IVF_SQ index built")
    more = records(80, 5)
    tables.write_videos(more, new_ids={r.video_id for r in more})
    tables.record_failures([Failure("/nowhere/gone.mp4", "decode", "x"),
                            Failure("/nowhere/v0003.mp4", "decode", "indexed since")])

    found = verify_store(store)
    assert _kinds(found) == ["ann_index_gap", "stale_failure", "stale_failure"] and found.needs_attention
    assert "20 of 340 segments are not in the ANN index" in found.problems[0].detail
    assert not verify_store(store, repair=True).needs_attention
    assert verify_store(store).problems == [] and store.failures() == []


def test_the_cli_exits_3_with_problems_and_0_once_repaired(archive):
    store, _, tables = archive
    copy = _rows(tables, "segments")[0]
    tables.segments().add(to_arrow([{**copy, "segment_id": "ghost:00000", "video_id": "ghost"}],
                                              SEGMENT.schema(len(copy["vector"]))))
    found = run_cli("verify", "--db", store.uri, "--json")
    assert found.returncode == 3, found.stderr
    payload = json.loads(found.stdout)
    assert (payload["found"], payload["clean"], payload["problems"][0]["kind"]) == (1, False, "orphan_rows")
    assert payload["exit_status"] == 3  # the JSON says what the shell saw (app.exit_codes)
    human = run_cli("verify", "--db", store.uri, "--repair")
    assert human.returncode == 0 and "1 problems found and repaired" in human.stdout
    clean = run_cli("verify", "--db", store.uri)
    assert clean.returncode == 0 and clean.stdout.strip().endswith(": clean")
    missing = run_cli("verify", "--db", store.uri + "-nowhere")
    assert missing.returncode == 2 and missing.stderr.strip().endswith("no database here")

