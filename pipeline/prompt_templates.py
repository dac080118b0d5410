"""The prompt templates a label is read through: CLIP's published video prompts (Kinetics/UCF101),
the label in a handful of photo/video phrasings whose embeddings are averaged (a prompt ensemble).

Shared by classification (each label's vector) and confidence (the texts a segment is weighed
against are embedded the same way as the label or query they are weighed with)."""
from __future__ import annotations

import numpy as np

DEFAULT_TEMPLATES = (
    "{}.",
    "a photo of {}.",
    "a video of {}.",
    "a frame of a video showing {}.",
    "a photo showing {}.",
    "a video frame of {}.",
    "a close-up photo of {}.",
    "a low resolution video of {}.",
)


def prompt_ensembles(encoder, texts: list[str], templates=DEFAULT_TEMPLATES) -> np.ndarray:
    """(len(texts), dim) L2-normalised: each text's template ensemble (open_clip's
    ``build_zero_shot_classifier`` through ``encoder.zero_shot``), batched."""
    return encoder.zero_shot(list(texts), list(templates)).T.copy()
