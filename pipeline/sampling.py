"""Frame sampling plans: which frame indices to decode, with timestamps taken from the video itself."""
from __future__ import annotations

import numpy as np

from .config import SamplingConfig


def plan_frame_indices(frame_starts: np.ndarray, duration: float, sampling: SamplingConfig,
                       keyframes: np.ndarray | None = None) -> np.ndarray:
    """Pick frame indices for a sampling config.

    ``frame_starts`` are the presentation times (seconds) of every frame, as the container reports
    them, so the plan is right for any frame rate (24, 25, 29.97, 60...) and for odd durations.
    ``fps``: one frame at each multiple of 1/fps, the frame on screen at that instant.
    ``frames``: N frames at the centres of N equal slices of the video.
    ``keyframes`` (with ``fps``): at each multiple of 1/fps, the last keyframe at or before it
    instead, so only keyframes are decoded (a keyframe decodes alone); ``keyframes`` is then the
    per-frame keyframe flag. Fewer frames where keyframes are far apart (x264: ~8 s, plus scene
    cuts); the times stored are the keyframes' own.
    Indices are unique and increasing (decoders read forward fastest).
    """
    n = len(frame_starts)
    if n == 0 or duration <= 0:
        return np.zeros(0, dtype=np.int64)
    if sampling.frames is not None:
        times = (np.arange(sampling.frames) + 0.5) * (duration / sampling.frames)
    else:
        times = np.arange(0.0, duration, 1.0 / float(sampling.fps))
    # The frame showing time t is the last one starting at or before t (tolerant to float jitter).
    idx = np.searchsorted(frame_starts, times + 1e-6, side="right") - 1
    idx = np.unique(np.clip(idx, 0, n - 1))
    if getattr(sampling, "keyframes", False):
        if keyframes is None:
            raise ValueError("keyframe sampling needs the video's keyframe flags")
        keys = np.nonzero(np.asarray(keyframes, dtype=bool))[0]
        if len(keys) == 0:
            return np.zeros(0, dtype=np.int64)
        idx = np.unique(keys[np.clip(np.searchsorted(keys, idx, side="right") - 1, 0, len(keys) - 1)])
    return idx.astype(np.int64)
