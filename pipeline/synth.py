"""Renderer for the shapes world v1 (spec: docs/shapes-world.md).

Real CLIP weights are not available offline, so vidsift proves search, tagging and zero-shot
classification on synthetic videos whose ground truth is known exactly. This module turns a
declarative `VideoSpec` into a real encoded video file plus a manifest entry saying which label
is on screen when. Frames are drawn with numpy only (vectorised masks) and encoded with PyAV in
the four containers the spec requires, so the decode path exercised in tests is the real one.

Geometry conventions: pixel (row i, col j) has its centre at (x=j+0.5, y=i+0.5); y grows down.
"Size" is the diameter of the object's bounding circle (circumcircle for polygons) as a fraction
of the frame height. The whole bounding circle is kept at least one pixel inside the frame, so
the object is fully visible at every rotation.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import subprocess
import sys
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from statistics import NormalDist
from typing import Sequence

# PyAV is imported at module level on purpose: decord loads its own, older libvpx with
# RTLD_GLOBAL, and if that happens before PyAV's libraries are loaded, PyAV's VP9 encoder binds
# to the wrong libvpx and refuses to open. Importing av first avoids that; render_video also
# detects the clash and falls back to a fresh interpreter (see _vp9_encoder_usable).
import av
import numpy as np

from vidsift.pipeline.shapes_world import (
    BACKGROUNDS,
    COLOURS,
    HELDOUT,
    SHAPES,
    SPEC_VERSION,
    all_pairs,
    label,
)

# --- spec bounds ---------------------------------------------------------------------------

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
_EDGE_MARGIN_PX = 1.0  # bounding circle stays this far from the frame edge
STAR_INNER_RATIO = 0.4

#: Common frame sizes with sampling weights, biased toward small sizes so archives render fast.
DEFAULT_SIZES: tuple[tuple[int, int, float], ...] = (
    (160, 120, 4.0),
    (214, 120, 3.0),  # smallest 16:9 with height >= 120 (192x108 is below the spec)
    (320, 240, 4.0),
    (320, 180, 4.0),
    (426, 240, 2.0),
    (480, 360, 1.5),
    (640, 360, 1.0),
    (640, 480, 0.8),
    (854, 480, 0.4),
    (960, 540, 0.2),
    (1280, 720, 0.1),
)

#: Frame rates with sampling weights; NTSC 30000/1001 is included because real archives have it.
DEFAULT_FPS: tuple[tuple[float | Fraction, float], ...] = (
    (10, 1.0),
    (12, 1.0),
    (15, 1.0),
    (24, 1.0),
    (25, 1.0),
    (Fraction(30000, 1001), 0.5),
    (30, 1.0),
    (50, 0.5),
    (60, 0.5),
)

# --- specs ---------------------------------------------------------------------------------


def _require(cond: bool, msg: str) -> None:
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
        _require(self.colour in COLOURS, f"unknown colour {self.colour!r}")
        _require(self.shape in SHAPES, f"unknown shape {self.shape!r}")
        lo, hi = SCENE_LEN_RANGE
        _require(lo - 1e-6 <= self.duration_s <= hi + 1e-6, f"scene duration {self.duration_s} not in {lo}..{hi} s")
        lo, hi = SIZE_FRAC_RANGE
        _require(lo - 1e-9 <= self.size_frac <= hi + 1e-9, f"size_frac {self.size_frac} not in {lo}..{hi}")
        _require(0.0 <= self.x0 <= 1.0 and 0.0 <= self.y0 <= 1.0, "x0/y0 must be fractions in 0..1")
        _require(math.hypot(self.vx, self.vy) <= MAX_SPEED + 1e-9, f"speed above {MAX_SPEED} widths/s")
        _require(abs(self.spin) <= MAX_SPIN + 1e-9, f"|spin| above {MAX_SPIN} rad/s")

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
        _require(1 <= len(self.scenes) <= 4, "a video has 1 to 4 scenes")
        _require(self.container in CONTAINERS, f"container must be one of {list(CONTAINERS)}")
        _require(self.background in BACKGROUNDS, f"background must be one of {list(BACKGROUNDS)}")
        _require(0.0 <= self.noise_std <= MAX_NOISE, f"noise_std must be in 0..{MAX_NOISE}")
        _require(WIDTH_RANGE[0] <= self.width <= WIDTH_RANGE[1], f"width {self.width} out of range")
        _require(HEIGHT_RANGE[0] <= self.height <= HEIGHT_RANGE[1], f"height {self.height} out of range")
        aspect = self.width / self.height
        _require(
            ASPECT_RANGE[0] * (1 - _ASPECT_TOL) <= aspect <= ASPECT_RANGE[1] * (1 + _ASPECT_TOL),
            f"aspect {self.width}x{self.height} not within 4:3..16:9",
        )
        fps = float(fps_fraction(self.fps))
        _require(FPS_RANGE[0] <= fps <= FPS_RANGE[1], f"fps {fps} not in {FPS_RANGE}")
        for a, b in zip(self.scenes, self.scenes[1:]):
            _require((a.colour, a.shape) != (b.colour, b.shape), "consecutive scenes must differ in label")


def fps_fraction(fps: float | int | Fraction) -> Fraction:
    """Exact frame rate: NTSC approximations (23.976, 29.97, 59.94) map to n*1000/1001."""
    if isinstance(fps, Fraction):
        return fps
    for base in (24, 30, 60):
        ntsc = Fraction(base * 1000, 1001)
        if abs(float(fps) - float(ntsc)) < 5e-3:
            return ntsc
    return Fraction(fps).limit_denominator(1000)


# --- timing --------------------------------------------------------------------------------


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


def _seconds(frame_index: int, fps: Fraction) -> float:
    return round(float(frame_index / fps), 6)


# --- geometry ------------------------------------------------------------------------------


def _radius_px(video: VideoSpec, scene: SceneSpec) -> float:
    """Bounding-circle radius in pixels."""
    return scene.size_frac * video.height / 2.0


def _centre_bounds(extent: float, radius: float) -> tuple[float, float]:
    """Feasible range of the centre along one axis so the bounding circle stays inside."""
    lo = radius + _EDGE_MARGIN_PX
    hi = extent - radius - _EDGE_MARGIN_PX
    return (lo, max(lo, hi))


def _bounce(start: float, velocity: float, t: float, lo: float, hi: float) -> float:
    """Position at time t of a point moving at constant speed, reflecting off lo and hi.

    Closed form (triangle wave) rather than stepping, so any t can be rendered directly.
    """
    span = hi - lo
    if span <= 0:
        return lo
    s = (min(max(start, lo), hi) - lo + velocity * t) % (2 * span)
    return lo + (s if s <= span else 2 * span - s)


def object_pose(video: VideoSpec, scene: SceneSpec, t: float) -> tuple[float, float, float]:
    """Centre (x, y) in pixels and rotation angle (radians) of the object at scene time t."""
    r = _radius_px(video, scene)
    xlo, xhi = _centre_bounds(video.width, r)
    ylo, yhi = _centre_bounds(video.height, r)
    x = _bounce(scene.x0 * video.width, scene.vx * video.width, t, xlo, xhi)
    y = _bounce(scene.y0 * video.height, scene.vy * video.width, t, ylo, yhi)
    return x, y, scene.rotation0 + scene.spin * t


def _circle_mask(dx: np.ndarray, dy: np.ndarray, r: float, angle: float) -> np.ndarray:
    return dx * dx + dy * dy <= r * r


def _square_mask(dx: np.ndarray, dy: np.ndarray, r: float, angle: float) -> np.ndarray:
    """Square with circumradius r (half side r/sqrt 2), rotated by angle."""
    c, s = math.cos(angle), math.sin(angle)
    u = c * dx + s * dy
    v = -s * dx + c * dy
    half = r / math.sqrt(2.0)
    return (np.abs(u) <= half) & (np.abs(v) <= half)


def _triangle_mask(dx: np.ndarray, dy: np.ndarray, r: float, angle: float) -> np.ndarray:
    """Equilateral triangle with circumradius r; at angle 0 one vertex points up.

    A point is inside when its projection on each edge's outward normal is at most the
    inradius r/2. The normals point away from the vertices, i.e. at vertex angle + pi.
    """
    inside = np.ones(dx.shape, dtype=bool)
    up = angle - math.pi / 2  # image y grows down, so "up" is -pi/2
    for k in range(3):
        a = up + math.pi + k * 2 * math.pi / 3
        inside &= dx * math.cos(a) + dy * math.sin(a) <= r / 2
    return inside


def _star_mask(dx: np.ndarray, dy: np.ndarray, r: float, angle: float) -> np.ndarray:
    """Five-point star, outer radius r, inner radius STAR_INNER_RATIO*r; one tip up at angle 0.

    The (concave) star is the union of five convex kites, one per tip: centre, inner vertex,
    tip, inner vertex. In a frame whose u axis points at the tip, a kite is the angular sector
    |v| <= u tan(pi/5) cut by the edge from the tip A=(r,0) to the inner vertex B. Only linear
    tests, so it is several times faster than folding polar angles with arctan2.
    """
    half = math.pi / 5
    ri = STAR_INNER_RATIO * r
    bx, by = ri * math.cos(half), ri * math.sin(half)
    inside = np.zeros(dx.shape, dtype=bool)
    up = angle - math.pi / 2  # image y grows down, so "up" is -pi/2
    for k in range(5):
        c, s = math.cos(up + 2 * half * k), math.sin(up + 2 * half * k)
        u = c * dx + s * dy
        v = np.abs(c * dy - s * dx)
        in_sector = v * math.cos(half) <= u * math.sin(half)
        below_edge = (bx - r) * v - by * (u - r) >= 0  # same side of AB as the centre
        inside |= in_sector & below_edge
    return inside


_MASKS = {
    "circle": _circle_mask,
    "square": _square_mask,
    "triangle": _triangle_mask,
    "star": _star_mask,
}


def _object_patch(video: VideoSpec, scene: SceneSpec, t_in_scene: float) -> tuple[int, int, np.ndarray]:
    """Mask of the object inside its bounding box: (top row, left column, boolean patch).

    Only the box around the bounding circle is evaluated, which keeps big frames cheap.
    """
    h, w = video.height, video.width
    cx, cy, angle = object_pose(video, scene, t_in_scene)
    r = _radius_px(video, scene)
    x0, x1 = max(0, int(cx - r) - 1), min(w, int(math.ceil(cx + r)) + 1)
    y0, y1 = max(0, int(cy - r) - 1), min(h, int(math.ceil(cy + r)) + 1)
    xs = np.arange(x0, x1, dtype=np.float32) + np.float32(0.5 - cx)
    ys = np.arange(y0, y1, dtype=np.float32) + np.float32(0.5 - cy)
    dx, dy = np.meshgrid(xs, ys)
    return y0, x0, _MASKS[scene.shape](dx, dy, r, angle)


def object_mask(video: VideoSpec, scene: SceneSpec, t_in_scene: float) -> np.ndarray:
    """Boolean (H, W) mask of the object's pixels at scene time t (the exact ground truth)."""
    mask = np.zeros((video.height, video.width), dtype=bool)
    y0, x0, patch = _object_patch(video, scene, t_in_scene)
    mask[y0 : y0 + patch.shape[0], x0 : x0 + patch.shape[1]] = patch
    return mask


# --- frames --------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _normal_quantiles() -> np.ndarray:
    """Standard normal quantiles at (u + 0.5) / 65536 for every 16-bit u (built once, ~30 ms)."""
    inv_cdf = NormalDist().inv_cdf
    return np.array([inv_cdf((u + 0.5) / 65536) for u in range(65536)])


@functools.lru_cache(maxsize=64)
def _noise_lut(base: int, std: float) -> np.ndarray:
    """Table from a uniform 16-bit draw to the final noisy uint8 value around `base`.

    Entry u is base + std * (inverse normal CDF of (u + 0.5) / 65536), rounded and clipped:
    an inverse-transform sampler of the rounded, clipped Gaussian the spec asks for, with a
    CDF error below 2e-5. Drawing uint16s and looking them up is about 3x faster than
    float Gaussians, which dominated the rendering time of big noisy frames.
    """
    return np.clip(np.rint(base + std * _normal_quantiles()), 0, 255).astype(np.uint8)


def _background(video: VideoSpec, rng: np.random.Generator | None) -> np.ndarray:
    """Uniform background, plus rounded, clipped per-pixel Gaussian noise if noise_std > 0."""
    shape = (video.height, video.width, 3)
    base = BACKGROUNDS[video.background]
    grey = base[0] == base[1] == base[2]  # true for both spec backgrounds: one fast fill
    if video.noise_std <= 0:
        if grey:
            return np.full(shape, base[0], dtype=np.uint8)
        return np.ascontiguousarray(np.broadcast_to(np.array(base, dtype=np.uint8), shape))
    if rng is None:
        raise ValueError("noise_std > 0 needs an rng")
    draws = rng.integers(0, 65536, size=shape, dtype=np.uint16)
    std = float(video.noise_std)
    if grey:
        return np.take(_noise_lut(base[0], std), draws)
    return np.stack([np.take(_noise_lut(b, std), draws[..., ch]) for ch, b in enumerate(base)], axis=-1)


def render_frame(
    video: VideoSpec, scene: SceneSpec, t_in_scene: float, rng: np.random.Generator | None = None
) -> np.ndarray:
    """Draw one (H, W, 3) uint8 RGB frame of `scene` at `t_in_scene` seconds.

    Noise is added to the background only: the spec says the object is one flat colour.
    `rng` is consumed only when video.noise_std > 0.
    """
    frame = _background(video, rng)
    y0, x0, patch = _object_patch(video, scene, t_in_scene)
    frame[y0 : y0 + patch.shape[0], x0 : x0 + patch.shape[1]][patch] = COLOURS[scene.colour]
    return frame


# --- encoding ------------------------------------------------------------------------------


def _even(n: int) -> int:
    return n - (n % 2)


def _encoder_options(container: str) -> dict[str, str]:
    """Quality settings that keep flat colours within a few levels while encoding fast.

    x264's MB-tree rate control is off: on CPUs with AVX-512, x264's AVX-512 MB-tree propagation
    works on whole vectors of macroblocks past the end of a row (no tail mask), so its result
    depends on heap memory x264 never initialised, and the same frames encoded twice gave
    different bytes. Without MB-tree that code never runs; crf 23 keeps the file sizes and the
    error on flat colours about where crf 20 with MB-tree had them.
    """
    if container in ("mp4", "mkv"):
        return {"crf": "23", "preset": "veryfast", "mbtree": "0"}
    if container == "webm":
        return {"crf": "30", "b": "0", "deadline": "realtime", "cpu-used": "8", "row-mt": "0"}
    return {}


def _open_stream(out, video: VideoSpec, fps: Fraction, threads: int):
    """Add the video stream with an exact 1/fps time base (so pts = frame index)."""
    muxer_codec = CONTAINERS[video.container][1]
    stream = out.add_stream(muxer_codec, rate=fps)
    stream.width, stream.height = video.width, video.height
    stream.pix_fmt = "yuv420p"
    stream.time_base = 1 / fps
    stream.codec_context.time_base = 1 / fps
    stream.codec_context.thread_count = threads
    if video.container == "avi":
        # MPEG-4 Part 2 has no CRF; bits per pixel chosen so flat colours survive.
        stream.codec_context.bit_rate = max(400_000, int(video.width * video.height * float(fps) * 0.5))
        stream.codec_context.gop_size = max(1, round(float(fps)))
    stream.codec_context.options = _encoder_options(video.container)
    return stream


def _iter_frames(video: VideoSpec, seed: int):
    """Yield every frame of the video in order; noise comes from one rng seeded by `seed`."""
    rng = np.random.default_rng(seed)
    fps = fps_fraction(video.fps)
    starts = scene_frame_starts(video)
    for k, scene in enumerate(video.scenes):
        for i in range(starts[k], starts[k + 1]):
            yield render_frame(video, scene, float((i - starts[k]) / fps), rng)


def manifest_entry(path: str | os.PathLike, video: VideoSpec) -> dict:
    """Ground truth for one rendered video: where each label is on the frame grid."""
    fps = fps_fraction(video.fps)
    starts = scene_frame_starts(video)
    scenes = [
        {
            "label": s.label,
            "colour": s.colour,
            "shape": s.shape,
            "start": _seconds(starts[k], fps),
            "end": _seconds(starts[k + 1], fps),
        }
        for k, s in enumerate(video.scenes)
    ]
    return {
        "path": str(path),
        "width": video.width,
        "height": video.height,
        "fps": float(fps),
        "container": video.container,
        "background": video.background,
        "noise_std": float(video.noise_std),
        "duration": _seconds(starts[-1], fps),
        "n_frames": starts[-1],
        "scenes": scenes,
    }


@functools.lru_cache(maxsize=1)
def _vp9_encoder_usable() -> bool:
    """Whether libvpx-vp9 can be opened in this process.

    It cannot when decord was imported before PyAV (decord's bundled libvpx shadows PyAV's; the
    ABI check in libvpx then makes avcodec_open2 fail with EINVAL). Cached: the answer cannot
    change within a process.
    """
    cc = av.CodecContext.create("libvpx-vp9", "w")
    cc.width, cc.height, cc.pix_fmt = 64, 64, "yuv420p"
    cc.time_base, cc.framerate = Fraction(1, 25), Fraction(25)
    try:
        cc.open()
    except av.error.FFmpegError:
        return False
    return True


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


def _encode(path: str | os.PathLike, video: VideoSpec, seed: int, threads: int) -> None:
    """Encode every frame with pts = frame index in a 1/fps time base."""
    fps = fps_fraction(video.fps)
    muxer = CONTAINERS[video.container][0]
    # bitexact: no muxing date or random segment UIDs, so the same spec gives the same bytes
    with av.open(str(path), mode="w", format=muxer, container_options={"fflags": "+bitexact"}) as out:
        stream = _open_stream(out, video, fps, threads)
        for i, arr in enumerate(_iter_frames(video, seed)):
            frame = av.VideoFrame.from_ndarray(arr, format="rgb24")
            frame.pts = i
            frame.time_base = 1 / fps
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))


def _encode_in_subprocess(path: str | os.PathLike, video: VideoSpec, seed: int, threads: int) -> None:
    """Run _encode in a fresh interpreter (no decord loaded) when this one cannot encode VP9."""
    payload = json.dumps({"path": str(path), "video": video_spec_to_dict(video), "seed": seed, "threads": threads})
    root = str(Path(__file__).resolve().parent.parent)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    code = "import sys; from vidsift.pipeline.synth import _encode_from_json; _encode_from_json(sys.stdin.read())"
    proc = subprocess.run([sys.executable, "-c", code], input=payload, text=True, env=env, capture_output=True)
    if proc.returncode != 0:
        raise RuntimeError(f"VP9 encode in subprocess failed for {path}:\n{proc.stderr[-2000:]}")


def _encode_from_json(payload: str) -> None:
    """Entry point of _encode_in_subprocess."""
    job = json.loads(payload)
    _encode(job["path"], video_spec_from_dict(job["video"]), job["seed"], job["threads"])


def render_video(path: str | os.PathLike, video: VideoSpec, seed: int = 0, *, threads: int = 1) -> dict:
    """Render `video` to `path` and return its manifest entry.

    Frame i gets pts i in a 1/fps time base, so decoders see an exact constant frame rate and
    n_frames = round(total duration * fps). Odd sizes are cut down to even (yuv420p needs it);
    the manifest reports the size actually encoded. Noise comes from one rng seeded by `seed`,
    so the same (video, seed) always gives the same frames. `threads=1` keeps the encoders' CPU
    use low and output reproducible; parallelise across videos instead.
    """
    video = dataclasses.replace(video, width=_even(video.width), height=_even(video.height))
    if video.container == "webm" and not _vp9_encoder_usable():
        _encode_in_subprocess(path, video, seed, threads)
    else:
        _encode(path, video, seed, threads)
    return manifest_entry(path, video)


# --- random specs and archives -------------------------------------------------------------


def _weighted_choice(rng: np.random.Generator, items: Sequence, weights: Sequence[float]):
    p = np.asarray(weights, dtype=np.float64)
    return items[int(rng.choice(len(items), p=p / p.sum()))]


def _allowed_pairs(exclude_heldout: bool, only_heldout: bool) -> list[tuple[str, str]]:
    if exclude_heldout and only_heldout:
        raise ValueError("exclude_heldout and only_heldout are mutually exclusive")
    pairs = all_pairs()
    if exclude_heldout:
        return [p for p in pairs if p not in HELDOUT]
    if only_heldout:
        return [p for p in pairs if p in HELDOUT]
    return pairs


def _pick_size(rng: np.random.Generator, sizes) -> tuple[int, int]:
    if sizes is None:
        sizes = DEFAULT_SIZES
    sizes = [tuple(s) for s in sizes]
    weights = [s[2] if len(s) > 2 else 1.0 for s in sizes]
    w, h = _weighted_choice(rng, sizes, weights)[:2]
    return int(w), int(h)


def _pick_fps(rng: np.random.Generator, fps_choices) -> float | Fraction:
    if fps_choices is None:
        items, weights = zip(*DEFAULT_FPS)
    else:
        items, weights = tuple(fps_choices), [1.0] * len(fps_choices)
    fps = _weighted_choice(rng, items, weights)
    if isinstance(fps, Fraction) or float(fps) != int(fps):
        return fps
    return int(fps)  # plain ints keep the manifest and reprs readable


def _random_scene(
    rng: np.random.Generator, pair: tuple[str, str], n_frames: int, fps: Fraction, width: int, height: int
) -> SceneSpec:
    """Sample size, start, motion and spin over the spec's whole range."""
    size = float(rng.uniform(*SIZE_FRAC_RANGE))
    r = size * height / 2
    xlo, xhi = _centre_bounds(width, r)
    ylo, yhi = _centre_bounds(height, r)
    if rng.random() < 0.15:  # some objects stand still
        vx = vy = 0.0
    else:
        speed, heading = rng.uniform(0.05, MAX_SPEED), rng.uniform(0, 2 * math.pi)
        vx, vy = float(speed * math.cos(heading)), float(speed * math.sin(heading))
    spin = 0.0 if rng.random() < 0.2 else float(rng.uniform(-MAX_SPIN, MAX_SPIN))
    return SceneSpec(
        colour=pair[0],
        shape=pair[1],
        duration_s=float(n_frames / fps),
        size_frac=size,
        x0=float(rng.uniform(xlo, xhi) / width),
        y0=float(rng.uniform(ylo, yhi) / height),
        vx=vx,
        vy=vy,
        rotation0=float(rng.uniform(0, 2 * math.pi)),
        spin=spin,
    )


def random_video_spec(
    rng: np.random.Generator | int,
    *,
    n_scenes: int | None = None,
    scene_len: tuple[float, float] = SCENE_LEN_RANGE,
    formats: Sequence[str] = tuple(CONTAINERS),
    sizes: Sequence[tuple] | None = None,
    fps_choices: Sequence[float | Fraction] | None = None,
    exclude_heldout: bool = False,
    only_heldout: bool = False,
    backgrounds: Sequence[str] = tuple(BACKGROUNDS),
) -> VideoSpec:
    """Sample a video anywhere inside the spec's bounds.

    n_scenes: fixed count, or None for 1-4. scene_len: (min, max) seconds, inside 2..15; every
    scene lasts a whole number of frames, so cuts fall exactly on the frame grid. sizes: (w, h)
    or (w, h, weight) tuples; None = DEFAULT_SIZES (weighted toward small, fast sizes).
    fps_choices: None = DEFAULT_FPS (10-60, incl. 30000/1001). Consecutive scenes always differ
    in label; exclude_heldout / only_heldout restrict the (colour, shape) pairs used.
    """
    rng = np.random.default_rng(rng) if not isinstance(rng, np.random.Generator) else rng
    pairs = _allowed_pairs(exclude_heldout, only_heldout)
    lo, hi = scene_len
    _require(SCENE_LEN_RANGE[0] <= lo <= hi <= SCENE_LEN_RANGE[1], f"scene_len {scene_len} outside 2..15 s")
    container = str(_weighted_choice(rng, tuple(formats), [1.0] * len(formats)))
    width, height = _pick_size(rng, sizes)
    fps = _pick_fps(rng, fps_choices)
    exact = fps_fraction(fps)
    count = int(rng.integers(1, 5)) if n_scenes is None else n_scenes
    background = str(_weighted_choice(rng, tuple(backgrounds), [1.0] * len(backgrounds)))
    noise = 0.0 if rng.random() < 0.5 else round(float(rng.uniform(0, MAX_NOISE)), 3)
    min_frames, max_frames = math.ceil(lo * exact), math.floor(hi * exact)
    _require(min_frames <= max_frames, f"no whole number of frames at {float(exact)} fps fits {scene_len} s")
    scenes: list[SceneSpec] = []
    for _ in range(count):
        prev = (scenes[-1].colour, scenes[-1].shape) if scenes else None
        choices = [p for p in pairs if p != prev]
        pair = choices[int(rng.integers(len(choices)))]
        n_frames = int(rng.integers(min_frames, max_frames + 1))
        scenes.append(_random_scene(rng, pair, n_frames, exact, width, height))
    return VideoSpec(scenes, width, height, fps, container, background, noise)


def _filter_sizes(sizes, max_size) -> list[tuple] | None:
    """Apply max_size (int = max width, or (max_w, max_h)) to a size list."""
    if max_size is None:
        return None if sizes is None else list(sizes)
    max_w, max_h = (max_size, max_size) if isinstance(max_size, int) else max_size
    kept = [s for s in (DEFAULT_SIZES if sizes is None else sizes) if s[0] <= max_w and s[1] <= max_h]
    _require(bool(kept), f"no frame size fits max_size={max_size}")
    return kept


def _video_seed(seed: int, index: int) -> int:
    """Independent, reproducible noise seed for video `index` of an archive."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


def synthesize_archive(
    out_dir: str | os.PathLike,
    n_videos: int,
    seed: int,
    *,
    exclude_heldout: bool = False,
    only_heldout: bool = False,
    formats: Sequence[str] = tuple(CONTAINERS),
    n_scenes: int | None = None,
    max_size: int | tuple[int, int] | None = None,
    scene_len: tuple[float, float] = SCENE_LEN_RANGE,
    sizes: Sequence[tuple] | None = None,
    fps_choices: Sequence[float | Fraction] | None = None,
    progress: bool = False,
    threads: int = 1,
) -> dict:
    """Render n_videos random videos to out_dir/videos/NNNNN.<ext> and write out_dir/manifest.json.

    Deterministic per seed: the same arguments give a byte-identical manifest and identical
    frames. max_size caps the frame size (an int caps the width). The manifest is written last
    and atomically, so a directory with a manifest.json holds every video it lists.
    """
    out = Path(out_dir)
    (out / "videos").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    size_list = _filter_sizes(sizes, max_size)
    indices = range(n_videos)
    if progress:
        from tqdm import tqdm

        indices = tqdm(indices, desc="shapes-world", unit="video")
    entries = []
    for i in indices:
        spec = random_video_spec(
            rng,
            n_scenes=n_scenes,
            scene_len=scene_len,
            formats=formats,
            sizes=size_list,
            fps_choices=fps_choices,
            exclude_heldout=exclude_heldout,
            only_heldout=only_heldout,
        )
        rel = f"videos/{i:05d}.{spec.container}"
        entry = render_video(out / rel, spec, seed=_video_seed(seed, i), threads=threads)
        entry["path"] = rel
        entries.append(entry)
    manifest = {"spec": SPEC_VERSION, "seed": seed, "videos": entries}
    tmp = out / "manifest.json.tmp"
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    os.replace(tmp, out / "manifest.json")
    return manifest
