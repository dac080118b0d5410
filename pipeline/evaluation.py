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


# ---- the "no match" decision (issue 17) ------------------------------------------------------

# Queries no shapes-world video shows: things of other worlds, gibberish, and words that are all
# stop words (nothing left to look for).
OUT_OF_WORLD_QUERIES = (
    "an airplane", "a bowl of soup", "a dog catching a frisbee", "a person talking", "a city street at night",
    "a sunset over the sea", "a birthday cake", "people dancing", "a red car", "a green forest",
    "xq zzv kk", "blorp fnargle", "qwerty uiop", "zzz",
    "the of and", "a", "a photo of the",
)
THRESHOLDS = tuple(round(float(t), 2) for t in np.arange(0.05, 1.0, 0.05))


def _shows(video: dict, label: str, start: float, end: float) -> bool:
    """The scene overlapping [start, end] the most is one of ``label``."""
    best = max(video["scenes"], key=lambda s: _overlap(start, end, s["start"], s["end"]), default=None)
    return best is not None and best["label"] == label and _overlap(start, end, best["start"], best["end"]) > 0


def _rate(hits: int, n: int) -> dict:
    return {"rate": round(hits / n, 4) if n else None, "hits": int(hits), "n": int(n)}


def no_match_report(store: VideoStore, encoder, videos: list[dict], calibration, k: int = 10,
                    labels: list[str] | None = None, templates: list[str] | None = None,
                    out_of_world: tuple[str, ...] = OUT_OF_WORLD_QUERIES, seed: int = 0) -> dict:
    """How right "no match" is on the manifest's indexed videos, per label of the shapes world.

    Every label is searched (top ``k``, exact, restricted to these videos). A label is *present*
    when a scene of these videos shows it, else *absent*; a query answers "no match" when none of
    its ``k`` hits has confidence above the threshold. Reported at the threshold 0.5 (``match``),
    split into seen and held-out pairs: precision and recall of "no match" (absent = positive),
    the false-"no match" rate on present labels, the false-match rate on absent ones, R@1 (the top
    hit shows the label) and how often the top hit of a present label is marked ``match``; the same
    rates over the threshold (``curve``); out-of-world and gibberish queries; the reliability of
    the confidences (hits binned by confidence against how often they show the label, ECE); and
    open-set classification: clips against the labels without theirs (answer "none"), and with
    them (top-1: the label answered, against the most probable label as before)."""
    labels = labels or all_labels()
    suffix = encoder.spec.table_suffix
    rows = {r["path"]: r for r in store.video_rows(suffix, ["video_id", "path", "vector"])}
    videos = [v for v in videos if v["abspath"] in rows]
    ids = {rows[v["abspath"]]["video_id"]: v for v in videos}
    where = _id_filter(ids)
    present = {s["label"] for v in videos for s in v["scenes"]}
    vectors = dict(zip(labels, encoder.encode_texts(labels)))
    queries = []
    reliability = []  # (confidence, shows the label)
    for label in labels:
        hits = search_vector(store, suffix, vectors[label], k=k, where=where, exact=True, thumbnails=False,
                             text=label, calibration=calibration)
        confs = [h.confidence or 0.0 for h in hits]
        shows = [_shows(ids[h.video_id], label, h.start, h.end) for h in hits]
        reliability += list(zip(confs, shows))
        queries.append({"query": label, "split": _split(label), "present": label in present,
                        "top1_shows": bool(shows and shows[0]), "top1_confidence": confs[0] if confs else 0.0,
                        "max_confidence": max(confs, default=0.0),
                        "top1_rivals": calibration.best_rivals(label, _hit_vector(store, suffix, hits[0]))[0]
                        if hits else []})
    oow = []
    for text, vector in zip(out_of_world, encoder.encode_texts(list(out_of_world))):
        hits = search_vector(store, suffix, vector, k=k, where=where, exact=True, thumbnails=False,
                             text=text, calibration=calibration)
        oow.append({"query": text, "max_confidence": max((h.confidence or 0.0 for h in hits), default=0.0)})

    def decide(threshold: float) -> dict:
        out = {}
        for split in ("seen", "heldout", "all"):
            qs = [q for q in queries if split == "all" or q["split"] == split]
            pres = [q for q in qs if q["present"]]
            absent = [q for q in qs if not q["present"]]
            said_none = [q for q in qs if q["max_confidence"] <= threshold]
            right_none = [q for q in said_none if not q["present"]]
            out[split] = {
                "no_match_precision": _rate(len(right_none), len(said_none)),
                "no_match_recall": _rate(len(right_none), len(absent)),
                "false_no_match_present": _rate(sum(q["max_confidence"] <= threshold for q in pres), len(pres)),
                "false_match_absent": _rate(sum(q["max_confidence"] > threshold for q in absent), len(absent)),
                "present_top1_match": _rate(sum(q["top1_confidence"] > threshold for q in pres), len(pres)),
                "present_R@1": _rate(sum(q["top1_shows"] for q in pres), len(pres)),
            }
        out["out_of_world_no_match"] = _rate(sum(q["max_confidence"] <= threshold for q in oow), len(oow))
        return out

    from .confidence import MATCH_THRESHOLD

    return {
        "model": encoder.model_key, "k": k, "videos": len(ids), "labels_present": len(present & set(labels)),
        "labels_absent": len(set(labels) - present), "calibration": calibration.describe(),
        "threshold": MATCH_THRESHOLD, "at_threshold": decide(MATCH_THRESHOLD),
        "curve": [{"threshold": t, **decide(t)} for t in THRESHOLDS],
        "reliability": _reliability(reliability),
        "open_set_classification": open_set_classification(store, encoder, videos, calibration, labels, templates,
                                                           seed=seed),
        "queries": queries, "out_of_world": oow,
    }


def _hit_vector(store: VideoStore, suffix: str, hit) -> np.ndarray:
    from .search import segment_vectors

    found = segment_vectors(store, suffix, [(hit.video_id, hit.segment_index)])
    return found[(hit.video_id, hit.segment_index)][None, :]


def _reliability(pairs: list[tuple[float, bool]], bins: int = 10) -> dict:
    """Hits binned by confidence: mean confidence against the fraction that show the label; ECE."""
    out, ece = [], 0.0
    for b in range(bins):
        lo, hi = b / bins, (b + 1) / bins
        inside = [(c, ok) for c, ok in pairs if lo <= c < hi or (b == bins - 1 and c == 1.0)]
        if not inside:
            continue
        mean_c = float(np.mean([c for c, _ in inside]))
        frac = float(np.mean([ok for _, ok in inside]))
        ece += len(inside) / len(pairs) * abs(mean_c - frac)
        out.append({"bin": f"{lo:.1f}-{hi:.1f}", "n": len(inside), "mean_confidence": round(mean_c, 4),
                    "shows_label": round(frac, 4)})
    return {"bins": out, "ece": round(ece, 4), "n": len(pairs)}


def open_set_classification(store: VideoStore, encoder, videos: list[dict], calibration,
                            labels: list[str] | None = None, templates: list[str] | None = None,
                            small_sets: int = 3, seed: int = 0) -> dict:
    """Each video classified from its stored segment vectors and clip vector, decided as `vidsift
    classify` decides a clip (``pipeline.classify``): "none" when no segment shows one of the set's
    labels (``Calibration.set_confidences`` over the classifier's label vectors, > 0.5), else CLIP's
    top-1. Against the label set without its labels ("none" is right), against the whole set (the
    label answered, and the most probable label as before), and, for videos of several scenes,
    whether every label they show matches."""
    from .classify import ZeroShotClassifier, open_set_answer

    labels = labels or all_labels()
    suffix = encoder.spec.table_suffix
    rows = {r["path"]: r for r in store.video_rows(suffix, ["video_id", "path", "vector"])}
    classifier = ZeroShotClassifier(encoder, labels, templates)
    vectors = classifier.label_vectors
    table = store.segments_table(suffix)
    rng = np.random.default_rng(seed)
    none_full, none_small, top1, top1_before = SplitTally(), SplitTally(), SplitTally(), SplitTally()
    multi_all = Tally()

    def shows_one_of(indices, segs) -> bool:
        return bool(calibration.set_confidences([labels[i] for i in indices], vectors[indices], segs).max() > 0.5)

    for video in videos:
        row = rows.get(video["abspath"])
        if row is None:
            continue
        seg = table.search().where(f"video_id = '{row['video_id']}'").select(["vector"]).limit(None).to_arrow()
        segs = np.asarray(seg.column("vector").combine_chunks().flatten().to_numpy(zero_copy_only=False),
                          dtype=np.float32).reshape(seg.num_rows, -1)
        if not len(segs):
            continue
        matrix = calibration.confidence_matrix(labels, vectors, segs)  # (labels, segments)
        truth = sorted({s["label"] for s in video["scenes"]})
        if len(truth) == 1:
            label = truth[0]
            others = [i for i, name in enumerate(labels) if name != label]
            none_full.add(label, not shows_one_of(others, segs))
            for _ in range(small_sets):
                picked = [int(i) for i in rng.choice(others, size=int(rng.integers(2, 6)), replace=False)]
                none_small.add(label, not shows_one_of(picked, segs))
            probs = classifier.probabilities(np.asarray(row["vector"], dtype=np.float32))[0]
            answer, _ = open_set_answer(labels, probs, list(classifier.probabilities(segs)), matrix,
                                        calibration.set_confidences(labels, vectors, segs))
            top1.add(label, answer == label)
            top1_before.add(label, labels[int(np.argmax(probs))] == label)
        else:
            multi_all.add(all(t in labels and matrix[labels.index(t)].max() > 0.5 for t in truth))
    return {"none_without_true_label": none_full.to_dict(), "none_small_sets_without_true_label": none_small.to_dict(),
            "top1_with_none": top1.to_dict(), "top1_before": top1_before.to_dict(),
            "multi_scene_all_labels_match": multi_all.to_dict()}


def format_no_match(report: dict) -> str:
    """The human lines of ``no_match_report`` (at the threshold, seen / held-out / all)."""
    at = report["at_threshold"]

    def f(cell):
        return "   -  " if cell["rate"] is None else f"{cell['rate']:.3f} ({cell['hits']}/{cell['n']})"

    cal = report["calibration"]
    lines = [f"no match (top {report['k']}, confidence > {report['threshold']:g} = match; calibration: "
             f"{cal['source']}; {report['labels_present']} labels present, {report['labels_absent']} absent)"]
    names = [("absent answered no match", "no_match_recall"), ("no match precision", "no_match_precision"),
             ("false no match, present", "false_no_match_present"), ("false match, absent", "false_match_absent"),
             ("present: top hit marked match", "present_top1_match"), ("present: R@1", "present_R@1")]
    lines.append(f"  {'':<32}{'seen':<20}{'held-out':<20}all")
    for title, key in names:
        lines.append(f"  {title:<32}{f(at['seen'][key]):<20}{f(at['heldout'][key]):<20}{f(at['all'][key])}")
    lines.append(f"  out-of-world/gibberish no match  {f(at['out_of_world_no_match'])}")
    osc = report["open_set_classification"]
    lines.append(f"  classify without the true label: none {f(osc['none_without_true_label']['seen'])} seen, "
                 f"{f(osc['none_without_true_label']['heldout'])} held-out; small sets "
                 f"{f(osc['none_small_sets_without_true_label']['seen'])} seen, "
                 f"{f(osc['none_small_sets_without_true_label']['heldout'])} held-out")
    lines.append(f"  classify top-1 with none {f(osc['top1_with_none']['seen'])} seen, "
                 f"{f(osc['top1_with_none']['heldout'])} held-out (before: {f(osc['top1_before']['seen'])}, "
                 f"{f(osc['top1_before']['heldout'])})")
    if osc["multi_scene_all_labels_match"]["n"]:
        lines.append(f"  multi-scene clips with every shown label matched {f(osc['multi_scene_all_labels_match'])}")
    lines.append(f"  reliability: ECE {report['reliability']['ece']:.3f} over {report['reliability']['n']} hits")
    return "\n".join(lines)
