"""Typed settings of the indexing pipeline, shared by the CLI, the Ray job and the app."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class SamplingConfig:
    """Which frames to look at: ``fps`` frames per second of video, or ``frames`` spread uniformly."""

    fps: float | None = 1.0
    frames: int | None = None
    keyframes: bool = False  # with ``fps``: the keyframe at or before each sampling time (decodes keyframes only)

    def __post_init__(self):
        if self.frames is not None:
            if not isinstance(self.frames, int) or self.frames < 1 or self.frames > 100_000:
                raise ValueError(f"--frames must be an integer between 1 and 100000, got {self.frames!r}")
        elif self.fps is None or not (0 < float(self.fps) <= 240):
            raise ValueError(f"--fps must be > 0 and <= 240 frames per second, got {self.fps!r}")

    def describe(self) -> str:
        if self.frames is not None:
            return f"{self.frames} frames/video"
        return f"{self.fps:g} fps" + (", keyframes" if self.keyframes else "")


SEGMENT_MODES = ("scenes", "fixed")
DECODERS = ("auto", "cpu", "gpu", "decord")


@dataclass(frozen=True)
class SegmentConfig:
    """How frame vectors are grouped over time before pooling.

    ``scenes`` (default): cut where consecutive frame embeddings change abruptly (a change point
    of their cosine distance), keeping scenes between ``min_scene_s`` and ``max_scene_s`` (longer
    ones are split evenly). ``fixed``: windows of ``window_s`` seconds.
    ``cut_threshold``: cosine distance above which a change is a cut; None adapts it per video:
    an outlier among the video's own frame-to-frame distances, and at least ``cut_ratio`` times
    their median (scale-free, so the same rule works for models whose distances differ in scale).
    """

    mode: str = "scenes"
    window_s: float = 10.0
    min_scene_s: float = 1.0
    max_scene_s: float = 30.0
    cut_threshold: float | None = None
    cut_ratio: float = 4.0
    refine_cuts: bool = True  # decode around each cut to put it on the exact frame (needs the file)

    def __post_init__(self):
        if self.mode not in SEGMENT_MODES:
            raise ValueError(f"--segments must be one of {', '.join(SEGMENT_MODES)}, got {self.mode!r}")
        if not (0.1 <= float(self.window_s) <= 86_400):
            raise ValueError(f"--window must be between 0.1 s and one day, got {self.window_s!r}")
        if not (0 <= float(self.min_scene_s) < float(self.max_scene_s) <= 86_400):
            raise ValueError(f"need 0 <= --min-scene < --max-scene <= 86400 s, got {self.min_scene_s!r}, "
                             f"{self.max_scene_s!r}")
        if self.cut_threshold is not None and not (0 < float(self.cut_threshold) < 2):
            raise ValueError(f"--cut-threshold must be a cosine distance in (0, 2), got {self.cut_threshold!r}")


@dataclass(frozen=True)
class IndexConfig:
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    segments: SegmentConfig = field(default_factory=SegmentConfig)
    thumbnail_height: int = 108
    decode_chunk: int = 16  # frames decoded at once: bounds memory whatever the video's length
    keep_frames: bool = True  # store frame vectors too, so segments can be re-pooled without decoding
    # Decoding (pipeline/decoders.py). ``auto``: NVDEC through torchcodec when CUDA and torchcodec
    # are there (PyAV for a file it cannot open), else decord with decoder-side resize; ``cpu``:
    # PyAV, decoding only what the plan needs; ``gpu``: as auto, but a fallback to the CPU is logged
    # as a warning; ``decord``: decord, whatever the machine.
    decoder: str = "auto"  # one of DECODERS (checked by pipeline.decoders)
    decode_threads: int = 1  # threads per decoder: 1 where one process per core decodes
    decoder_resize: bool = True  # convert sampled frames straight to the size the model and thumbnail need

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)
