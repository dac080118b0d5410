"""The shapes world's ground truth file (``manifest.json``): written and read here, and nowhere else.

An archive is a folder holding ``videos/`` and ``manifest.json``: ``{"spec", "seed", "videos": [{path
(relative to the folder), width, height, fps, container, background, noise_std, duration,
n_frames, scenes: [{label, colour, shape, start, end}]}]}``. Evaluation, training and the demo all
read it through ``read_manifest``, so a missing or unreadable file gives one clear error everywhere.
"""

from __future__ import annotations

import json
import os
from fractions import Fraction
from pathlib import Path

from ..errors import InputError
from .spec import VideoSpec, fps_fraction, scene_frame_starts

MANIFEST = "manifest.json"


def _seconds(frame_index: int, fps: Fraction) -> float:
    return round(float(frame_index / fps), 6)


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


def write_manifest(folder: str | os.PathLike, manifest: dict) -> None:
    """Write ``folder/manifest.json`` atomically: a folder with a manifest holds every video it lists."""
    tmp = Path(folder) / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    os.replace(tmp, Path(folder) / MANIFEST)


def read_manifest(source: str | os.PathLike) -> tuple[Path, dict]:
    """The archive's folder and its manifest, from the folder or the ``manifest.json`` itself."""
    source = Path(source)
    path = source / MANIFEST if source.is_dir() else source
    if not path.is_file():
        raise InputError(f"No shapes-world manifest at {path}")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path} is not a readable manifest: {exc}") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("videos"), list):
        raise InputError(f"{path} is not a shapes-world manifest (no \"videos\" list)")
    return path.parent, manifest


def load_manifest(source: str | os.PathLike) -> tuple[Path, list[dict]]:
    """The archive's folder and its videos, each with ``abspath`` (resolved) added."""
    root, manifest = read_manifest(source)
    videos = manifest["videos"]
    for video in videos:
        video["abspath"] = str((root / video["path"]).resolve())
    return root, videos


def manifest_scenes(source: str | os.PathLike) -> list[dict]:
    """Every scene of an archive, flattened: {path, colour, shape, background, start, end}."""
    _, videos = load_manifest(source)
    return [
        {"path": video["abspath"], "colour": s["colour"], "shape": s["shape"],
         "background": video["background"], "start": s["start"], "end": s["end"]}
        for video in videos for s in video["scenes"]
    ]
