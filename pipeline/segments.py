"""Temporal pooling: frame vectors -> segment vectors and one whole-video vector."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .config import SegmentConfig


@dataclass
class Segment:
    index: int
    start: float
    end: float
    first_frame: int   # slice into the video's sampled frames
    last_frame: int    # exclusive
    vector: np.ndarray

    @property
    def n_frames(self) -> int:
        return self.last_frame - self.first_frame

    @property
    def middle_frame(self) -> int:
        return self.first_frame + (self.n_frames - 1) // 2


def l2_normalise(vectors: np.ndarray, axis: int = -1) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=axis, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


def mean_pool(frame_vectors: np.ndarray) -> np.ndarray:
    """Average of L2-normalised frame vectors, renormalised (CLIP4Clip's mean pooling)."""
    return l2_normalise(l2_normalise(frame_vectors.astype(np.float32)).mean(axis=0)).astype(np.float32)


def fixed_windows(times: np.ndarray, duration: float, config: SegmentConfig) -> list[tuple[float, float, int, int]]:
    """Windows [k*w, (k+1)*w) clipped to the video's duration; each keeps the sampled frames whose
    time falls inside. Windows without a sampled frame are left out (nothing to pool)."""
    if len(times) == 0:
        return []
    window = float(config.window_s)
    bins = np.floor(times / window + 1e-9).astype(np.int64)
    out = []
    for k in np.unique(bins):
        members = np.nonzero(bins == k)[0]
        start = float(k * window)
        end = float(min((k + 1) * window, duration))
        out.append((start, max(end, start), int(members[0]), int(members[-1]) + 1))
    return out


def build_segments(times: np.ndarray, frame_vectors: np.ndarray, duration: float,
                   config: SegmentConfig) -> list[Segment]:
    return [
        Segment(index=i, start=s, end=e, first_frame=a, last_frame=b, vector=mean_pool(frame_vectors[a:b]))
        for i, (s, e, a, b) in enumerate(fixed_windows(times, duration, config))
    ]
