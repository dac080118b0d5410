"""Declarative specs of shapes-world videos, checked against the spec's bounds (docs/shapes-world.md).

A `VideoSpec` says everything about a video (scenes, size, frame rate, container, background,
noise) so that drawing, encoding and the manifest all derive from one value, and so that the same
spec and seed always give the same frames. The bounds live here, once, for the specs to enforce
and for the random sampler (``archive``) to sample within.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from fractions import Fraction

from .world import BACKGROUNDS, COLOURS, SHAPES, label

CONTAINERS: dict[str, tuple[str, str]] = {
    # container -> (libavformat muxer, encoder)
    "mp4": ("mp4", "libx264"),
    "mkv": ("matroska", "libx264"),
    "webm": ("webm", "libvpx-vp9"),
    "avi": ("avi", "mpeg4"),
}
SIZE_FRAC_RANGE = (0.20, 0.45)
MAX_SPEED = 0.5  # frame widths per second
MAX_SPIN = 1.5  # radians per second
MAX_NOISE = 8.0
SCENE_LEN_RANGE = (2.0, 15.0)
FPS_RANGE = (10.0, 60.0)
WIDTH_RANGE = (160, 1280)
HEIGHT_RANGE = (120, 720)
ASPECT_RANGE = (4 / 3, 16 / 9)
_ASPECT_TOL = 0.01  # 854x480 and 426x240 are "16:9" but a hair wider


def require(cond: bool, msg: str) -> None:
    """Raise ValueError(msg) unless cond: a spec outside the bounds must never be rendered."""
    if not cond:
        raise ValueError(msg)


@dataclass(frozen=True)
class SceneSpec:
    """One scene: a single object on screen for `duration_s` seconds.

    x0, y0: start centre as fractions of frame width / height (clamped into the feasible area).
    vx, vy: velocity in frame widths per second (both axes use the width, so |v| is a speed).
    rotation0: start angle in radians; spin: angular velocity in rad/s.
    """

    colour: str
    shape: str
    duration_s: float
    size_frac: float = 0.3
    x0: float = 0.5
    y0: float = 0.5
    vx: float = 0.0
    vy: float = 0.0
    rotation0: float = 0.0
    spin: float = 0.0

    def __post_init__(self) -> None:
        require(self.colour in COLOURS, f"unknown colour {self.colour!r}")
        require(self.shape in SHAPES, f"unknown shape {self.shape!r}")
        lo, hi = SCENE_LEN_RANGE
        require(lo - 1e-6 <= self.duration_s <= hi + 1e-6, f"scene duration {self.duration_s} not in {lo}..{hi} s")
        lo, hi = SIZE_FRAC_RANGE
        require(lo - 1e-9 <= self.size_frac <= hi + 1e-9, f"size_frac {self.size_frac} not in {lo}..{hi}")
        require(0.0 <= self.x0 <= 1.0 and 0.0 <= self.y0 <= 1.0, "x0/y0 must be fractions in 0..1")
        require(math.hypot(self.vx, self.vy) <= MAX_SPEED + 1e-9, f"speed above {MAX_SPEED} widths/s")
        require(abs(self.spin) <= MAX_SPIN + 1e-9, f"|spin| above {MAX_SPIN} rad/s")

    @property
    def label(self) -> str:
        return label(self.colour, self.shape)


@dataclass(frozen=True)
class VideoSpec:
    """A whole video: 1-4 scenes joined by hard cuts, one background, one container.

    fps may be an int, a float or a Fraction; 29.97/23.976/59.94 are read as the exact NTSC
    rates (30000/1001 etc.) so timestamps stay on the frame grid.
    """

    scenes: list[SceneSpec]
    width: int = 320
    height: int = 240
    fps: float | Fraction = 24
    container: str = "mp4"
    background: str = "black"
    noise_std: float = 0.0

    def __post_init__(self) -> None:
        require(1 <= len(self.scenes) <= 4, "a video has 1 to 4 scenes")
        require(self.container in CONTAINERS, f"container must be one of {list(CONTAINERS)}")
        require(self.background in BACKGROUNDS, f"background must be one of {list(BACKGROUNDS)}")
        require(0.0 <= self.noise_std <= MAX_NOISE, f"noise_std must be in 0..{MAX_NOISE}")
        require(WIDTH_RANGE[0] <= self.width <= WIDTH_RANGE[1], f"width {self.width} out of range")
        require(HEIGHT_RANGE[0] <= self.height <= HEIGHT_RANGE[1], f"height {self.height} out of range")
        aspect = self.width / self.height
        require(
            ASPECT_RANGE[0] * (1 - _ASPECT_TOL) <= aspect <= ASPECT_RANGE[1] * (1 + _ASPECT_TOL),
            f"aspect {self.width}x{self.height} not within 4:3..16:9",
        )
        fps = float(fps_fraction(self.fps))
        require(FPS_RANGE[0] <= fps <= FPS_RANGE[1], f"fps {fps} not in {FPS_RANGE}")
        for a, b in zip(self.scenes, self.scenes[1:]):
            require((a.colour, a.shape) != (b.colour, b.shape), "consecutive scenes must differ in label")


def fps_fraction(fps: float | int | Fraction) -> Fraction:
    """Exact frame rate: NTSC approximations (23.976, 29.97, 59.94) map to n*1000/1001."""
    if isinstance(fps, Fraction):
        return fps
    for base in (24, 30, 60):
        ntsc = Fraction(base * 1000, 1001)
        if abs(float(fps) - float(ntsc)) < 5e-3:
            return ntsc
    return Fraction(fps).limit_denominator(1000)


def scene_frame_starts(video: VideoSpec) -> list[int]:
    """Index of the first frame of every scene, plus the total frame count at the end.

    Scene k starts at round(cumulative start * fps), so cuts always fall on the frame grid and
    the manifest times (index / fps) match what a decoder reports.
    """
    fps = fps_fraction(video.fps)
    starts, t = [], 0.0
    for scene in video.scenes:
        starts.append(round(t * fps))
        t += scene.duration_s
    starts.append(round(t * fps))
    return starts



def video_spec_to_dict(video: VideoSpec) -> dict:
    """JSON-safe form of a VideoSpec (fps kept exact as [num, den])."""
    d = dataclasses.asdict(video)
    fps = fps_fraction(video.fps)
    d["fps"] = [fps.numerator, fps.denominator]
    return d


def video_spec_from_dict(d: dict) -> VideoSpec:
    """Inverse of video_spec_to_dict."""
    d = dict(d)
    d["scenes"] = [SceneSpec(**s) for s in d["scenes"]]
    fps = d["fps"]
    d["fps"] = Fraction(*fps) if isinstance(fps, (list, tuple)) else fps
    return VideoSpec(**d)

