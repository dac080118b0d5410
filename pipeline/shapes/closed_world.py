"""What shapes-tiny ships of its world for confidence (``models/worlds/shapes-tiny.json``), derived
from the world's spec, so the product's confidence code never imports the shapes world.

    .venv/bin/python -m vidsift.pipeline.shapes.closed_world > models/worlds/shapes-tiny.json

A test checks that the shipped file is what this writes.
"""
from __future__ import annotations

import json
import sys

from ..confidence_words import STOP_WORDS, words_of
from .world import BACKGROUNDS, COLOURS, SHAPES, caption_variants


def caption_words() -> list[str]:
    """Every content word of the captions shapes-tiny was trained on (``world.caption_variants``)."""
    words = {w for c in COLOURS for s in SHAPES for bg in (None, *BACKGROUNDS)
             for caption in caption_variants(c, s, bg) for w in words_of(caption)}
    return sorted(w for w in words if w not in STOP_WORDS)


def descriptions() -> list[str]:
    """Every thing the world can show, named as its captions name it: "green circle"."""
    return [f"{colour} {shape}" for colour in COLOURS for shape in SHAPES]


def closed_world_record() -> dict:
    return {"about": "shapes-world v1 as shapes-tiny knows it: the words of its training captions and "
                     "every colour-shape description (written by vidsift.pipeline.shapes.closed_world)",
            "words": caption_words(), "descriptions": descriptions()}


if __name__ == "__main__":
    json.dump(closed_world_record(), sys.stdout, indent=1)
    sys.stdout.write("\n")
