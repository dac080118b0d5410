"""Frame sampling plans: which frame indices to decode, with timestamps taken from the video itself."""
from __future__ import annotations

import numpy as np

from .config import SamplingConfig


def plan_frame_indices(frame_starts: np.ndarray, duration: float, sampling: SamplingConfig) -> np.ndarray:
    """Pick frame indices for a sampling config.

    ``frame_starts`` are the presentation times (seconds) of every frame, as the container reports
    them, so the plan is right for any frame rate (24, 25, 29.97, 60...) and for odd durations.
    ``fps``: one frame at each multiple of 1/fps, the frame on screen at that instant.
    ``frames``: N frames at the centres of N equal slices of the video.
    Indices are unique and increasing (decord decodes forward fastest).
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
    return np.unique(np.clip(idx, 0, n - 1))
