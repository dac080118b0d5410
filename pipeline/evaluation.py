"""Measuring search and tagging against a shapes-world manifest (ground truth per scene).

Figures: text->video R@1 (query = a label, hit when the top-ranked video shows it), zero-shot
top-1 over the label set (clip vector = the stored video vector), and moment hit rate (the
top-ranked segment for a label overlaps a true scene of that label). Each is split into seen and
held-out colour-shape pairs.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .classify import ZeroShotClassifier
from .search import search_vector
from .shapes_world import all_labels, is_heldout, parse_label
from .store import VideoStore


@dataclass
class Tally:
    hits: int = 0
    total: int = 0

    def add(self, ok: bool) -> None:
        self.hits += int(ok)
        self.total += 1

    @property
    def rate(self) -> float | None:
        return self.hits / self.total if self.total else None

    def to_dict(self) -> dict:
        return {"rate": None if self.rate is None else round(self.rate, 4), "hits": self.hits, "n": self.total}


@dataclass
class SplitTally:
    seen: Tally = field(default_factory=Tally)
    heldout: Tally = field(default_factory=Tally)

    def add(self, label: str, ok: bool) -> None:
        (self.heldout if is_heldout(*parse_label(label)) else self.seen).add(ok)

    def to_dict(self) -> dict:
        return {"seen": self.seen.to_dict(), "heldout": self.heldout.to_dict()}


def load_manifest(path: str | Path) -> tuple[Path, list[dict]]:
    """Returns the archive root and its videos with absolute paths."""
    path = Path(path)
    manifest_file = path / "manifest.json" if path.is_dir() else path
    root = manifest_file.parent
    videos = json.loads(manifest_file.read_text())["videos"]
    for video in videos:
        video["abspath"] = str((root / video["path"]).resolve())
    return root, videos


def _labels_of(video: dict) -> set[str]:
    return {scene["label"] for scene in video["scenes"]}


def evaluate_archive(store: VideoStore, encoder, videos: list[dict], labels: list[str] | None = None,
                     templates: list[str] | None = None) -> dict:
    """All figures for the videos of a manifest that are indexed in ``store`` with ``encoder``."""
    labels = labels or all_labels()
    suffix = encoder.spec.table_suffix
    rows = {r["path"]: r for r in store.video_rows(suffix, ["video_id", "path", "vector"])}
    by_path = {v["abspath"]: v for v in videos if v["abspath"] in rows}
    single = [v for v in by_path.values() if len(v["scenes"]) == 1]
    multi = [v for v in by_path.values() if len(v["scenes"]) > 1]
    label_vectors = dict(zip(labels, encoder.encode_texts(labels)))
    video_ids = {rows[p]["video_id"]: v for p, v in by_path.items()}

    retrieval, classification, moments = SplitTally(), SplitTally(), SplitTally()
    single_ids = {rows[v["abspath"]]["video_id"] for v in single}
    for video in single:
        label = video["scenes"][0]["label"]
        hits = search_vector(store, suffix, label_vectors[label], k=1, per_video=True,
                             where=_id_filter(single_ids))
        retrieval.add(label, bool(hits) and label in _labels_of(video_ids[hits[0].video_id]))
    if single:
        classifier = ZeroShotClassifier(encoder, labels, templates)
        vectors = np.stack([np.asarray(rows[v["abspath"]]["vector"], dtype=np.float32) for v in single])
        predicted = classifier.probabilities(vectors).argmax(axis=1)
        for video, index in zip(single, predicted):
            classification.add(video["scenes"][0]["label"], labels[index] == video["scenes"][0]["label"])
    multi_ids = {rows[v["abspath"]]["video_id"] for v in multi}
    for label in sorted({lab for v in multi for lab in _labels_of(v)}):
        hits = search_vector(store, suffix, label_vectors[label], k=1, where=_id_filter(multi_ids))
        ok = False
        if hits:
            truth = video_ids[hits[0].video_id]
            ok = any(s["label"] == label and _overlap(hits[0].start, hits[0].end, s["start"], s["end"]) > 0
                     for s in truth["scenes"])
        moments.add(label, ok)
    return {
        "model": encoder.model_key,
        "videos": {"single_scene": len(single), "multi_scene": len(multi)},
        "retrieval_r1": retrieval.to_dict(),
        "zero_shot_top1": classification.to_dict(),
        "moment_top1_overlap": moments.to_dict(),
    }


def _id_filter(ids) -> str:
    from .store import sql_in

    return sql_in("video_id", sorted(ids))


def _overlap(a0: float, a1: float, b0: float, b1: float) -> float:
    return max(0.0, min(a1, b1) - max(a0, b0))
