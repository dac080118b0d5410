#!/usr/bin/env python
"""The "no match" decision by the alternatives issue 17 weighed, on the archives bench/eval_confidence.py
rendered and indexed (fresh seeds), with the same queries and the same figures:

- ``flat cosine, oracle``: one cosine cut-off for the model, the best one for these very labels (chosen
  with the answers, which a user never has: an upper bound for any flat threshold);
- ``flat cosine, fitted``: a per-model cut-off fitted on each archive without labels (Otsu's split of
  the best cosine every phrase of the model's vocabulary reaches in the archive: what describes
  something present scores high, the rest low);
- ``content-free null``: the query against generic distractor texts only ("a photo.", "something."...),
  scored on the same candidates (no rival descriptions);
- ``rivals (default)`` and ``rivals (fitted)``: vidsift's confidence (pipeline/confidence.py);
- variants of it weighed for the absent labels the model confuses (issue 17, second round), all on
  the default rivals: ``all rivals summed`` (the softmax over every rival, not the best one);
  ``margin 0.03/0.05`` (the query must beat its best rival by that cosine; a constant per model,
  shown to see the trade-off); ``near-neighbour queries`` (rivals also the query with one content
  word swapped for each word of the bank, in the query's own wording, embedded at query time);
  ``prompt ensembles`` (the query and the rivals each the mean of classify's 8 templates, as CLIP
  embeds labels; the query's embedded at query time; a rival scores the best of its bare phrase and
  its ensemble); ``prompt ensembles, like for like`` (the same, the rivals as ensembles only: every
  text compared is embedded the same way); ``prompt-ensemble rivals, plain query`` (the rivals'
  ensembles, computed once per model, against the plain query: no text embedded at query time).

    .venv/bin/python bench/confidence_alternatives.py /tmp/eval-confidence
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import numpy as np

from vidsift.models.encoder import ClipEncoder
from vidsift.models.spec import resolve_spec
from vidsift.pipeline.confidence import load_calibration
from vidsift.pipeline.confidence_bank import default_bank, encode_texts, no_rivals
from vidsift.pipeline.confidence_fit import load_fitted_bank
from vidsift.pipeline.confidence_words import STOP_WORDS, content_words
from vidsift.pipeline.eval_truth import id_filter, shows
from vidsift.pipeline.prompt_templates import prompt_ensembles
from vidsift.pipeline.search import search_vector, segment_vectors
from vidsift.pipeline.shapes.manifest import load_manifest
from vidsift.pipeline.shapes.world import OUT_OF_WORLD_QUERIES, all_labels, split_of
from vidsift.pipeline.store import VideoStore


def otsu(values: np.ndarray) -> float:
    """The cut that best splits ``values`` in two groups (largest between-group variance)."""
    values = np.sort(np.asarray(values, dtype=np.float64))
    best, cut = -1.0, float(values.mean())
    for i in range(1, len(values)):
        low, high = values[:i], values[i:]
        between = len(low) * len(high) * (low.mean() - high.mean()) ** 2
        if between > best:
            best, cut = between, float((values[i - 1] + values[i]) / 2)
    return cut


def variant_confidences(name: str, calibration, text: str, vector: np.ndarray, hits: np.ndarray, extra) -> np.ndarray:
    """The confidences of one variant of the rival rule (see the module's notes) on the hits' vectors."""
    content = content_words(text)
    if not content:
        return np.zeros(len(hits))
    s, bank = calibration.logit_scale, calibration.bank
    q = hits @ (vector / np.linalg.norm(vector))
    c = (hits @ calibration.content_free.T).max(axis=1)
    mask = bank.valid_for(content)
    rivals = hits @ bank.vectors[mask].T
    if name == "all rivals summed":
        rival = np.exp(np.clip(s * (rivals - q[:, None]), -80, 80)).sum(axis=1)
    elif name.startswith("margin"):
        rival = np.exp(np.clip(s * (rivals.max(axis=1) + float(name.split()[1]) - q), -80, 80))
    elif name == "near-neighbour queries":
        swapped = extra["swaps"](text)
        best = rivals.max(axis=1)
        if len(swapped):
            best = np.maximum(best, (hits @ swapped.T).max(axis=1))
        rival = np.exp(np.clip(s * (best - q), -80, 80))
    elif name == "prompt ensembles":
        q = hits @ extra["ensemble"]([text])[0]
        best = np.maximum(rivals.max(axis=1), (hits @ extra["bank_ensemble"][mask].T).max(axis=1))
        rival = np.exp(np.clip(s * (best - q), -80, 80))
    elif name == "prompt-ensemble rivals, plain query":
        rival = np.exp(np.clip(s * ((hits @ extra["bank_ensemble"][mask].T).max(axis=1) - q), -80, 80))
    elif name == "prompt ensembles, like for like":
        q = hits @ extra["ensemble"]([text])[0]
        rival = np.exp(np.clip(s * ((hits @ extra["bank_ensemble"][mask].T).max(axis=1) - q), -80, 80))
    else:
        raise ValueError(name)
    return 1.0 / (1.0 + np.exp(np.clip(s * (c - q), -80, 80)) + rival)


VARIANTS = ("all rivals summed", "margin 0.03", "margin 0.05", "near-neighbour queries", "prompt ensembles",
            "prompt ensembles, like for like", "prompt-ensemble rivals, plain query")


def variant_helpers(encoder, bank) -> dict:
    """Query-time texts of the variants: near-neighbour queries and prompt ensembles."""
    words = [p for p in bank.phrases if " " not in p]

    def ensemble(texts):
        return prompt_ensembles(encoder, list(texts))

    def swaps(text):
        tokens = re.findall(r"[A-Za-z0-9']+|[^A-Za-z0-9']+", text)
        own = content_words(text)
        out = []
        for i, token in enumerate(tokens):
            if not token.isalpha() or token.lower() in STOP_WORDS:
                continue
            for word in words:
                if content_words(word) <= own:
                    continue
                new = "".join(tokens[:i] + [word] + tokens[i + 1:])
                out.append(re.sub(r"\ban (?=[^aeiou\s])", "a ", re.sub(r"\ba (?=[aeiou])", "an ", new)))
        return encode_texts(encoder, out) if out else np.zeros((0, bank.vectors.shape[1]), np.float32)

    return {"ensemble": ensemble, "bank_ensemble": ensemble(bank.phrases), "swaps": swaps}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", help="the --out folder of bench/eval_confidence.py")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--model", default="shapes-tiny")
    parser.add_argument("--out", default=None, help="JSON file (default: ROOT/alternatives.json)")
    args = parser.parse_args(argv)

    encoder = ClipEncoder.from_spec(resolve_spec(args.model))
    suffix = encoder.spec.table_suffix
    labels = all_labels()
    label_vectors = dict(zip(labels, encoder.encode_texts(labels)))
    oow_vectors = dict(zip(OUT_OF_WORLD_QUERIES, encoder.encode_texts(list(OUT_OF_WORLD_QUERIES))))
    default = default_bank(encoder)
    helpers = variant_helpers(encoder, default)
    rows = []  # one per (archive, query): kind, split, top-1 cosine, per-method max/top-1 confidence
    for root in sorted(Path(args.root).glob("archive-*")):
        _, videos = load_manifest(root)
        store = VideoStore(str(root / "db"))
        ids = {r["path"]: r["video_id"] for r in store.model(encoder.spec).video_rows(["video_id", "path"])}
        by_id = {ids[v["abspath"]]: v for v in videos if v["abspath"] in ids}
        where = id_filter(by_id)
        present = {s["label"] for v in by_id.values() for s in v["scenes"]}
        fitted = load_fitted_bank(store, suffix)
        methods = {"content-free null": load_calibration(store, encoder, bank=no_rivals(encoder.embed_dim)),
                   "rivals (default)": load_calibration(store, encoder, bank=default)}
        if fitted is not None:
            methods["rivals (fitted)"] = load_calibration(store, encoder, bank=fitted)
        # per-archive flat cut-off without labels: Otsu over the best cosine of each vocabulary phrase
        seg = store.model(encoder.spec).segments().to_lance().to_table(columns=["vector"]).column("vector")
        x = np.asarray(seg.combine_chunks().flatten().to_numpy(zero_copy_only=False), np.float32)
        x = x.reshape(len(seg), -1)
        fitted_cut = otsu((x @ default.vectors.T).max(axis=0))
        for text, vector, kind in [(q, label_vectors[q], "present" if q in present else "absent") for q in labels] + \
                                  [(q, oow_vectors[q], "out-of-world") for q in OUT_OF_WORLD_QUERIES]:
            hits = search_vector(store, suffix, vector, k=args.k, where=where, exact=True, thumbnails=False)
            found = segment_vectors(store, suffix, [(h.video_id, h.segment_index) for h in hits])
            hv = np.stack([found[(h.video_id, h.segment_index)] for h in hits])
            row = {"archive": root.name, "query": text, "kind": kind, "split": split_of(text) if kind != "out-of-world"
                   else "-", "top1_cosine": hits[0].score, "fitted_cut": fitted_cut,
                   "top1_shows": kind == "present" and shows(by_id[hits[0].video_id], text, hits[0].start, hits[0].end)}
            for name, calibration in methods.items():
                conf = calibration.confidences(text, vector, hv)
                row[name] = {"max": float(conf.max()), "top1": float(conf[0])}
            for name in VARIANTS:
                conf = variant_confidences(name, methods["rivals (default)"], text, vector, hv, helpers)
                row[name] = {"max": float(conf.max()), "top1": float(conf[0])}
            rows.append(row)
        print(f"{root.name}: {len(by_id)} videos, {len(present)} labels present, fitted cut {fitted_cut:.3f}", flush=True)

    def rate(selected, ok):
        n = len(selected)
        hits = sum(1 for r in selected if ok(r))
        return {"rate": round(hits / n, 4) if n else None, "hits": hits, "n": n}

    def figures(no_match, top1_match) -> dict:
        out = {}
        for split in ("seen", "heldout"):
            absent = [r for r in rows if r["kind"] == "absent" and r["split"] == split]
            present = [r for r in rows if r["kind"] == "present" and r["split"] == split]
            out[split] = {"absent_no_match": rate(absent, no_match),
                          "present_top1_match": rate(present, top1_match)}
        out["out_of_world_no_match"] = rate([r for r in rows if r["kind"] == "out-of-world"], no_match)
        return out

    cosines = sorted({round(r["top1_cosine"], 3) for r in rows})

    def worst(cut):
        f = figures(lambda r: r["top1_cosine"] <= cut, lambda r: r["top1_cosine"] > cut)
        return min(f[s][k]["rate"] for s in ("seen", "heldout") for k in ("absent_no_match", "present_top1_match"))

    oracle = max(cosines, key=worst)
    results = {
        f"flat cosine, oracle (cut {oracle:.3f}, chosen with the labels)":
            figures(lambda r: r["top1_cosine"] <= oracle, lambda r: r["top1_cosine"] > oracle),
        "flat cosine, fitted per archive without labels (Otsu)":
            figures(lambda r: r["top1_cosine"] <= r["fitted_cut"], lambda r: r["top1_cosine"] > r["fitted_cut"]),
    }
    for name in ("content-free null", "rivals (default)", "rivals (fitted)", *VARIANTS):
        if name in rows[0]:
            results[name] = figures(lambda r, n=name: r[n]["max"] <= 0.5, lambda r, n=name: r[n]["top1"] > 0.5)
    out = Path(args.out) if args.out else Path(args.root) / "alternatives.json"
    out.write_text(json.dumps({"k": args.k, "model": encoder.model_key, "results": results, "rows": rows}, indent=2))

    def f(cell):
        return f"{cell['rate']:.3f} ({cell['hits']}/{cell['n']})"

    print(f"\n{'method':<62}{'absent: no match':<38}{'present: top hit match':<38}out-of-world")
    print(f"{'':<62}{'seen':<19}{'held-out':<19}{'seen':<19}{'held-out':<19}")
    for name, r in results.items():
        print(f"{name:<62}{f(r['seen']['absent_no_match']):<19}{f(r['heldout']['absent_no_match']):<19}"
              f"{f(r['seen']['present_top1_match']):<19}{f(r['heldout']['present_top1_match']):<19}"
              f"{f(r['out_of_world_no_match'])}")
    print(f"written {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
