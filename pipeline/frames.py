"""Frame preprocessing, matching open_clip's own transform pixel for pixel.

open_clip's eval transform is PIL: ``Resize(shortest side, bicubic, antialias)`` -> ``CenterCrop``
-> ``ToTensor`` -> ``Normalize``. The resize here is that same PIL call, so the squares are
identical to the reference; the crop is a numpy slice and the normalisation happens on the
encoder's device. Measured alternatives (``bench/stages.py``): torch's antialiased bicubic on
float tensors costs 2-3x more per frame on CPU than PIL.

The decoders (``pipeline.decoders``) hand over frames already converted at the size this transform
resizes to (``pyav_decode.decode_size``: swscale bicubic, aspect kept), so for ``shortest`` the
PIL resize has nothing left to do and for ``squash`` it starts from a small frame. Measured
(``bench/decode.py``, ``tests/test_decode.py``): the vectors stay within cosine 0.999 of full-size
decoding (ViT-B-32 0.9999, shapes-tiny 0.9994), and it removes most of the decode stage's CPU time.
With ``decoder_resize=False`` the frames come at full size and the squares are identical to
decord's.
"""
from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

_PIL_FILTERS = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR, "nearest": Image.NEAREST,
                "lanczos": Image.LANCZOS, "box": Image.BOX, "hamming": Image.HAMMING}


@dataclass(frozen=True)
class FrameTransform:
    """Resize + crop to the model's input square; the model's mean/std are applied by the encoder."""

    size: tuple[int, int]
    resize_mode: str = "shortest"
    interpolation: str = "bicubic"
    fill_color: int = 0

    def __post_init__(self):
        if self.resize_mode not in ("shortest", "squash", "longest"):
            raise ValueError(f"Unsupported open_clip resize_mode {self.resize_mode!r}")
        if self.interpolation not in _PIL_FILTERS:
            raise ValueError(f"Unsupported interpolation {self.interpolation!r}")

    @classmethod
    def from_preprocess_cfg(cls, cfg: dict) -> "FrameTransform":
        size = cfg["size"]
        size = (size, size) if isinstance(size, int) else tuple(size)
        return cls(size=size, resize_mode=cfg.get("resize_mode", "shortest"),
                   interpolation=cfg.get("interpolation", "bicubic"), fill_color=int(cfg.get("fill_color", 0) or 0))

    def resized_shape(self, height: int, width: int) -> tuple[int, int]:
        """(h, w) after the resize step, with torchvision's rounding."""
        th, tw = self.size
        if self.resize_mode == "squash":
            return th, tw
        target = min(th, tw) if self.resize_mode == "shortest" else max(th, tw)
        short, long = (height, width) if height <= width else (width, height)
        if self.resize_mode == "shortest":
            new_short, new_long = target, int(target * long / short)
        else:
            new_long, new_short = target, int(round(target * short / long))
        return (new_short, new_long) if height <= width else (new_long, new_short)

    def resize_image(self, image: Image.Image) -> Image.Image:
        """One frame resized exactly as torchvision's ``Resize`` does on a PIL image."""
        out_h, out_w = self.resized_shape(image.height, image.width)
        if (out_h, out_w) == (image.height, image.width):
            return image
        return image.resize((out_w, out_h), _PIL_FILTERS[self.interpolation])

    def resize(self, frames: np.ndarray) -> np.ndarray:
        """uint8 (N,H,W,3) -> uint8 (N,h,w,3)."""
        if len(frames) == 0:
            return np.zeros((0, *self.resized_shape(*frames.shape[1:3]), 3), np.uint8)
        return np.stack([np.asarray(self.resize_image(Image.fromarray(frame))) for frame in frames])

    def crop(self, frames: np.ndarray) -> np.ndarray:
        """Centre crop (or pad, for ``longest``) to the model's square, as torchvision's CenterCrop."""
        th, tw = self.size
        n, h, w, c = frames.shape
        if h < th or w < tw:
            padded = np.full((n, max(h, th), max(w, tw), c), self.fill_color, dtype=np.uint8)
            top, left = (padded.shape[1] - h) // 2, (padded.shape[2] - w) // 2
            padded[:, top:top + h, left:left + w] = frames
            frames, h, w = padded, padded.shape[1], padded.shape[2]
        top = int(round((h - th) / 2.0))
        left = int(round((w - tw) / 2.0))
        return frames[:, top:top + th, left:left + tw]

    def __call__(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Returns (model-ready squares, the resized frames the squares were cut from)."""
        resized = self.resize(frames)
        return np.ascontiguousarray(self.crop(resized)), resized

    def squares_and_thumbnails(self, frames: np.ndarray, thumbnail_height: int) -> tuple[np.ndarray, list[bytes]]:
        """Model squares and JPEG thumbnails from one PIL image per frame. The thumbnail is cut
        from the resized frame when that keeps the picture's shape and is big enough (cheaper than
        scaling the full frame again), else from the full frame."""
        if len(frames) == 0:
            return self(frames)[0], []
        resized, thumbnails = [], []
        for frame in frames:
            image = Image.fromarray(frame)
            small = self.resize_image(image)
            resized.append(np.asarray(small))
            keeps_shape = self.resize_mode == "shortest" and small.height >= thumbnail_height
            thumbnails.append(jpeg_thumbnail(small if keeps_shape else image, thumbnail_height))
        return np.ascontiguousarray(self.crop(np.stack(resized))), thumbnails


def jpeg_thumbnail(frame: np.ndarray | Image.Image, height: int = 108, quality: int = 80) -> bytes:
    """A small JPEG of one frame: what a search result shows."""
    image = frame if isinstance(frame, Image.Image) else Image.fromarray(frame)
    width = max(1, round(image.width * height / image.height))
    image = image.resize((width, height), Image.BILINEAR, reducing_gap=2.0)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()
