"""The encoder as the pipeline sees it: a declared interface, so pipeline/ needs no knowledge of
open_clip's objects (its tokenizer, autocast, model) and another encoder can stand in for it."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np

from .spec import ModelSpec


@runtime_checkable
class Encoder(Protocol):
    """Frames and texts in, L2-normalised float32 numpy vectors out, all in one vector space.

    ``encode_pixels`` takes uint8 RGB squares (N, H, W, 3) already at ``image_size``;
    ``encode_texts`` truncates texts longer than the model's context, never fails on them;
    ``zero_shot`` gives one column per label, the normalised mean of the label written into each
    template (CLIP's prompt ensemble); ``logit_scale`` turns cosines into softmax logits.
    """

    spec: ModelSpec
    model_key: str
    image_size: tuple[int, int]
    preprocess_cfg: dict
    embed_dim: int
    logit_scale: float

    def encode_pixels(self, pixels: np.ndarray) -> np.ndarray: ...

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray: ...

    def zero_shot(self, labels: Sequence[str], templates: Sequence[str]) -> np.ndarray: ...
