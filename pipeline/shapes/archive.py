"""Random shapes-world videos and whole archives, sampled over the spec's full range.

Tests, benchmarks, the demo and ``vidsift synth`` need many videos whose ground truth is known;
sampling them here (sizes, frame rates, containers, motion, noise, the held-out split) keeps every
archive inside the spec and reproducible from one seed.
"""

from __future__ import annotations

import math
import os
from fractions import Fraction
from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm import tqdm

from .draw import centre_bounds
from .encode import render_video
from .manifest import write_manifest
from .spec import (CONTAINERS, MAX_NOISE, MAX_SPEED, MAX_SPIN, SCENE_LEN_RANGE, SIZE_FRAC_RANGE, SceneSpec,
                   VideoSpec, require, fps_fraction)
from .world import BACKGROUNDS, HELDOUT, SPEC_VERSION, all_pairs

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
    xlo, xhi = centre_bounds(width, r)
    ylo, yhi = centre_bounds(height, r)
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
    require(SCENE_LEN_RANGE[0] <= lo <= hi <= SCENE_LEN_RANGE[1], f"scene_len {scene_len} outside 2..15 s")
    container = str(_weighted_choice(rng, tuple(formats), [1.0] * len(formats)))
    width, height = _pick_size(rng, sizes)
    fps = _pick_fps(rng, fps_choices)
    exact = fps_fraction(fps)
    count = int(rng.integers(1, 5)) if n_scenes is None else n_scenes
    background = str(_weighted_choice(rng, tuple(backgrounds), [1.0] * len(backgrounds)))
    noise = 0.0 if rng.random() < 0.5 else round(float(rng.uniform(0, MAX_NOISE)), 3)
    min_frames, max_frames = math.ceil(lo * exact), math.floor(hi * exact)
    require(min_frames <= max_frames, f"no whole number of frames at {float(exact)} fps fits {scene_len} s")
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
    require(bool(kept), f"no frame size fits max_size={max_size}")
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
    indices = tqdm(range(n_videos), desc="shapes-world", unit="video", disable=not progress)
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
    write_manifest(out, manifest)
    return manifest
