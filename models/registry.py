"""Models that ship with vidsift: their open_clip configs (JSON beside this file) and weights.

One registry, explicit loading, in the style of open_clip's ``factory.py``: the JSON configs in
``models/configs`` are registered with open_clip's own config mechanism the first time a model is
created, never at import time.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
CONFIG_DIR = PACKAGE_DIR / "configs"
WEIGHTS_DIR = PACKAGE_DIR / "weights"
WORLDS_DIR = PACKAGE_DIR / "worlds"


@dataclass(frozen=True)
class ClosedWorld:
    """What a model trained from scratch on a closed world knows of it, for confidence.

    It reads only the words of its training captions (any other word is noise to it), and its world
    can be listed: every description it was built to tell apart. Those descriptions are its rival
    descriptions. Pairs of its words are not: they include phrases that fit almost any frame of the
    world ("single green", "green black": a green thing on black), which are *compatible* with a
    query rather than alternatives to it, and which a text tower that never read them may score as
    high as the true label (bench/RESULTS.md, "Rival descriptions").

    Shipped as data beside the model (``models/worlds/<name>.json``), so the product's confidence
    code needs no knowledge of the world the model came from."""

    words: tuple[str, ...]          # the words of its training captions
    descriptions: tuple[str, ...]   # everything its world can show


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
    world_file: str = ""  # a model trained on a closed world: its ClosedWorld, in WORLDS_DIR

    @property
    def weights_path(self) -> Path:
        return WEIGHTS_DIR / self.weights_file

    def closed_world(self) -> ClosedWorld | None:
        """The closed world these weights were trained on, read from its file; None for none."""
        if not self.world_file:
            return None
        data = json.loads((WORLDS_DIR / self.world_file).read_text())
        return ClosedWorld(tuple(data["words"]), tuple(data["descriptions"]))


BUNDLED_MODELS: dict[str, BundledModel] = {
    "shapes-tiny": BundledModel(
        name="shapes-tiny",
        weights_file="shapes-tiny.safetensors",
        # Squash, not centre-crop: shapes-world objects can sit at the edge of a 16:9 frame.
        preprocess={"resize_mode": "squash", "interpolation": "bicubic"},
        description="tiny CLIP (small ResNet image tower) trained on the synthetic shapes world (offline demo)",
        world_file="shapes-tiny.json",
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
