"""Models that ship with vidsift: their open_clip configs (JSON beside this file) and weights.

One registry, explicit loading, in the style of open_clip's ``factory.py``: the JSON configs in
``models/configs`` are registered with open_clip's own config mechanism the first time a model is
created, never at import time.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
CONFIG_DIR = PACKAGE_DIR / "configs"
WEIGHTS_DIR = PACKAGE_DIR / "weights"


@dataclass(frozen=True)
class BundledModel:
    """A model of our own: where its weights live and how its frames are preprocessed.

    open_clip reads preprocessing (resize mode, mean/std) from pretrained tags, not from model
    configs, so we carry it here, keyed as open_clip's ``PreprocessCfg``, and pass it as its
    ``force_preprocess_cfg``.
    """

    name: str
    weights_file: str
    preprocess: dict = field(default_factory=dict)
    description: str = ""

    @property
    def weights_path(self) -> Path:
        return WEIGHTS_DIR / self.weights_file


BUNDLED_MODELS: dict[str, BundledModel] = {
    "shapes-tiny": BundledModel(
        name="shapes-tiny",
        weights_file="shapes-tiny.safetensors",
        # Squash, not centre-crop: shapes-world objects can sit at the edge of a 16:9 frame.
        preprocess={"resize_mode": "squash", "interpolation": "bicubic"},
        description="tiny CLIP (small ResNet image tower) trained on the synthetic shapes world (offline demo)",
    ),
}


def register_bundled_configs() -> None:
    """Tell open_clip about our JSON configs (idempotent)."""
    import open_clip  # lazy: models.spec imports this module and the CLI imports spec at start; open_clip costs ~5 s

    for path in sorted(CONFIG_DIR.glob("*.json")):
        if open_clip.get_model_config(path.stem) is None:
            open_clip.add_model_config(path)


def bundled(name: str) -> BundledModel | None:
    return BUNDLED_MODELS.get(name)
