"""What a user asks for when they name a model: the typed configuration every layer passes around."""
from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass

from .registry import bundled

DEFAULT_MODEL = "ViT-B-32"
DEFAULT_PRETRAINED = "laion2b_s34b_b79k"


@dataclass(frozen=True)
class ModelSpec:
    """An open_clip model by name plus its weights.

    ``pretrained`` is an open_clip tag (``laion2b_s34b_b79k``), a path to a local checkpoint
    (``.pt``/``.bin``/``.safetensors``), ``none`` for seeded random weights (plumbing only), or
    empty for a bundled model's own weights. ``device``/``precision`` of ``auto`` mean CUDA with
    fp16 autocast when a GPU is present, CPU fp32 otherwise.
    """

    name: str = DEFAULT_MODEL
    pretrained: str = DEFAULT_PRETRAINED
    device: str = "auto"
    precision: str = "auto"

    @property
    def is_random(self) -> bool:
        return self.pretrained.lower() in ("none", "random")

    @property
    def is_local_file(self) -> bool:
        return not self.is_random and (os.sep in self.pretrained or os.path.isfile(self.pretrained))

    @property
    def key(self) -> str:
        """A stable identifier of the vector space: two specs with the same key give comparable
        vectors, two different keys never share a table. Device and precision do not change it."""
        if self.is_random:
            weights = "random"
        elif self.is_local_file:
            weights = "ckpt-" + _file_digest(self.pretrained)
        elif not self.pretrained:
            model = bundled(self.name)
            weights = "bundled-" + (_file_digest(str(model.weights_path)) if model else "missing")
        else:
            weights = self.pretrained
        return f"{self.name}|{weights}"

    @property
    def table_suffix(self) -> str:
        """``key`` made safe for a LanceDB table name."""
        slug = re.sub(r"[^A-Za-z0-9_]+", "_", self.key).strip("_").lower()
        return f"{slug}_{hashlib.sha1(self.key.encode()).hexdigest()[:6]}"


def resolve_spec(
    name: str | None = None, pretrained: str | None = None, device: str = "auto", precision: str = "auto"
) -> ModelSpec:
    """Fill in what the user left out: a bundled model defaults to its own weights, any other
    model to the LAION tag of the default model."""
    name = name or DEFAULT_MODEL
    if pretrained is None:
        pretrained = "" if bundled(name) else DEFAULT_PRETRAINED
    return ModelSpec(name=name, pretrained=pretrained, device=device, precision=precision)


def _file_digest(path: str) -> str:
    """Checkpoints are identified by content, so a re-saved file under the same name is a new model."""
    digest = hashlib.blake2b(digest_size=6)
    try:
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    except OSError:
        digest.update(os.path.abspath(path).encode())
    return digest.hexdigest()
