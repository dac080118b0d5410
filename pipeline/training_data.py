"""Training and validation data for ``models.train``: (image, caption) items from videos.

Two training sources:
- a shapes-world archive (``manifest.json`` from ``pipeline.synth.synthesize_archive``): a few
  frames per scene, away from the cuts, captioned afresh at every fetch from
  ``shapes_world.caption_variants``;
- a CSV ``path,start,end,caption``: frames between start and end of a video, or an image.

Frames are decoded once with decord at full size and squash-resized with the pipeline's own
``FrameTransform`` (the inference geometry) to a small square cache, by default twice the model's
input, so the trainer's random crop works on the same picture search will later see. Which
colour-shape pairs a training set contains is the caller's choice, through the archive it renders
(``exclude_heldout=True`` for the zero-shot split).
"""
from __future__ import annotations

import csv
import functools
import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from vidsift.models.train import ValData

from .decode import open_video, probe
from .errors import InputError, VideoError
from .frames import FrameTransform
from .shapes_world import COLOURS, HELDOUT, SHAPES, all_labels, caption_variants, label

CUT_MARGIN_S = 0.25   # frames this close to a cut may be the neighbouring scene's (or a blend)
DECODE_CHUNK = 16
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff"}


# --- frames -------------------------------------------------------------------------------


def scene_times(start: float, end: float, n: int, margin: float = CUT_MARGIN_S) -> np.ndarray:
    """``n`` evenly spread times inside [start + margin, end - margin] (the middle if too short)."""
    lo, hi = start + margin, end - margin
    if hi <= lo or n <= 1:
        return np.array([(start + end) / 2.0])
    return lo + (np.arange(n) + 0.5) * (hi - lo) / n


def decode_at(path: str, times: Sequence[float], transform: FrameTransform) -> np.ndarray:
    """uint8 (len(times), h, w, 3): the frame on screen at each time, resized by ``transform``."""
    reader = open_video(path)
    _, starts = probe(reader, path)
    index = np.clip(np.searchsorted(starts, np.asarray(times) + 1e-6, side="right") - 1, 0, len(starts) - 1)
    unique, inverse = np.unique(index, return_inverse=True)
    squares = []
    for begin in range(0, len(unique), DECODE_CHUNK):
        chunk = unique[begin:begin + DECODE_CHUNK].tolist()
        try:
            frames = reader.get_batch(chunk).asnumpy()
        except Exception as exc:
            raise VideoError(path, "decode", f"frames {chunk[0]}-{chunk[-1]} do not decode: {exc}") from None
        squares.append(transform(frames)[0])
    return np.concatenate(squares)[inverse]


def load_image(path: str, transform: FrameTransform) -> np.ndarray:
    """uint8 (h, w, 3): an image file, resized by ``transform``."""
    with Image.open(path) as image:
        pixels = np.array(image.convert("RGB"))
    return transform(pixels[None])[0][0]


def squash(size: int) -> FrameTransform:
    return FrameTransform(size=(size, size), resize_mode="squash", interpolation="bicubic")


# --- captions -----------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def distractor_words(limit: int = 20000) -> tuple[str, ...]:
    """Common words of the CLIP vocabulary that are no colour or shape of the shapes world.

    Queries are phrased freely ("a close-up photo of a red circle"); words the captions never use
    keep their random embeddings, so the text tower learns to ignore whatever is not a colour or
    a shape by seeing random words around its captions.
    """
    from open_clip.tokenizer import SimpleTokenizer

    banned = tuple(COLOURS) + tuple(SHAPES) + ("background",)
    words = []
    for token in list(SimpleTokenizer().encoder)[:limit]:
        word = token[:-4] if token.endswith("</w>") else ""
        if 3 <= len(word) <= 12 and word.isascii() and word.isalpha() and word.islower() \
                and not word.startswith(banned):
            words.append(word)
    return tuple(words)


@dataclass(frozen=True)
class CaptionNoise:
    """Random phrasing noise: distractor words before/after the caption, a trailing full stop."""

    distractor_prob: float = 0.3
    max_distractors: int = 3
    period_prob: float = 0.3

    def __call__(self, caption: str, rng: random.Random = random) -> str:
        if self.distractor_prob and rng.random() < self.distractor_prob:
            words = distractor_words()
            before, after = [], []
            for _ in range(rng.randint(1, self.max_distractors)):
                (before if rng.random() < 0.5 else after).append(rng.choice(words))
            caption = " ".join(before + [caption] + after)
        if rng.random() < self.period_prob:
            caption += "."
        return caption


NO_NOISE = CaptionNoise(distractor_prob=0.0, period_prob=0.0)


# --- shapes world -------------------------------------------------------------------------


def read_manifest(root: str | Path) -> tuple[Path, dict]:
    root = Path(root)
    path = root / "manifest.json" if root.is_dir() else root
    if not path.is_file():
        raise InputError(f"No shapes-world manifest at {path}")
    return path.parent, json.loads(path.read_text())


def manifest_scenes(root: str | Path) -> list[dict]:
    """Every scene of an archive, flattened: {path, colour, shape, background, start, end}."""
    base, manifest = read_manifest(root)
    return [
        {"path": str(base / video["path"]), "colour": s["colour"], "shape": s["shape"],
         "background": video["background"], "start": s["start"], "end": s["end"]}
        for video in manifest["videos"] for s in video["scenes"]
    ]


def decode_scenes(scenes: list[dict], frames_per_scene: int, transform: FrameTransform,
                  margin: float = CUT_MARGIN_S, progress: bool = False) -> tuple[np.ndarray, list[int]]:
    """Frames of every scene (one decoder opening per video); returns (frames, scene index per frame)."""
    by_video: dict[str, list[int]] = {}
    for k, scene in enumerate(scenes):
        by_video.setdefault(scene["path"], []).append(k)
    items = by_video.items()
    if progress:
        from tqdm import tqdm

        items = tqdm(items, desc="decoding", unit="video", mininterval=2.0)
    frames, owners = [], []
    for path, ks in items:
        times = [scene_times(scenes[k]["start"], scenes[k]["end"], frames_per_scene, margin) for k in ks]
        frames.append(decode_at(path, np.concatenate(times), transform))
        owners += [k for k, t in zip(ks, times) for _ in t]
    return np.concatenate(frames), owners


class ShapesWorldFrames(Dataset):
    """Frames of a shapes-world archive as (PIL image, caption); ``groups`` holds each item's label.

    Captions are drawn at random from ``caption_variants`` (half the time with the background
    phrasings) at every fetch, with ``CaptionNoise`` on top.
    """

    def __init__(self, root: str | Path, *, frames_per_scene: int = 6, cache_size: int = 128,
                 margin: float = CUT_MARGIN_S, noise: CaptionNoise = CaptionNoise(),
                 background_prob: float = 0.5, progress: bool = False):
        self.scenes = manifest_scenes(root)
        self.frames, self.owner = decode_scenes(self.scenes, frames_per_scene, squash(cache_size), margin, progress)
        self.groups = [label(self.scenes[k]["colour"], self.scenes[k]["shape"]) for k in self.owner]
        self.noise, self.background_prob = noise, background_prob

    def __len__(self) -> int:
        return len(self.frames)

    def pairs(self) -> set[tuple[str, str]]:
        return {(s["colour"], s["shape"]) for s in self.scenes}

    def caption(self, index: int, rng: random.Random = random) -> str:
        scene = self.scenes[self.owner[index]]
        background = scene["background"] if rng.random() < self.background_prob else None
        return self.noise(rng.choice(caption_variants(scene["colour"], scene["shape"], background)), rng)

    def __getitem__(self, index: int):
        return Image.fromarray(self.frames[index]), self.caption(index)


def shapes_val_set(root: str | Path, image_size: int, *, frames_per_scene: int = 3,
                   templates: Sequence[str] = ("{}",), margin: float = CUT_MARGIN_S,
                   progress: bool = False) -> ValData:
    """Model-ready frames (squash to ``image_size``, the inference geometry) with labels over
    ``all_labels()``; splits ``seen`` and ``heldout`` name the class ids of each zero-shot split."""
    scenes = manifest_scenes(root)
    frames, owner = decode_scenes(scenes, frames_per_scene, squash(image_size), margin, progress)
    labels = all_labels()
    ids = [labels.index(label(scenes[k]["colour"], scenes[k]["shape"])) for k in owner]
    heldout = sorted(labels.index(label(c, s)) for c, s in HELDOUT)
    seen = [i for i in range(len(labels)) if i not in heldout]
    return ValData(images=list(frames), labels=ids, classnames=labels, templates=tuple(templates),
                   splits={"seen": seen, "heldout": heldout})


# --- CSV ------------------------------------------------------------------------------------


def read_caption_csv(path: str | Path) -> list[dict]:
    """Rows {path, start, end, caption}; relative paths are taken from the CSV's folder."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"Caption CSV {path} does not exist")
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = {"path", "start", "end", "caption"} - set(reader.fieldnames or [])
        if missing:
            raise InputError(f"{path} lacks the column(s) {', '.join(sorted(missing))} (need path,start,end,caption)")
        rows = []
        for line, row in enumerate(reader, start=2):
            media = Path(row["path"]).expanduser()
            media = media if media.is_absolute() else path.parent / media
            caption = (row["caption"] or "").strip()
            if not caption:
                raise InputError(f"{path}:{line}: empty caption")
            rows.append({"path": str(media), "start": _seconds(row["start"]), "end": _seconds(row["end"]),
                         "caption": caption})
    return rows


def _seconds(text: str | None) -> float | None:
    text = (text or "").strip()
    return float(text) if text else None


class CaptionCSVFrames(Dataset):
    """(PIL image, caption) items from a ``path,start,end,caption`` CSV.

    A video row gives ``frames_per_row`` frames spread over [start, end] (the whole video when
    empty); an image row gives the image, start and end ignored. Frames are cached squash-resized
    to ``cache_size`` (or shortest side = ``cache_size`` with ``resize_mode="shortest"``, for models
    that centre-crop). ``groups`` is the caption: identical captions never share a batch.
    """

    def __init__(self, csv_path: str | Path, *, frames_per_row: int = 4, cache_size: int = 128,
                 resize_mode: str = "squash", margin: float = 0.0, progress: bool = False):
        self.rows = read_caption_csv(csv_path)
        transform = FrameTransform(size=(cache_size, cache_size), resize_mode=resize_mode)
        rows = self.rows
        if progress:
            from tqdm import tqdm

            rows = tqdm(rows, desc="decoding", unit="row", mininterval=2.0)
        self.frames, self.captions = [], []
        for row in rows:
            frames = self._row_frames(row, frames_per_row, transform, margin)
            self.frames += list(frames)
            self.captions += [row["caption"]] * len(frames)
        self.groups = list(self.captions)

    @staticmethod
    def _row_frames(row: dict, n: int, transform: FrameTransform, margin: float) -> np.ndarray:
        if Path(row["path"]).suffix.lower() in IMAGE_SUFFIXES:
            return load_image(row["path"], transform)[None]
        reader = open_video(row["path"])
        info, _ = probe(reader, row["path"])
        start = row["start"] if row["start"] is not None else 0.0
        end = min(row["end"] if row["end"] is not None else info.duration, info.duration)
        if end <= start:
            raise InputError(f"{row['path']}: end {end} is not after start {start}")
        return decode_at(row["path"], scene_times(start, end, n, margin), transform)

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, index: int):
        return Image.fromarray(self.frames[index]), self.captions[index]


def load_training_set(source: str | Path, *, cache_size: int = 128, resize_mode: str = "squash",
                      progress: bool = False, **kwargs) -> Dataset:
    """A training set from a shapes-world archive (folder or manifest.json) or a caption CSV."""
    source = Path(source)
    if source.suffix.lower() == ".csv":
        return CaptionCSVFrames(source, cache_size=cache_size, resize_mode=resize_mode, progress=progress, **kwargs)
    if (source / "manifest.json").is_file() or source.name == "manifest.json":
        return ShapesWorldFrames(source, cache_size=cache_size, progress=progress, **kwargs)
    raise InputError(f"{source} is neither a caption CSV (path,start,end,caption) nor a shapes-world archive")
