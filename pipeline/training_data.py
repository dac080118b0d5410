"""Training and validation frames from videos, for ``models.train``: decoding and the caption CSV.

Frames are decoded once with decord at full size and squash-resized with the pipeline's own
``FrameTransform`` (the inference geometry) to a small square cache, by default twice the model's
input, so the trainer's random crop works on the same picture search will later see.

A user's own training set is a CSV ``path,start,end,caption``: frames between start and end of a
video, or an image. The shapes world's archives are read by ``pipeline.shapes.training_data``,
which uses the decoding here.
"""
from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image
from torch.utils.data import Dataset
from tqdm import tqdm

from .decode import open_video, probe
from .errors import InputError, VideoError
from .frames import FrameTransform

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
        rows = tqdm(self.rows, desc="decoding", unit="row", mininterval=2.0, disable=not progress)
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
