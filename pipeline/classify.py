"""Zero-shot classification of clips against any label set, with prompt-template ensembles."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .config import IndexConfig
from .errors import InputError
from .indexing import embed_video
from .segments import build_segments, mean_pool

# An ensemble in the style of CLIP's published video prompts (Kinetics/UCF101): the label in a
# handful of photo/video phrasings, averaged in embedding space.
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
MAX_LABELS = 5_000


def parse_labels(text: str | None = None, file: str | None = None) -> list[str]:
    """Labels from "a,b,c" and/or a file with one label per line (blank lines and # comments skipped)."""
    labels: list[str] = []
    if text:
        labels += [part.strip() for part in text.split(",")]
    if file:
        path = Path(file).expanduser()
        if not path.is_file():
            raise InputError(f"Label file {file!r} does not exist")
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(f"Label file {file!r} cannot be read as UTF-8 text: {exc}") from None
        labels += [line.strip() for line in lines if not line.strip().startswith("#")]
    labels = list(dict.fromkeys(label for label in labels if label))
    if not labels:
        raise InputError("No labels given: use --labels 'a,b,c' or --labels-file FILE (one per line)")
    if len(labels) > MAX_LABELS:
        raise InputError(f"{len(labels)} labels is more than the {MAX_LABELS} supported")
    return labels


def parse_templates(templates: list[str] | None = None, file: str | None = None) -> list[str]:
    """Prompt templates, each with one ``{}`` where the label goes; the default ensemble if none."""
    found = list(templates or [])
    if file:
        path = Path(file).expanduser()
        if not path.is_file():
            raise InputError(f"Template file {file!r} does not exist")
        found += [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not found:
        return list(DEFAULT_TEMPLATES)
    for template in found:
        if template.count("{}") != 1:
            raise InputError(f"Template {template!r} must contain exactly one '{{}}' for the label")
    return found


class ZeroShotClassifier:
    """Label vectors averaged over templates (open_clip's ``build_zero_shot_classifier``);
    probabilities are softmax(logit_scale * cosine), as CLIP computes them."""

    def __init__(self, encoder, labels: list[str], templates: list[str] | None = None):
        from open_clip import build_zero_shot_classifier

        self.encoder = encoder
        self.labels = list(labels)
        self.templates = list(templates or DEFAULT_TEMPLATES)
        import torch

        with torch.inference_mode(), encoder._autocast():
            weights = build_zero_shot_classifier(
                encoder.model, encoder.loaded.tokenizer, self.labels, self.templates,
                num_classes_per_batch=32, device=encoder.device,
            )
        self.weights = weights.float().cpu().numpy()  # (D, C)

    def probabilities(self, vectors: np.ndarray) -> np.ndarray:
        logits = self.encoder.logit_scale * (np.atleast_2d(vectors) @ self.weights)
        logits -= logits.max(axis=1, keepdims=True)
        exp = np.exp(logits)
        return exp / exp.sum(axis=1, keepdims=True)

    def ranked(self, probs: np.ndarray, top: int | None = None) -> list[dict]:
        order = np.argsort(-probs)[: top or len(self.labels)]
        return [{"label": self.labels[i], "probability": round(float(probs[i]), 6)} for i in order]


@dataclass
class ClipClassification:
    path: str
    duration: float
    labels: list[dict]
    segments: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"path": self.path, "duration": self.duration, "labels": self.labels, "segments": self.segments}


def classify_clip(encoder, path: str, classifier: ZeroShotClassifier, config: IndexConfig,
                  per_segment: bool = False, top: int | None = 5) -> ClipClassification:
    """Classify a whole clip (mean-pooled frames), and optionally each of its segments."""
    embedded = embed_video(path, encoder, config)
    clip_probs = classifier.probabilities(mean_pool(embedded.vectors))[0]
    result = ClipClassification(path=path, duration=embedded.info.duration,
                                labels=classifier.ranked(clip_probs, top))
    if per_segment:
        for seg in build_segments(embedded.times, embedded.vectors, embedded.info.duration, config.segments):
            probs = classifier.probabilities(seg.vector)[0]
            result.segments.append({"start": seg.start, "end": seg.end, "labels": classifier.ranked(probs, top)})
    return result
