"""Image and text encoders over a loaded open_clip model: batches in, L2-normalised numpy vectors out."""
from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
import torch
from open_clip import build_zero_shot_classifier

from .loading import LoadedModel, autocast, image_size, load_model
from .spec import ModelSpec


class ClipEncoder:
    """Encodes frames and texts with one open_clip model (``models.interface.Encoder``).

    Frames arrive as uint8 RGB squares already resized/cropped to the model's input size (the
    pipeline does that on the decoder side, where it is cheapest); here they are only scaled and
    normalised with the model's own mean/std, exactly as open_clip's ``ToTensor`` + ``Normalize``.
    """

    def __init__(self, loaded: LoadedModel):
        self.loaded = loaded
        self.model = loaded.model
        self.device = loaded.device
        cfg = loaded.preprocess_cfg
        self.mean = torch.tensor(cfg["mean"], device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(cfg["std"], device=self.device).view(1, 3, 1, 1)

    @classmethod
    def from_spec(cls, spec: ModelSpec) -> "ClipEncoder":
        return cls(load_model(spec))

    @property
    def spec(self) -> ModelSpec:
        return self.loaded.spec

    @property
    def model_key(self) -> str:
        return self.loaded.spec.key

    @property
    def image_size(self) -> tuple[int, int]:
        return image_size(self.loaded.preprocess_cfg)

    @property
    def preprocess_cfg(self) -> dict:
        return self.loaded.preprocess_cfg

    @property
    def logit_scale(self) -> float:
        return float(self.model.logit_scale.exp().item())

    @functools.cached_property
    def embed_dim(self) -> int:
        """Learned by encoding one text (open_clip's towers name their width differently), once."""
        return int(self.encode_texts(["x"]).shape[1])

    def _autocast(self):
        return autocast(self.device, self.loaded.autocast_dtype)

    def to_tensor(self, pixels: np.ndarray) -> torch.Tensor:
        """uint8 (N,H,W,3) -> normalised float (N,3,H,W) on the model's device."""
        batch = torch.from_numpy(np.ascontiguousarray(pixels))
        if self.device.type == "cuda":
            batch = batch.pin_memory().to(self.device, non_blocking=True)
        batch = batch.permute(0, 3, 1, 2).float().div_(255.0)
        return (batch - self.mean) / self.std

    @torch.inference_mode()
    def encode_tensor(self, images: torch.Tensor) -> np.ndarray:
        with self._autocast():
            feats = self.model.encode_image(images.to(self.device), normalize=True)
        return feats.float().cpu().numpy()

    def encode_pixels(self, pixels: np.ndarray) -> np.ndarray:
        if len(pixels) == 0:
            return np.zeros((0, self.embed_dim), dtype=np.float32)
        return self.encode_tensor(self.to_tensor(pixels))

    @torch.inference_mode()
    def zero_shot(self, labels: Sequence[str], templates: Sequence[str]) -> np.ndarray:
        """(D, C) label vectors: each label written into every template, encoded, averaged and
        normalised, by open_clip's ``build_zero_shot_classifier``."""
        with self._autocast():
            weights = build_zero_shot_classifier(self.model, self.loaded.tokenizer, list(labels), list(templates),
                                                 num_classes_per_batch=32, device=self.device)
        return weights.float().cpu().numpy()

    @torch.inference_mode()
    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Texts longer than the context length are truncated by open_clip's tokenizer, never rejected."""
        tokens = self.loaded.tokenizer(list(texts)).to(self.device)
        with self._autocast():
            feats = self.model.encode_text(tokens, normalize=True)
        return feats.float().cpu().numpy()
