"""Scene-aware segmentation, merging of scene pieces in search, and re-segmentation without decoding."""
import numpy as np
import pytest

from vidsift.pipeline.config import IndexConfig, SamplingConfig, SegmentConfig
from vidsift.pipeline.errors import StoreBusyError
from vidsift.pipeline.indexing import index_sequential, resegment_store
from vidsift.pipeline.search import merge_scene_pieces, search_vector
from vidsift.pipeline.segments import build_segments, detect_cuts
from vidsift.pipeline.store import VideoStore
from tests.conftest import make_video, writer_held_by_another_process


def _scenes(lengths, dim=32, noise=0.05, seed=0):
    """Unit frame vectors at 1 fps: one random direction per scene plus small noise."""
    rng = np.random.default_rng(seed)
    vectors = []
    for n in lengths:
        base = rng.normal(size=dim)
        vectors += [base + noise * np.linalg.norm(base) * rng.normal(size=dim) / np.sqrt(dim) for _ in range(n)]
    vectors = np.array(vectors, dtype=np.float32)
    return np.arange(len(vectors), dtype=float), vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def test_cuts_fall_between_the_frames_of_different_scenes():
    times, vectors = _scenes([5, 3, 7])
    cuts = detect_cuts(times, vectors, 15.0, SegmentConfig())
    assert cuts == [4.5, 7.5]  # midway between the last frame of a scene and the first of the next


def test_a_static_video_has_no_cuts_and_min_max_lengths_hold():
    times, vectors = _scenes([20])
    assert detect_cuts(times, vectors, 20.0, SegmentConfig()) == []
    segments = build_segments(times, vectors, 20.0, SegmentConfig(max_scene_s=8.0))
    assert [s.start for s in segments] + [segments[-1].end] == pytest.approx([0, 20 / 3, 40 / 3, 20])
    assert [s.starts_scene for s in segments] == [True, False, False]
    assert sum(s.n_frames for s in segments) == 20
    times, vectors = _scenes([4, 2, 4])  # the middle scene is shorter than min_scene_s=3
    cuts = detect_cuts(times, vectors, 10.0, SegmentConfig(min_scene_s=3.0))
    assert len(cuts) == 1 and cuts[0] in (3.5, 5.5)


def test_a_one_frame_flash_is_not_a_scene():
    times, vectors = _scenes([5, 1], seed=3)
    vectors = np.concatenate([vectors, vectors[:5]])  # A A A A A X A A A A A
    times = np.arange(len(vectors), dtype=float)
    assert detect_cuts(times, vectors, 11.0, SegmentConfig()) == []


def test_pieces_of_one_scene_merge_but_separate_scenes_do_not():
    def row(i, start, end, starts_scene, score, video="v"):
        return {"video_id": video, "segment_index": i, "start": start, "end": end, "n_frames": 2,
                "starts_scene": starts_scene, "score": score}

    rows = [row(1, 10, 20, False, 0.9), row(0, 0, 10, True, 0.8), row(2, 20, 25, True, 0.7),
            row(0, 0, 10, True, 0.6, video="w")]
    merged = merge_scene_pieces(rows)
    assert [(m["video_id"], m["start"], m["end"], m["score"]) for m in merged] == [
        ("v", 0, 20, 0.9), ("v", 20, 25, 0.7), ("w", 0, 10, 0.6)]


def test_scene_segments_follow_the_cuts_of_a_real_video(tmp_path, random_vit):
    path = tmp_path / "three.mp4"
    entry = make_video(path, fps=25, durations=(4.0, 6.0, 3.0), size=(320, 240))
    store = VideoStore(str(tmp_path / "db"))
    config = IndexConfig(sampling=SamplingConfig(fps=2.0))
    index_sequential(store, random_vit, [str(path)], config)
    suffix = random_vit.spec.table_suffix
    rows = sorted(store.model(random_vit.spec).segments().to_arrow().to_pylist(), key=lambda r: r["start"])
    truth = [(s["start"], s["end"]) for s in entry["scenes"]]
    assert len(rows) == 3
    for row, (start, end) in zip(rows, truth):
        # cuts found at 2 fps, then refined by decoding around them: on the exact frame (25 fps)
        assert abs(row["start"] - start) <= 1 / 25 + 1e-6 and abs(row["end"] - end) <= 1 / 25 + 1e-6

    unrefined = IndexConfig(sampling=SamplingConfig(fps=2.0), segments=SegmentConfig(refine_cuts=False))
    other = VideoStore(str(tmp_path / "db2"))
    index_sequential(other, random_vit, [str(path)], unrefined)
    mid = sorted(other.model(random_vit.spec).segments().to_arrow().to_pylist(), key=lambda r: r["start"])
    assert [r["start"] for r in mid] == pytest.approx([0.0, 3.74, 9.74], abs=0.011)  # midway between the sampled frames around each cut

    # Re-pool into fixed windows from the stored frames: the video file is not needed any more.
    # Not while an indexing job holds the database: it rewrites segments too.
    path.unlink()
    with writer_held_by_another_process(tmp_path / "db"):
        with pytest.raises(StoreBusyError):
            resegment_store(store, random_vit.spec, SegmentConfig(mode="fixed", window_s=5.0))
    assert store.model(random_vit.spec).segments().count_rows() == 3
    report = resegment_store(store, random_vit.spec, SegmentConfig(mode="fixed", window_s=5.0))
    assert (report.videos, report.segments) == (1, 3)
    rows = sorted(store.model(random_vit.spec).segments().to_arrow().to_pylist(), key=lambda r: r["start"])
    assert [(r["start"], r["end"]) for r in rows] == [(0, 5), (5, 10), (10, 13)]
    assert store.model(random_vit.spec).video_rows(["n_segments"])[0]["n_segments"] == 3
    hits = search_vector(store, suffix, random_vit.encode_texts(["x"])[0], k=5)
    assert len(hits) == 3 and all(h.thumbnail[:2] == b"\xff\xd8" for h in hits)


def test_no_frames_option_keeps_no_frame_rows(tmp_path, random_vit):
    path = tmp_path / "v.mp4"
    make_video(path, fps=10, durations=(2.0,))
    store = VideoStore(str(tmp_path / "db"))
    index_sequential(store, random_vit, [str(path)], IndexConfig(keep_frames=False))
    assert store.model(random_vit.spec).frame_rows(["anything"]) == []
    report = resegment_store(store, random_vit.spec, SegmentConfig(mode="fixed"))
    assert report.videos == 0 and report.without_frames == [str(path)]
