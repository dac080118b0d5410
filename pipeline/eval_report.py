"""`vidsift eval`'s figures on a labelled archive: retrieval, zero-shot, moments and scene cuts.

One function per figure, each reading only what it needs from the store, so a figure can be
changed or added without touching the others; ``full_report`` gathers them. Every figure is split
by the caller's ``Vocabulary`` (the shapes world reports seen and held-out colour-shape pairs
apart), and each counts only the ground truth's videos that are indexed.

MSR-VTT's test CSV is read here too: its text -> video ranks use the same rank statistics.
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from .classify import ZeroShotClassifier
from .errors import InputError
from .eval_truth import Scope, Tally, Vocabulary, indexed_rows, iou, labels_of
from .segments import mean_pool
from .sources import VIDEO_EXTENSIONS
from .store import VideoStore


def full_report(store: VideoStore, encoder, videos: list[dict], vocab: Vocabulary, templates: list[str] | None = None,
                sampling_interval: float = 1.0, pooling: str = "mean") -> dict:
    """Retrieval, zero-shot classification, moment localisation and boundary figures for the
    ground truth's videos indexed in ``store``, each split as ``vocab`` splits labels."""
    scope = Scope.of(store, encoder, videos, pooling)
    queries = sorted({s["label"] for v in scope.truth.values() for s in v["scenes"]})
    vectors = dict(zip(queries, encoder.encode_texts(queries)))
    return {
        "model": encoder.model_key, "pooling": pooling, "videos": len(scope.truth),
        "scenes": sum(len(v["scenes"]) for v in scope.truth.values()),
        "retrieval": retrieval_figures(scope, vectors, vocab),
        "zero_shot": zero_shot_figures(scope, encoder, vocab, templates),
        "localisation": localisation_figures(scope, vectors, vocab),
        "boundaries": boundary_figures(scope, sampling_interval),
    }


def retrieval_figures(scope: Scope, vectors: dict[str, np.ndarray], vocab: Vocabulary) -> dict:
    """Text -> video: for each label a video shows, the rank of the first video showing it."""
    first_rank = {}
    for label, vector in vectors.items():
        ranking = scope.search(vector, k=len(scope.truth), per_video=True)
        first_rank[label] = next((i + 1 for i, h in enumerate(ranking)
                                  if label in labels_of(scope.truth[h.video_id])), len(scope.truth) + 1)
    ranks = {split: [] for split in vocab.splits}
    for video in scope.truth.values():
        for label in labels_of(video):
            ranks[vocab.split_of(label)].append(first_rank[label])
    return {split: rank_stats(r) for split, r in ranks.items()} | {"all": rank_stats(sum(ranks.values(), []))}


def zero_shot_figures(scope: Scope, encoder, vocab: Vocabulary, templates: list[str] | None = None) -> dict:
    """Top-1 and top-5 over the vocabulary per true scene, from the mean of its stored frame vectors."""
    labels = list(vocab.labels)
    classifier = ZeroShotClassifier(encoder, labels, templates)
    frames = scope.tables.frames_by_video(list(scope.truth))
    top1 = {split: Tally() for split in vocab.splits}
    top5 = {split: Tally() for split in vocab.splits}
    for vid, video in scope.truth.items():
        stored = frames.get(vid)
        for scene in video["scenes"]:
            inside = stored.vectors_between(scene["start"], scene["end"]) if stored is not None else None
            if inside is None or not len(inside) or scene["label"] not in labels:
                continue
            probs = classifier.probabilities(mean_pool(inside))[0]
            order = [labels[i] for i in np.argsort(-probs)]
            split = vocab.split_of(scene["label"])
            top1[split].add(order[0] == scene["label"])
            top5[split].add(scene["label"] in order[:5])
    return {split: {"top1": top1[split].to_dict(), "top5": top5[split].to_dict()} for split in vocab.splits}


def localisation_figures(scope: Scope, vectors: dict[str, np.ndarray], vocab: Vocabulary) -> dict:
    """The best moment for a label inside its video, against that video's scenes of the label (IoU)."""
    ious = {split: [] for split in vocab.splits}
    for vid, video in scope.truth.items():
        for label in labels_of(video):
            hits = scope.search(vectors[label], k=1, where=f"video_id = '{vid}'")
            best = max((iou(hits[0].start, hits[0].end, s["start"], s["end"]) for s in video["scenes"]
                        if s["label"] == label), default=0.0) if hits else 0.0
            ious[vocab.split_of(label)].append(best)
    return {split: moment_stats(v) for split, v in ious.items()} | {"all": moment_stats(sum(ious.values(), []))}


def boundary_figures(scope: Scope, sampling_interval: float) -> dict:
    """Scene starts found against the true cuts, within one sampling interval."""
    rows = scope.tables.segments().search().where(scope.where).select(
        ["video_id", "start", "starts_scene"]).limit(None).to_list()
    predicted: dict[str, list[float]] = {}
    for r in rows:
        if r["starts_scene"] and r["start"] > 0:
            predicted.setdefault(r["video_id"], []).append(r["start"])
    tp = n_pred = n_true = 0
    for vid, video in scope.truth.items():
        truth = [s["start"] for s in video["scenes"] if s["start"] > 0]
        a, b, c = boundary_scores(predicted.get(vid, []), truth, sampling_interval)
        tp, n_pred, n_true = tp + a, n_pred + b, n_true + c
    return prf(tp, n_pred, n_true)


def boundary_scores(predicted: list[float], truth: list[float], tolerance: float) -> tuple[int, int, int]:
    """(true positives, predicted, true): one-to-one greedy matching within ``tolerance`` seconds."""
    unmatched = sorted(truth)
    hits = 0
    for p in sorted(predicted):
        best = min(unmatched, key=lambda t: abs(t - p), default=None)
        if best is not None and abs(best - p) <= tolerance + 1e-6:
            unmatched.remove(best)
            hits += 1
    return hits, len(predicted), len(truth)


def prf(tp: int, n_pred: int, n_true: int) -> dict:
    precision = tp / n_pred if n_pred else 1.0
    recall = tp / n_true if n_true else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": round(precision, 4), "recall": round(recall, 4), "f1": round(f1, 4),
            "matched": tp, "predicted": n_pred, "true": n_true}


def rank_stats(ranks: list[int]) -> dict:
    if not ranks:
        return {"n": 0}
    arr = np.asarray(ranks)
    return {"n": len(ranks), "R@1": round(float((arr <= 1).mean()), 4), "R@5": round(float((arr <= 5).mean()), 4),
            "R@10": round(float((arr <= 10).mean()), 4), "median_rank": float(np.median(arr)),
            "mean_rank": round(float(arr.mean()), 3)}


def moment_stats(values: list[float]) -> dict:
    arr = np.asarray(values)
    return {"n": len(arr)} if not len(arr) else {
        "n": len(arr), "mIoU": round(float(arr.mean()), 4), "R@1,IoU>=0.5": round(float((arr >= 0.5).mean()), 4),
        "R@1,IoU>=0.7": round(float((arr >= 0.7).mean()), 4)}


# ---- MSR-VTT ---------------------------------------------------------------------------------------

def read_msrvtt_csv(csv_path: str | Path, videos_dir: str | Path) -> list[dict]:
    """MSR-VTT test CSV (columns ``video_id``, ``sentence``; e.g. the 1k-A split) -> queries with
    the video file each one should find (``<videos_dir>/<video_id>.<ext>``)."""
    videos_dir = Path(videos_dir)
    files = {p.stem: str(p.resolve()) for p in videos_dir.iterdir() if p.suffix.lower() in VIDEO_EXTENSIONS} \
        if videos_dir.is_dir() else {}
    if not files:
        raise InputError(f"No videos found in {videos_dir} (expected <video_id>.mp4 files)")
    with open(csv_path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        if not reader.fieldnames or not {"video_id", "sentence"} <= set(reader.fieldnames):
            raise InputError(f"{csv_path}: expected columns video_id,sentence; got {reader.fieldnames}")
        rows = [{"video_id": r["video_id"], "sentence": r["sentence"], "abspath": files.get(r["video_id"])}
                for r in reader]
    missing = [r["video_id"] for r in rows if r["abspath"] is None]
    if missing:
        raise InputError(f"{len(missing)} videos of {csv_path} are not in {videos_dir}, e.g. {missing[:3]}")
    return rows


def msrvtt_report(store: VideoStore, encoder, queries: list[dict], pooling: str = "mean") -> dict:
    """Text -> video R@1/5/10, median and mean rank, as reported for zero-shot CLIP on MSR-VTT."""
    rows = indexed_rows(store, encoder.spec.table_suffix)
    scope = Scope.of(store, encoder, [{"abspath": p} for p in sorted({q["abspath"] for q in queries})], pooling, rows)
    ranks = []
    vectors = encoder.encode_texts([q["sentence"] for q in queries])
    for query, vector in zip(queries, vectors):
        target = rows[query["abspath"]]["video_id"] if query["abspath"] in rows else None
        ranking = scope.search(vector, k=len(scope.truth), per_video=True)
        ranks.append(next((i + 1 for i, h in enumerate(ranking) if h.video_id == target), len(scope.truth) + 1))
    return {"model": encoder.model_key, "pooling": pooling, "videos": len(scope.truth),
            "retrieval": {"all": rank_stats(ranks)}}
