"""Training and validation data of the shapes world: captioned frames of a rendered archive.

A few frames per scene, away from the cuts, captioned afresh at every fetch from
``world.caption_variants`` with random phrasing noise, so the text tower learns the colour and
shape words rather than one template. Which colour-shape pairs a training set contains is the
caller's choice, through the archive it renders (``exclude_heldout=True`` for the zero-shot split).
"""
from __future__ import annotations

import functools
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from open_clip.tokenizer import SimpleTokenizer
from PIL import Image
from torch.utils.data import Dataset
from tqdm import tqdm

from vidsift.models.validation import ValData

from ..errors import InputError
from ..frames import FrameTransform
from ..training_data import CUT_MARGIN_S, CaptionCSVFrames, decode_at, scene_times, squash
from .manifest import MANIFEST, manifest_scenes
from .world import COLOURS, HELDOUT, SHAPES, all_labels, caption_variants, label


@functools.lru_cache(maxsize=1)
def distractor_words(limit: int = 20000) -> tuple[str, ...]:
    """Common words of the CLIP vocabulary that are no colour or shape of the shapes world.

    Queries are phrased freely ("a close-up photo of a red circle"); words the captions never use
    keep their random embeddings, so the text tower learns to ignore whatever is not a colour or
    a shape by seeing random words around its captions.
    """
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


# --- archives ------------------------------------------------------------------------------


def decode_scenes(scenes: list[dict], frames_per_scene: int, transform: FrameTransform,
                  margin: float = CUT_MARGIN_S, progress: bool = False) -> tuple[np.ndarray, list[int]]:
    """Frames of every scene (one decoder opening per video); returns (frames, scene index per frame)."""
    by_video: dict[str, list[int]] = {}
    for k, scene in enumerate(scenes):
        by_video.setdefault(scene["path"], []).append(k)
    items = tqdm(by_video.items(), desc="decoding", unit="video", mininterval=2.0, disable=not progress)
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


def load_training_set(source: str | Path, *, cache_size: int = 128, resize_mode: str = "squash",
                      progress: bool = False, **kwargs) -> Dataset:
    """A training set from a shapes-world archive (folder or manifest.json) or a caption CSV.

    Here rather than in ``pipeline.training_data`` because `vidsift train` takes either, and the
    product's own module must not know the shapes world.
    """
    source = Path(source)
    if source.suffix.lower() == ".csv":
        return CaptionCSVFrames(source, cache_size=cache_size, resize_mode=resize_mode, progress=progress, **kwargs)
    if (source / MANIFEST).is_file() or source.name == MANIFEST:
        return ShapesWorldFrames(source, cache_size=cache_size, progress=progress, **kwargs)
    raise InputError(f"{source} is neither a caption CSV (path,start,end,caption) nor a shapes-world archive")
