"""Measuring search and tagging against a shapes-world manifest (ground truth per scene).

Figures: text->video R@1 (query = a label, hit when the top-ranked video shows it), zero-shot
top-1 over the label set (clip vector = the stored video vector), and moment hit rate (the
top-ranked segment for a label overlaps a true scene of that label). Each is split into seen and
held-out colour-shape pairs.
"""
from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .classify import ZeroShotClassifier
from .errors import InputError
from .search import search_vector
from .segments import mean_pool
from .shapes_world import all_labels, is_heldout, parse_label
from .sources import VIDEO_EXTENSIONS
from .store import VideoStore, sql_in


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
                             where=_id_filter(single_ids), thumbnails=False)
        retrieval.add(label, bool(hits) and label in _labels_of(video_ids[hits[0].video_id]))
    if single:
        classifier = ZeroShotClassifier(encoder, labels, templates)
        vectors = np.stack([np.asarray(rows[v["abspath"]]["vector"], dtype=np.float32) for v in single])
        predicted = classifier.probabilities(vectors).argmax(axis=1)
        for video, index in zip(single, predicted):
            classification.add(video["scenes"][0]["label"], labels[index] == video["scenes"][0]["label"])
    multi_ids = {rows[v["abspath"]]["video_id"] for v in multi}
    for label in sorted({lab for v in multi for lab in _labels_of(v)}):
        hits = search_vector(store, suffix, label_vectors[label], k=1, where=_id_filter(multi_ids), thumbnails=False)
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
    return sql_in("video_id", sorted(ids))


def _overlap(a0: float, a1: float, b0: float, b1: float) -> float:
    return max(0.0, min(a1, b1) - max(a0, b0))


# ---- `vidsift eval`: the field's metrics ---------------------------------------------------------

def iou(a0: float, a1: float, b0: float, b1: float) -> float:
    inter = _overlap(a0, a1, b0, b1)
    union = max(a1, b1) - min(a0, b0)
    return inter / union if union > 0 else 0.0


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


def _prf(tp: int, n_pred: int, n_true: int) -> dict:
    precision = tp / n_pred if n_pred else 1.0
    recall = tp / n_true if n_true else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": round(precision, 4), "recall": round(recall, 4), "f1": round(f1, 4),
            "matched": tp, "predicted": n_pred, "true": n_true}


def _rank_stats(ranks: list[int]) -> dict:
    if not ranks:
        return {"n": 0}
    arr = np.asarray(ranks)
    return {"n": len(ranks), "R@1": round(float((arr <= 1).mean()), 4), "R@5": round(float((arr <= 5).mean()), 4),
            "R@10": round(float((arr <= 10).mean()), 4), "median_rank": float(np.median(arr)),
            "mean_rank": round(float(arr.mean()), 3)}


def full_report(store: VideoStore, encoder, videos: list[dict], labels: list[str] | None = None,
                templates: list[str] | None = None, sampling_interval: float = 1.0, pooling: str = "mean") -> dict:
    """Retrieval, zero-shot classification, moment localisation and boundary figures for the
    manifest's videos indexed in ``store``; each split into seen and held-out pairs where known."""
    labels = labels or all_labels()
    suffix = encoder.spec.table_suffix
    rows = {r["path"]: r for r in store.video_rows(suffix, ["video_id", "path"])}
    videos = [v for v in videos if v["abspath"] in rows]
    ids = {rows[v["abspath"]]["video_id"]: v for v in videos}
    id_filter = _id_filter(ids)
    queries = sorted({s["label"] for v in videos for s in v["scenes"]})
    vectors = dict(zip(queries, encoder.encode_texts(queries)))

    # text -> video: rank of the first video showing the label (the same for every video asking it)
    first_rank = {}
    for label in queries:
        ranking = search_vector(store, suffix, vectors[label], k=len(ids), per_video=True, where=id_filter,
                                exact=True, pooling=pooling, thumbnails=False)
        first_rank[label] = next((i + 1 for i, h in enumerate(ranking)
                                  if label in _labels_of(ids[h.video_id])), len(ids) + 1)
    retrieval = {"seen": [], "heldout": []}
    for v in videos:
        for label in _labels_of(v):
            retrieval[_split(label)].append(first_rank[label])

    # zero-shot per true scene, from the stored frame vectors inside it
    classifier = ZeroShotClassifier(encoder, labels, templates)
    frames: dict[str, list[dict]] = {}
    for row in store.frame_rows(suffix, list(ids), ["video_id", "time", "vector"]):
        frames.setdefault(row["video_id"], []).append(row)
    top1, top5 = {"seen": Tally(), "heldout": Tally()}, {"seen": Tally(), "heldout": Tally()}
    for vid, v in ids.items():
        f = frames.get(vid, [])
        times = np.array([r["time"] for r in f])
        for scene in v["scenes"]:
            inside = [np.asarray(r["vector"], dtype=np.float32) for r, t in zip(f, times)
                      if scene["start"] - 1e-6 <= t < scene["end"] - 1e-6]
            if not inside or scene["label"] not in labels:
                continue
            probs = classifier.probabilities(mean_pool(np.stack(inside)))[0]
            order = [labels[i] for i in np.argsort(-probs)]
            top1[_split(scene["label"])].add(order[0] == scene["label"])
            top5[_split(scene["label"])].add(scene["label"] in order[:5])

    # moments: the best moment for a label inside its video, against that video's scenes of the label
    ious = {"seen": [], "heldout": []}
    for vid, v in ids.items():
        for label in _labels_of(v):
            hits = search_vector(store, suffix, vectors[label], k=1, where=f"video_id = '{vid}'", exact=True,
                                 pooling=pooling, thumbnails=False)
            best = max((iou(hits[0].start, hits[0].end, s["start"], s["end"]) for s in v["scenes"]
                        if s["label"] == label), default=0.0) if hits else 0.0
            ious[_split(label)].append(best)

    # boundaries: scene starts found vs true cuts, within one sampling interval
    seg_rows = store.segments_table(suffix).search().where(id_filter).select(
        ["video_id", "start", "starts_scene"]).limit(None).to_list()
    predicted: dict[str, list[float]] = {}
    for r in seg_rows:
        if r["starts_scene"] and r["start"] > 0:
            predicted.setdefault(r["video_id"], []).append(r["start"])
    tp = n_pred = n_true = 0
    for vid, v in ids.items():
        truth = [s["start"] for s in v["scenes"] if s["start"] > 0]
        a, b, c = boundary_scores(predicted.get(vid, []), truth, sampling_interval)
        tp, n_pred, n_true = tp + a, n_pred + b, n_true + c

    def moment_stats(values):
        arr = np.asarray(values)
        return {"n": len(arr)} if not len(arr) else {
            "n": len(arr), "mIoU": round(float(arr.mean()), 4), "R@1,IoU>=0.5": round(float((arr >= 0.5).mean()), 4),
            "R@1,IoU>=0.7": round(float((arr >= 0.7).mean()), 4)}

    return {
        "model": encoder.model_key, "pooling": pooling, "videos": len(ids),
        "scenes": sum(len(v["scenes"]) for v in ids.values()),
        "retrieval": {k: _rank_stats(v) for k, v in retrieval.items()} | {"all": _rank_stats(sum(retrieval.values(), []))},
        "zero_shot": {k: {"top1": top1[k].to_dict(), "top5": top5[k].to_dict()} for k in top1},
        "localisation": {k: moment_stats(v) for k, v in ious.items()} | {"all": moment_stats(sum(ious.values(), []))},
        "boundaries": _prf(tp, n_pred, n_true),
    }


def _split(label: str) -> str:
    try:
        return "heldout" if is_heldout(*parse_label(label)) else "seen"
    except ValueError:
        return "seen"


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
    suffix = encoder.spec.table_suffix
    rows = {r["path"]: r["video_id"] for r in store.video_rows(suffix, ["video_id", "path"])}
    ids = sorted({rows[q["abspath"]] for q in queries if q["abspath"] in rows})
    where = _id_filter(ids)
    ranks = []
    vectors = encoder.encode_texts([q["sentence"] for q in queries])
    for query, vector in zip(queries, vectors):
        target = rows.get(query["abspath"])
        ranking = search_vector(store, suffix, vector, k=len(ids), per_video=True, where=where, exact=True,
                                pooling=pooling, thumbnails=False)
        ranks.append(next((i + 1 for i, h in enumerate(ranking) if h.video_id == target), len(ids) + 1))
    return {"model": encoder.model_key, "pooling": pooling, "videos": len(ids),
            "retrieval": {"all": _rank_stats(ranks)}}
