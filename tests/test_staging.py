"""The cluster job's write path without Ray: workers stage fragments, one writer commits them.

These run the job's own steps in this process (list, plan, process each video, commit), so the
rules the driver applies are checked on their own: same rows as the in-process indexer, re-runs
that read nothing, files changed in place, copies, and what a crash between commits leaves."""
import os
import shutil

import numpy as np
import pytest

from vidsift.pipeline.config import IndexConfig, SamplingConfig, SegmentConfig
from vidsift.pipeline.indexing import JobReport, Unchanged, encode_now, index_sequential, plan_listing, process_video
from vidsift.pipeline.staging import Committer, StagedVideo, StagedWriter, prepare_target
from vidsift.pipeline.storage import list_inputs
from vidsift.pipeline.store import VideoStore
from tests.conftest import make_video

CONFIG = IndexConfig(sampling=SamplingConfig(fps=2.0), segments=SegmentConfig(mode="fixed", window_s=2.0))


def run_staged(store: VideoStore, encoder, inputs, config=CONFIG) -> JobReport:
    """What ``workers.job`` does, with the per-video task called in this process."""
    report = JobReport()
    tables = store.model(encoder.spec)
    known = tables.indexed_files()
    todo = plan_listing(list_inputs([str(p) for p in inputs]), known, report)
    tables.clear_orphans()
    target = prepare_target(tables, encoder.embed_dim)
    writer = StagedWriter(tables, target, report, known)
    for item in todo:
        for message in process_video(item, encode_now(encoder), encoder.preprocess_cfg, config, target):
            if isinstance(message, StagedVideo):
                writer.add(message)
            elif isinstance(message, Unchanged):
                writer.unchanged(message.video_id, message.mtime_ns)
    writer.flush()
    return report


def rows(store: VideoStore, encoder, table="segments") -> dict:
    tables = store.model(encoder.spec)
    opened = {"segments": tables.segments, "videos": tables.videos, "frames": tables.frames}[table]()
    key = {"segments": "segment_id", "videos": "video_id", "frames": "frame_id"}[table]
    return {r[key]: r for r in opened.to_arrow().to_pylist()}


def test_staged_rows_equal_the_in_process_indexer(tmp_path, random_vit, small_archive):
    staged, direct = VideoStore(str(tmp_path / "staged")), VideoStore(str(tmp_path / "direct"))
    report = run_staged(staged, random_vit, [small_archive])
    index_sequential(direct, random_vit, [str(p) for p in sorted(small_archive.rglob("*.*"))], CONFIG)
    assert (report.indexed, report.skipped, report.failures) == (3, 0, [])
    for table in ("segments", "frames", "videos"):
        got, want = rows(staged, random_vit, table), rows(direct, random_vit, table)
        assert got.keys() == want.keys() and got
        for key, row in got.items():
            assert np.allclose(row["vector"], want[key]["vector"], atol=1e-5)
            for column in row:
                if column not in ("vector", "indexed_at", "thumbnail"):
                    assert row[column] == want[key][column], (table, column)


def test_reruns_skip_without_reading_and_a_touched_file_is_hashed_once(tmp_path, random_vit):
    path = tmp_path / "in" / "a.mp4"
    make_video(path, fps=10, durations=(2.0,))
    store = VideoStore(str(tmp_path / "db"))
    assert run_staged(store, random_vit, [path.parent]).indexed == 1
    again = run_staged(store, random_vit, [path.parent])
    assert (again.indexed, again.skipped) == (0, 1)

    os.utime(path, ns=(1_000_000_000, 1_000_000_000))  # same bytes, new mtime
    touched = run_staged(store, random_vit, [path.parent])
    assert (touched.indexed, touched.skipped) == (0, 1)
    assert [v["mtime_ns"] for v in rows(store, random_vit, "videos").values()] == [1_000_000_000]
    report = JobReport()
    assert plan_listing(list_inputs([str(path.parent)]), store.model(random_vit.spec).indexed_files(),
                        report) == []  # the next run does not even read it


def test_a_file_changed_in_place_replaces_its_rows_and_copies_are_indexed_once(tmp_path, random_vit):
    folder = tmp_path / "in"
    make_video(folder / "a.mp4", fps=10, durations=(2.0,))
    shutil.copy(folder / "a.mp4", folder / "copy-of-a.mp4")
    store = VideoStore(str(tmp_path / "db"))
    first = run_staged(store, random_vit, [folder])
    assert (first.indexed, first.skipped) == (1, 1)
    old_id = next(iter(rows(store, random_vit, "videos")))

    make_video(folder / "a.mp4", fps=10, durations=(3.0,), pairs=[("green", "star")])
    os.remove(folder / "copy-of-a.mp4")
    second = run_staged(store, random_vit, [folder])
    assert second.indexed == 1
    videos = rows(store, random_vit, "videos")
    assert len(videos) == 1 and old_id not in videos
    assert {r["video_id"] for r in rows(store, random_vit).values()} == set(videos)
    assert {r["video_id"] for r in rows(store, random_vit, "frames").values()} == set(videos)


def test_fragments_committed_without_their_video_rows_are_cleared_then_redone(tmp_path, random_vit):
    path = tmp_path / "in" / "a.mp4"
    make_video(path, fps=10, durations=(2.0,))
    store = VideoStore(str(tmp_path / "db"))
    tables = store.model(random_vit.spec)
    target = prepare_target(tables, random_vit.embed_dim)
    (item,) = plan_listing(list_inputs([str(path)]), {}, JobReport())
    *_, staged = process_video(item, encode_now(random_vit), random_vit.preprocess_cfg, CONFIG, target)

    class Crash(Exception):
        pass

    def crash(*args, **kwargs):
        raise Crash

    committer = Committer(tables, target)
    committer._write_video_rows = crash  # the job dies between committing fragments and video rows
    with pytest.raises(Crash):
        committer.commit([staged], [])
    assert len(rows(store, random_vit)) > 0 and not rows(store, random_vit, "videos")

    report = run_staged(store, random_vit, [path])
    assert report.indexed == 1
    segments = tables.segments().to_arrow()
    assert segments.num_rows == len(set(segments.column("segment_id").to_pylist())) > 0  # no duplicates
    assert set(segments.column("video_id").to_pylist()) == set(rows(store, random_vit, "videos"))
