"""Typed settings of the indexing pipeline, shared by the CLI, the Ray job and the app."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class SamplingConfig:
    """Which frames to look at: ``fps`` frames per second of video, or ``frames`` spread uniformly."""

    fps: float | None = 1.0
    frames: int | None = None

    def __post_init__(self):
        if self.frames is not None:
            if not isinstance(self.frames, int) or self.frames < 1 or self.frames > 100_000:
                raise ValueError(f"--frames must be an integer between 1 and 100000, got {self.frames!r}")
        elif self.fps is None or not (0 < float(self.fps) <= 240):
            raise ValueError(f"--fps must be > 0 and <= 240 frames per second, got {self.fps!r}")

    def describe(self) -> str:
        return f"{self.frames} frames/video" if self.frames is not None else f"{self.fps:g} fps"


@dataclass(frozen=True)
class SegmentConfig:
    """How frame vectors are pooled over time: fixed windows of ``window_s`` seconds."""

    window_s: float = 10.0

    def __post_init__(self):
        if not (0.1 <= float(self.window_s) <= 86_400):
            raise ValueError(f"--window must be between 0.1 s and one day, got {self.window_s!r}")


@dataclass(frozen=True)
class IndexConfig:
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    segments: SegmentConfig = field(default_factory=SegmentConfig)
    thumbnail_height: int = 108
    decode_chunk: int = 16  # frames decoded at once: bounds memory whatever the video's length

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)
