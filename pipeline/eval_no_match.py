"""How right the "no match" decision is (issue 17), measured on a labelled archive.

Search and classification answer "no match" / "none" when no hit's calibrated confidence clears
the threshold. These figures say how often that is right: every label of the caller's
``Vocabulary`` is searched among the archive's indexed videos, and a label no video shows should
answer "no match" while one that is shown should be found and marked a match. Also: queries of
other worlds (``out_of_world``), the reliability of the confidences, and open-set classification.
"""
from __future__ import annotations

import numpy as np

from .classify import ZeroShotClassifier, open_set_answer
from .confidence import MATCH_THRESHOLD
from .eval_truth import Scope, SplitTally, Tally, Vocabulary, indexed_rows, shows
from .search import segment_vectors
from .store import VideoStore

THRESHOLDS = tuple(round(float(t), 2) for t in np.arange(0.05, 1.0, 0.05))


def _rate(hits: int, n: int) -> dict:
    return {"rate": round(hits / n, 4) if n else None, "hits": int(hits), "n": int(n)}


def no_match_report(store: VideoStore, encoder, videos: list[dict], calibration, vocab: Vocabulary, k: int = 10,
                    templates: list[str] | None = None, out_of_world: tuple[str, ...] = (), seed: int = 0) -> dict:
    """How right "no match" is on the ground truth's indexed videos, per label of ``vocab``.

    Every label is searched (top ``k``, exact, restricted to these videos). A label is *present*
    when a scene of these videos shows it, else *absent*; a query answers "no match" when none of
    its ``k`` hits has confidence above the threshold. Reported at the threshold 0.5 (``match``),
    per split of ``vocab`` and overall: precision and recall of "no match" (absent = positive),
    the false-"no match" rate on present labels, the false-match rate on absent ones, R@1 (the top
    hit shows the label) and how often the top hit of a present label is marked ``match``; the same
    rates over the threshold (``curve``); the ``out_of_world`` queries; the reliability of
    the confidences (hits binned by confidence against how often they show the label, ECE); and
    open-set classification (``open_set_classification``)."""
    labels = list(vocab.labels)
    rows = indexed_rows(store, encoder.spec.table_suffix, ("video_id", "path", "vector"))
    scope = Scope.of(store, encoder, videos, rows=rows)
    videos = [v for v in videos if v["abspath"] in rows]
    present = {s["label"] for v in videos for s in v["scenes"]}
    vectors = dict(zip(labels, encoder.encode_texts(labels)))
    queries = []
    reliability = []  # (confidence, shows the label)
    for label in labels:
        hits = scope.search(vectors[label], k=k, text=label, calibration=calibration)
        confs = [h.confidence or 0.0 for h in hits]
        shown = [shows(scope.truth[h.video_id], label, h.start, h.end) for h in hits]
        reliability += list(zip(confs, shown))
        queries.append({"query": label, "split": vocab.split_of(label), "present": label in present,
                        "top1_shows": bool(shown and shown[0]), "top1_confidence": confs[0] if confs else 0.0,
                        "max_confidence": max(confs, default=0.0),
                        "top1_rivals": calibration.best_rivals(label, _hit_vector(scope, hits[0]))[0]
                        if hits else []})
    oow = []
    for text, vector in zip(out_of_world, encoder.encode_texts(list(out_of_world))):
        hits = scope.search(vector, k=k, text=text, calibration=calibration)
        oow.append({"query": text, "max_confidence": max((h.confidence or 0.0 for h in hits), default=0.0)})
    return {
        "model": encoder.model_key, "k": k, "videos": len(scope.truth), "labels_present": len(present & set(labels)),
        "labels_absent": len(set(labels) - present), "calibration": calibration.describe(),
        "threshold": MATCH_THRESHOLD, "at_threshold": _decide(queries, oow, vocab, MATCH_THRESHOLD),
        "curve": [{"threshold": t, **_decide(queries, oow, vocab, t)} for t in THRESHOLDS],
        "reliability": _reliability(reliability),
        "open_set_classification": open_set_classification(store, encoder, videos, calibration, vocab, templates,
                                                           seed=seed, rows=rows),
        "queries": queries, "out_of_world": oow,
    }


def _decide(queries: list[dict], oow: list[dict], vocab: Vocabulary, threshold: float) -> dict:
    """The "no match" rates of the searched ``queries`` if ``threshold`` decided, per split and overall."""
    out = {}
    for split in (*vocab.splits, "all"):
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


def _hit_vector(scope: Scope, hit) -> np.ndarray:
    found = segment_vectors(scope.store, scope.suffix, [(hit.video_id, hit.segment_index)])
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


def open_set_classification(store: VideoStore, encoder, videos: list[dict], calibration, vocab: Vocabulary,
                            templates: list[str] | None = None, small_sets: int = 3, seed: int = 0,
                            rows: dict[str, dict] | None = None) -> dict:
    """Each video classified from its stored segment vectors and clip vector, decided as `vidsift
    classify` decides a clip (``pipeline.classify``): "none" when no segment shows one of the set's
    labels (``Calibration.set_confidences`` over the classifier's label vectors, above
    ``MATCH_THRESHOLD``), else CLIP's top-1. Against the label set without its labels ("none" is
    right), against the whole set (the label answered, and the most probable label as before), and,
    for videos of several scenes, whether every label they show matches. ``rows``: ``indexed_rows``
    with the videos' vectors, when the caller has read them already."""
    labels = list(vocab.labels)
    if rows is None:
        rows = indexed_rows(store, encoder.spec.table_suffix, ("video_id", "path", "vector"))
    classifier = ZeroShotClassifier(encoder, labels, templates)
    vectors = classifier.label_vectors
    table = store.model(encoder.spec).segments()
    rng = np.random.default_rng(seed)
    none_full, none_small, top1, top1_before = (SplitTally(vocab) for _ in range(4))
    multi_all = Tally()

    def shows_one_of(indices, segs) -> bool:
        confidences = calibration.set_confidences([labels[i] for i in indices], vectors[indices], segs)
        return bool(confidences.max() > MATCH_THRESHOLD)

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
            multi_all.add(all(t in labels and matrix[labels.index(t)].max() > MATCH_THRESHOLD for t in truth))
    return {"none_without_true_label": none_full.to_dict(), "none_small_sets_without_true_label": none_small.to_dict(),
            "top1_with_none": top1.to_dict(), "top1_before": top1_before.to_dict(),
            "multi_scene_all_labels_match": multi_all.to_dict()}

