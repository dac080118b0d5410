"""Zero-shot classification of clips against any label set, with prompt-template ensembles, and
open-set answers ("none of these labels") from the calibrated confidence of ``pipeline.confidence``."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vidsift.models.interface import Encoder

from .confidence import MATCH_THRESHOLD, is_match
from .config import IndexConfig
from .errors import InputError
from .indexing import embed_video
from .prompt_templates import DEFAULT_TEMPLATES
from .search import format_timestamp
from .segments import build_segments, mean_pool

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

    def __init__(self, encoder: Encoder, labels: list[str], templates: list[str] | None = None):
        self.encoder = encoder
        self.labels = list(labels)
        self.templates = list(templates or DEFAULT_TEMPLATES)
        self.weights = encoder.zero_shot(self.labels, self.templates)  # (D, C)
        self._label_vectors: np.ndarray | None = None

    @property
    def label_vectors(self) -> np.ndarray:
        """Each label as the classifier sees it, its template ensemble (L2-normalised): the text
        whose confidence says whether a segment shows the label. The ensemble, not the bare label,
        because the templates are how CLIP reads a label set (on clips of held-out shapes-world
        pairs the bare label is the weaker text, bench/eval_confidence.py); the classifier built
        it already, so it costs nothing."""
        if self._label_vectors is None:
            w = self.weights.T.astype(np.float32)
            self._label_vectors = w / np.maximum(np.linalg.norm(w, axis=1, keepdims=True), 1e-12)
        return self._label_vectors

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
    """``labels``: the top labels by probability (softmax over the set, as CLIP computes it), each
    with ``confidence``/``match`` when a calibration was given; ``label``: None ("none of these
    labels") when no segment of the clip shows one of the labels, else the most probable label over
    the clip, as before open-set (``open_set_answer``);
    ``matches``: every label that matches somewhere in the clip (a clip whose scenes show two
    labels gets both), most confident first."""

    path: str
    duration: float
    labels: list[dict]
    segments: list[dict] = field(default_factory=list)
    label: str | None = None
    matches: list[dict] = field(default_factory=list)
    calibration: dict | None = None

    def to_dict(self) -> dict:
        if self.calibration is None:  # no calibration, no verdict: the output as it was
            return {"path": self.path, "duration": self.duration, "labels": self.labels, "segments": self.segments}
        return {"path": self.path, "duration": self.duration, "label": self.label, "labels": self.labels,
                "segments": self.segments, "matches": self.matches, "calibration": self.calibration}


def _with_confidence(rows: list[dict], confidence: dict[str, float] | None) -> list[dict]:
    if confidence is None:
        return rows
    return [{**row, "confidence": round(float(confidence[row["label"]]), 4),
             "match": is_match(confidence[row["label"]])} for row in rows]


def open_set_answer(labels: list[str], clip_probs: np.ndarray, segment_probs: list[np.ndarray],
                    confidence: np.ndarray, any_label: np.ndarray | None = None
                    ) -> tuple[str | None, list[str | None]]:
    """The answers "which of these labels?" for a clip and each of its segments.

    Open-set only decides *whether* to answer, never *which* label: a segment that shows none of
    the labels answers None, otherwise its most probable label; the clip answers None when none of
    its segments shows a label, otherwise its most probable label over the whole clip, exactly
    CLIP's top-1 as before open-set (so top-1 accuracy with the true label in the set can drop only
    by a "none"). Whether a segment shows one of the labels: ``any_label`` (per segment,
    ``Calibration.set_confidences``) > 0.5 when given, else some label's own ``confidence``
    ((labels, segments)) > 0.5. The labels shown somewhere are ``ClipClassification.matches``."""
    if any_label is None:
        shown = (np.asarray(confidence) > MATCH_THRESHOLD).any(axis=0)
    else:
        shown = np.asarray(any_label) > MATCH_THRESHOLD
    answers = [labels[int(np.argmax(probs))] if shown[j] else None for j, probs in enumerate(segment_probs)]
    return (labels[int(np.argmax(clip_probs))] if shown.any() else None), answers


def classify_clip(encoder, path: str, classifier: ZeroShotClassifier, config: IndexConfig,
                  per_segment: bool = False, top: int | None = 5, calibration=None) -> ClipClassification:
    """Classify a whole clip (mean-pooled frames), and optionally each of its segments.

    With a ``calibration`` (``pipeline.confidence.load_calibration``) each label also gets its
    confidence of being shown: the best over the clip's segments (scene-aware by default), so a
    label shown in one scene of several matches; ``label`` is None when no segment shows one of the
    labels (``Calibration.set_confidences``), else CLIP's top-1 as before."""
    embedded = embed_video(path, encoder, config)
    clip_vector = mean_pool(embedded.vectors)
    clip_probs = classifier.probabilities(clip_vector)[0]
    segments = build_segments(embedded.times, embedded.vectors, embedded.info.duration, config.segments) \
        if per_segment or calibration is not None else []
    segment_probs = [classifier.probabilities(seg.vector)[0] for seg in segments]
    conf = answers = None
    if calibration is not None:
        # Per segment only: the mean of a clip whose scenes differ is a blend of them (a white square
        # then a yellow triangle average to something like "a yellow square").
        vectors = np.vstack([np.atleast_2d(seg.vector) for seg in segments] or [np.atleast_2d(clip_vector)])
        conf = calibration.confidence_matrix(classifier.labels, classifier.label_vectors, vectors)  # (C, S)
        any_label = calibration.set_confidences(classifier.labels, classifier.label_vectors, vectors)  # (S,)
        best = {label: float(conf[i].max()) for i, label in enumerate(classifier.labels)}
        label, answers = open_set_answer(classifier.labels, clip_probs, segment_probs or [clip_probs], conf,
                                         any_label)
    result = ClipClassification(path=path, duration=embedded.info.duration,
                                labels=_with_confidence(classifier.ranked(clip_probs, top),
                                                        best if conf is not None else None))
    if conf is not None:
        result.label = label
        result.matches = sorted(({"label": name, "confidence": round(value, 4)} for name, value in best.items()
                                 if is_match(value)), key=lambda row: -row["confidence"])
        result.calibration = calibration.describe()
    if per_segment:
        for j, (seg, probs) in enumerate(zip(segments, segment_probs)):
            here = None if conf is None else {name: float(conf[i, j]) for i, name in enumerate(classifier.labels)}
            row = {"start": seg.start, "end": seg.end, "labels": _with_confidence(classifier.ranked(probs, top), here)}
            if here is not None:
                row = {"start": seg.start, "end": seg.end, "label": answers[j], "labels": row["labels"]}
            result.segments.append(row)
    return result


def format_classification(result: ClipClassification) -> str:
    """`vidsift classify`'s human text: the verdict, the top labels, and each segment."""
    lines = [f"{result.path} ({result.duration:.1f} s)"]
    if result.calibration is not None:
        if result.label is None:
            lines.append("none of these labels")
        else:
            others = [m["label"] for m in result.matches if m["label"] != result.label]
            lines.append(f"label: {result.label}" + (f" (also shown: {', '.join(others)})" if others else ""))
    for row in result.labels:
        extra = "" if "confidence" not in row else \
            f"  {100 * row['confidence']:5.1f}%  {'match' if row['match'] else 'weak '}"
        lines.append(f"  {row['probability']:.4f}{extra}  {row['label']}")
    for seg in result.segments:
        best = seg["labels"][0]
        span = f"{format_timestamp(seg['start'])}-{format_timestamp(seg['end'])}"
        if "label" in seg:
            if seg["label"] is None:
                lines.append(f"  {span}  none (closest: {best['label']}, confidence {best['confidence']:.3f})")
            else:
                conf = next((r["confidence"] for r in seg["labels"] if r["label"] == seg["label"]), None)
                lines.append(f"  {span}  {seg['label']}" + (f" ({conf:.3f})" if conf is not None else ""))
        else:
            lines.append(f"  {span}  {best['label']} ({best['probability']:.3f})")
    if result.calibration is not None and result.calibration["source"] != "fitted":
        lines.append(f"confidence calibration: {result.calibration['note']}")
    return "\n".join(lines)
