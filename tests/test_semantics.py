"""The demo model really sees: search, tagging, moments and scene cuts are right on shapes-world
videos rendered with a seed that training never used (all four containers, 10-60 fps).

A small version (CI time) of the acceptance figures; bench/eval_shapes.py and `vidsift eval`
measure them on the full sets.
"""
import pytest

from vidsift.pipeline.shapes.archive import synthesize_archive  # loads PyAV before decord
from vidsift.models.encoder import ClipEncoder
from vidsift.models.spec import resolve_spec
from vidsift.pipeline.config import IndexConfig, SegmentConfig
from vidsift.pipeline.indexing import index_sequential, resegment_store
from vidsift.pipeline.shapes.evaluation import full_report
from vidsift.pipeline.shapes.manifest import load_manifest
from vidsift.pipeline.store import VideoStore

SEED = 99_001  # training used 1001 (train) and 2002 (validation)
SIZES = ((160, 120), (320, 180), (426, 240), (640, 360), (1280, 720))


@pytest.fixture(scope="module")
def tiny():
    return ClipEncoder.from_spec(resolve_spec("shapes-tiny"))


@pytest.fixture(scope="module")
def indexed(tmp_path_factory, tiny):
    root = tmp_path_factory.mktemp("semantic")
    synthesize_archive(root / "single", 24, SEED, n_scenes=1, scene_len=(2.0, 4.0), sizes=SIZES)
    synthesize_archive(root / "multi", 8, SEED + 1, n_scenes=3, scene_len=(2.0, 5.0), sizes=SIZES[:3])
    _, single = load_manifest(root / "single")
    _, multi = load_manifest(root / "multi")
    store = VideoStore(str(root / "db"))
    report = index_sequential(store, tiny, [v["abspath"] for v in single + multi], IndexConfig())
    assert report.failures == []
    return store, single, multi


def test_the_fresh_set_covers_the_spec(indexed):
    _, single, multi = indexed
    videos = single + multi
    assert {v["container"] for v in videos} == {"mp4", "mkv", "webm", "avi"}
    assert min(v["fps"] for v in videos) < 20 and max(v["fps"] for v in videos) > 40


def test_retrieval_classification_and_moments(indexed, tiny):
    store, single, multi = indexed
    one = full_report(store, tiny, single)  # one scene a video: the video is the label
    assert one["videos"] == len(single) and one["retrieval"]["seen"]["n"] >= 20, one
    assert one["retrieval"]["seen"]["R@1"] >= 0.95, one["retrieval"]
    assert one["zero_shot"]["seen"]["top1"]["rate"] >= 0.95, one["zero_shot"]
    heldout = one["zero_shot"]["heldout"]["top1"]
    assert heldout["n"] == 0 or heldout["rate"] >= 0.5, one["zero_shot"]  # aim 0.8 on the full set
    several = full_report(store, tiny, multi)  # several scenes a video: the moment must be found too
    assert several["retrieval"]["seen"]["R@1"] >= 0.95, several["retrieval"]
    assert several["localisation"]["seen"]["R@1,IoU>=0.5"] >= 0.9, several["localisation"]


def test_scene_segments_find_the_cuts_and_the_moments(indexed, tiny):
    store, _, multi = indexed
    scenes = full_report(store, tiny, multi, sampling_interval=1.0)
    assert scenes["boundaries"]["f1"] >= 0.95, scenes["boundaries"]
    assert scenes["localisation"]["seen"]["R@1,IoU>=0.5"] >= 0.9, scenes["localisation"]
    resegment_store(store, tiny.spec, SegmentConfig(mode="fixed", window_s=10.0))
    fixed = full_report(store, tiny, multi, sampling_interval=1.0)
    resegment_store(store, tiny.spec, SegmentConfig())
    assert scenes["localisation"]["all"]["mIoU"] > fixed["localisation"]["all"]["mIoU"]
    assert scenes["retrieval"]["all"]["R@1"] >= fixed["retrieval"]["all"]["R@1"]
