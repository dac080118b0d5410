"""Sampling plans, timestamps and segment bounds for common frame rates and odd durations."""
import math

import numpy as np
import pytest

from vidsift.pipeline.config import IndexConfig, SamplingConfig, SegmentConfig
from vidsift.pipeline.decode import decode_video, open_video, probe
from vidsift.pipeline.frames import FrameTransform
from vidsift.pipeline.sampling import plan_frame_indices
from vidsift.pipeline.segments import build_segments, fixed_windows
from tests.conftest import make_video

TRANSFORM = FrameTransform(size=(32, 32), resize_mode="squash")


@pytest.mark.parametrize("fps,durations", [(10, (2.3,)), (24, (2.0, 3.1)), (25, (5.3,)), (30, (2.2, 2.0)),
                                           (60, (3.45,))])
def test_timestamps_and_segments_follow_the_video(tmp_path, fps, durations):
    path = str(tmp_path / "v.mp4")
    entry = make_video(path, fps=fps, durations=durations)
    duration = entry["duration"]
    info, starts = probe(open_video(path), path)
    assert info.duration == pytest.approx(duration, abs=1e-3)
    assert info.fps == pytest.approx(fps, rel=1e-3)
    assert len(starts) == round(duration * fps)

    config = IndexConfig(sampling=SamplingConfig(fps=1.0), segments=SegmentConfig(mode="fixed", window_s=2.0))
    info, chunks = decode_video(path, TRANSFORM, config)
    times = np.concatenate([c.times for c in chunks])
    # One frame per second of video, the one on screen at t = 0, 1, 2, ...: within one frame.
    assert len(times) == math.ceil(duration - 1e-9)
    expected = np.arange(len(times), dtype=float)
    assert np.all(times <= expected + 1e-6) and np.all(expected - times < 1.0 / fps + 1e-6)

    windows = fixed_windows(times, info.duration, config.segments)
    assert windows[0].start == 0.0
    assert windows[-1].end == pytest.approx(duration, abs=1e-3)  # last segment ends with the video
    for window, following in zip(windows, windows[1:]):
        assert window.end == pytest.approx(window.start + 2.0) and following.start == pytest.approx(window.end)
    for w in windows:
        assert np.all((times[w.first_frame:w.last_frame] >= w.start - 1e-6)
                      & (times[w.first_frame:w.last_frame] < w.end + 1e-6))
    assert sum(w.last_frame - w.first_frame for w in windows) == len(times)


def test_uniform_frame_count_plan(tmp_path):
    path = str(tmp_path / "v.mkv")
    entry = make_video(path, fps=25, durations=(4.6,), container="mkv")
    config = IndexConfig(sampling=SamplingConfig(fps=None, frames=8))
    info, chunks = decode_video(path, TRANSFORM, config)
    times = np.concatenate([c.times for c in chunks])
    assert len(times) == 8
    centres = (np.arange(8) + 0.5) * entry["duration"] / 8
    assert np.all(np.abs(times - centres) <= 1 / 25 + 1e-6)


def test_plan_handles_ntsc_rates_and_more_frames_than_exist():
    fps = 30000 / 1001
    starts = np.arange(300) / fps
    duration = 300 / fps
    idx = plan_frame_indices(starts, duration, SamplingConfig(fps=1.0))
    assert len(idx) == math.ceil(duration)
    assert np.all(np.diff(idx) > 0)
    assert np.all(starts[idx] <= np.arange(len(idx)) + 1e-6)
    many = plan_frame_indices(starts, duration, SamplingConfig(fps=None, frames=1000))
    assert len(many) == 300 and np.all(np.diff(many) > 0)  # clamped and unique


@pytest.mark.parametrize("kwargs", [{"fps": 0}, {"fps": -1}, {"fps": 1e6}, {"fps": None, "frames": 0}])
def test_absurd_sampling_is_refused(kwargs):
    with pytest.raises(ValueError):
        SamplingConfig(**kwargs)


def test_segment_vectors_are_renormalised_means():
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(7, 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    times = np.arange(7, dtype=float)
    segments = build_segments(times, vectors, 7.0, SegmentConfig(mode="fixed", window_s=3.0))
    assert [(s.start, s.end, s.n_frames) for s in segments] == [(0, 3, 3), (3, 6, 3), (6, 7, 1)]
    expected = vectors[:3].mean(0)
    assert np.allclose(segments[0].vector, expected / np.linalg.norm(expected), atol=1e-6)
    assert np.isclose(np.linalg.norm(segments[1].vector), 1.0)
