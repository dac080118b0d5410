#!/usr/bin/env python
"""Search latency and recall at scale, through vidsift's own search (``pipeline.search.search_vector``,
k=10 with thumbnails: what the app and ``vidsift search`` run once the query is embedded).

Fills a segments table with N synthetic 512-d unit vectors (clustered, like real embeddings:
videos of similar content sit together) and 3 KB thumbnails (a real one is 2-4 KB), then for
each N: exact search latency, ANN index build time, ANN latency p50/p95 and recall@10 against
exact search (``bypass_vector_index``), with and without a prefilter on the path. Beside the ANN
search it times the reference path, the same searches through a store without the in-memory
catalog (``search_catalog=False``: lance reads every column of the candidates, as every search
did before ``pipeline.catalog``), on the same table and queries.

    .venv/bin/python bench/search_scale.py --sizes 10000 100000 1000000 --out bench/results/search.json
    .venv/bin/python bench/search_scale.py --sizes 1000000 --kinds ivf_sq ivf_pq   # compare index kinds
    .venv/bin/python bench/search_scale.py --sizes 1000000 --queries 30 --only-confidence  # confidence's cost
    .venv/bin/python bench/search_scale.py --sizes 1000000 --queries 40 --only-confidence \
        --query-model ViT-B-32 --query-pretrained none   # with the text embedding and its prompt ensemble
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import print_table, write_json  # noqa: E402

from vidsift.models.encoder import ClipEncoder  # noqa: E402
from vidsift.models.spec import resolve_spec  # noqa: E402
from vidsift.pipeline.catalog import SegmentCatalog  # noqa: E402
from vidsift.pipeline.confidence import CONTENT_FREE_PROMPTS, Calibration, query_ensemble  # noqa: E402
from vidsift.pipeline.confidence_bank import RivalBank  # noqa: E402
from vidsift.pipeline.prompt_templates import DEFAULT_TEMPLATES  # noqa: E402
from vidsift.pipeline.search import search_vector  # noqa: E402
from vidsift.pipeline.ann_index import VectorIndexConfig, build_filter_indexes  # noqa: E402
from vidsift.pipeline.model_store import ModelRef  # noqa: E402
from vidsift.pipeline.records import SEGMENT  # noqa: E402
from vidsift.pipeline.store import VideoStore  # noqa: E402

DIM = 512
SUFFIX = "bench"
MODEL = ModelRef("bench", SUFFIX)  # the vectors are made here: a model known by key and table suffix alone
THUMBNAIL_BYTES = 3000


def clustered(n: int, rng: np.random.Generator, centres: np.ndarray, spread: float = 0.35) -> np.ndarray:
    picks = rng.integers(0, len(centres), n)
    vectors = centres[picks] + spread * rng.normal(size=(n, DIM)).astype(np.float32) / np.sqrt(DIM)
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


def fill(store: VideoStore, n: int, rng, centres, batch: int = 100_000) -> None:
    table = store.model(MODEL).segments(DIM)
    for begin in range(0, n, batch):
        size = min(batch, n - begin)
        vectors = clustered(size, rng, centres)
        ids = np.arange(begin, begin + size)
        data = pa.table({
            "segment_id": pa.array([f"v{i // 10}:{i % 10:05d}" for i in ids]),
            "video_id": pa.array([f"v{i // 10}" for i in ids]),
            "path": pa.array([f"/archive/folder{i % 100:02d}/v{i // 10}.mp4" for i in ids]),
            "segment_index": pa.array(ids % 10, pa.int32()),
            "start": pa.array((ids % 10) * 10.0), "end": pa.array((ids % 10) * 10.0 + 10.0),
            "n_frames": pa.array(np.full(size, 10), pa.int32()),
            "starts_scene": pa.array(np.ones(size, bool)),
            "model": pa.array(["bench"] * size), "tags": pa.array([[]] * size, pa.list_(pa.string())),
            "thumbnail": pa.array([t.tobytes() for t in rng.integers(0, 256, (size, THUMBNAIL_BYTES), np.uint8)],
                                  pa.binary()),
            "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), DIM),
        }, schema=SEGMENT.schema(DIM))
        table.add(data)


def timed_search(store, queries, where, exact):
    search_vector(store, SUFFIX, queries[0], k=10, where=where, exact=exact)  # catalog loaded, caches warm
    latencies, results = [], []
    for q in queries:
        t = time.perf_counter()
        hits = search_vector(store, SUFFIX, q, k=10, where=where, exact=exact)
        latencies.append((time.perf_counter() - t) * 1000)
        results.append([f"{h.video_id}:{h.segment_index:05d}" for h in hits])
    return np.array(latencies), results


def timed_reference(store, queries) -> np.ndarray:
    """The same searches through a store without the catalog: lance reads every column of the
    candidates (how every search ran before ``pipeline.catalog``; what ``vidsift search`` does)."""
    plain = VideoStore(store.uri, vector_index=store.vector_index, search_catalog=False)
    return timed_search(plain, queries, None, exact=False)[0]


def bench_calibrations(rivals: int, rng, encoder=None) -> dict:
    """Calibrations shaped like a fitted one for a 512-d model: 8 content-free prompts and ``rivals``
    phrases (random unit vectors, two words each), CLIP's logit scale. ``confidence``: the shipped
    rule; with an ``encoder`` also ``confidence, ensembles``: the rivals have prompt ensembles and
    each query is weighed as its own, embedded by ``encoder`` at query time
    (``load_calibration(..., ensembles=True)``)."""
    def units(n):
        v = rng.normal(size=(n, DIM)).astype(np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    phrases = [f"word{i % 97} thing{i}" for i in range(rivals)]
    plain = Calibration(logit_scale=100.0, content_free=units(len(CONTENT_FREE_PROMPTS)),
                        bank=RivalBank(phrases, units(rivals), "fitted"), model="bench")
    if encoder is None:
        return {"confidence": plain}
    return {"confidence": plain, "confidence, ensembles": dataclasses.replace(
        plain, bank=dataclasses.replace(plain.bank, ensembles=units(rivals)),
        embed_query=functools.partial(query_ensemble, encoder, DEFAULT_TEMPLATES))}


def timed_confidence(store, queries, calibrations: dict, text="a dog catching a frisbee", encoder=None
                     ) -> dict[str, np.ndarray]:
    """Latencies (ms) of the plain search and of the search with each calibration's confidence (the
    store returns the hits' vectors with the hits: ``ModelTables.search_segments(..., vectors=True)``),
    alternating query by query so that load on the machine hits all alike. With an ``encoder`` each
    first embeds the query text, as `vidsift search` does (a calibration with prompt ensembles then
    also embeds the query's ensemble)."""
    ways = {"plain": {}, **{name: {"text": text, "calibration": c} for name, c in calibrations.items()}}
    for kwargs in ways.values():
        search_vector(store, SUFFIX, queries[0], k=10, **kwargs)  # warm (catalog, caches)
    times = {name: [] for name in ways}
    for q in queries:
        for name, kwargs in ways.items():
            t = time.perf_counter()
            if encoder is not None:
                encoder.encode_texts([text])  # the query's own vector (the bench searches with q)
            hits = search_vector(store, SUFFIX, q, k=10, **kwargs)
            times[name].append((time.perf_counter() - t) * 1000)
            assert all((h.confidence is not None) == bool(kwargs) for h in hits)
    return {name: np.array(values) for name, values in times.items()}


def recall(truth, found) -> float:
    return float(np.mean([len(set(t) & set(f)) / max(len(t), 1) for t, f in zip(truth, found)]))


def build(store) -> tuple[str, float]:
    t = time.perf_counter()
    description = store.model(MODEL).build_vector_index()
    return description, time.perf_counter() - t


def measure(store, n, kind, built, queries, truth, truth_f, where, compare_btree=False, calibrations=None,
            only_confidence=False, encoder=None) -> dict:
    description, build_s = built
    confidence = {}
    if calibrations:
        times = timed_confidence(store, queries, calibrations, encoder=encoder)
        p50 = {name: float(np.median(values)) for name, values in times.items()}
        confidence = {"rivals": len(calibrations["confidence"].bank.phrases), "plain_p50_ms": round(p50["plain"], 2),
                      "query_text_embedded": encoder is not None}
        for name in calibrations:
            key = name.replace(", ", "_")
            confidence |= {f"{key}_p50_ms": round(p50[name], 2),
                           f"{key}_p95_ms": round(float(np.percentile(times[name], 95)), 2),
                           f"{key}_over_plain_p50": round(p50[name] / p50["plain"], 3)}
    if only_confidence:
        ann = store.vector_index
        return {"n": n, "index": kind, "nprobes": ann.nprobes, "refine": ann.refine_factor,
                "description": description, "build_s": round(build_s, 1), **confidence}
    ann_ms, found = timed_search(store, queries, None, exact=False)
    ann_f_ms, found_f = timed_search(store, queries, where, exact=False)
    reference_ms = timed_reference(store, queries)
    ann_again_ms, _ = timed_search(store, queries, None, exact=False)  # interleaved, so drift shows
    ann_ms = np.concatenate([ann_ms, ann_again_ms])
    ann = store.vector_index
    without = {}
    if compare_btree:  # the same filtered queries once more, with the B-trees dropped (reference path)
        table = store.model(MODEL).segments()
        for idx in table.list_indices():
            if idx.columns[0] != "vector":
                table.drop_index(idx.name)
        plain_ms, plain_found = timed_search(store, queries, where, exact=False)
        build_filter_indexes(table)  # back, for the next settings measured on this index
        without = {"filtered_ann_p50_ms_without_btree": round(float(np.median(plain_ms)), 2),
                   "filtered_ann_recall@10_without_btree": round(recall(truth_f, plain_found), 4)}
    return {
        "n": n, "index": kind, "nprobes": ann.nprobes, "refine": ann.refine_factor, "description": description,
        "build_s": round(build_s, 1),
        "ann_p50_ms": round(float(np.median(ann_ms)), 2), "ann_p95_ms": round(float(np.percentile(ann_ms, 95)), 2),
        "ann_recall@10": round(recall(truth, found), 4),
        "reference_p50_ms": round(float(np.median(reference_ms)), 2),
        "reference_over_ann_p50": round(float(np.median(reference_ms) / np.median(ann_ms)), 2),
        "filtered_ann_p50_ms": round(float(np.median(ann_f_ms)), 2),
        "filtered_ann_p95_ms": round(float(np.percentile(ann_f_ms, 95)), 2),
        "filtered_ann_recall@10": round(recall(truth_f, found_f), 4), **without, **confidence,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--kinds", nargs="+", default=["ivf_sq"], choices=["ivf_sq", "ivf_pq", "ivf_flat"],
                        help="ANN index kinds to build and compare on the same table")
    parser.add_argument("--nprobes", type=int, nargs="+", default=[VectorIndexConfig.nprobes])
    parser.add_argument("--refine", type=int, nargs="+", default=[VectorIndexConfig.refine_factor],
                        help="refine factors to compare (candidates re-ranked on full vectors, x limit)")
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--compare-btree", action="store_true",
                        help="also time the filtered queries with the B-tree on path dropped")
    parser.add_argument("--rivals", type=int, default=2048,
                        help="rival phrases of the calibration timed with the search (0: no confidence timing)")
    parser.add_argument("--only-confidence", action="store_true",
                        help="time only the search with and without confidence (no exact reference, no recall)")
    parser.add_argument("--query-model", default=None,
                        help="with confidence timing: every way also embeds the query's text with this 512-d "
                             "open_clip model (e.g. ViT-B-32 --query-pretrained none), and the rule with prompt "
                             "ensembles is timed too (it embeds the query's ensemble as well)")
    parser.add_argument("--query-pretrained", default=None)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    encoder = ClipEncoder.from_spec(resolve_spec(args.query_model, args.query_pretrained)) if args.query_model else None
    calibrations = bench_calibrations(args.rivals, np.random.default_rng(2), encoder) if args.rivals else None
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(2000, DIM)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    queries = clustered(args.queries, np.random.default_rng(1), centres, spread=0.5)
    where = "path LIKE '/archive/folder07/%'"
    rows = []
    workdir = Path(tempfile.mkdtemp(prefix="vidsift-bench-"))
    try:
        for n in args.sizes:
            store = VideoStore(str(workdir / f"db{n}"))
            t = time.perf_counter()
            fill(store, n, np.random.default_rng(n), centres)
            fill_s = time.perf_counter() - t
            t = time.perf_counter()
            SegmentCatalog.load(store.model(MODEL).segments())  # what the first search after a write pays
            catalog_s = time.perf_counter() - t
            exact = {"fill_s": round(fill_s, 1), "catalog_load_s": round(catalog_s, 2)}
            truth = truth_f = None
            if not args.only_confidence:
                exact_ms, truth = timed_search(store, queries, None, exact=True)
                exact_f_ms, truth_f = timed_search(store, queries, where, exact=True)
                exact |= {"exact_p50_ms": round(float(np.median(exact_ms)), 2),
                          "exact_p95_ms": round(float(np.percentile(exact_ms, 95)), 2),
                          "filtered_exact_p50_ms": round(float(np.median(exact_f_ms)), 2)}
            for kind in args.kinds:
                store.vector_index = VectorIndexConfig(kind=kind)
                built = build(store)  # once per kind; probes and refinement are search-time settings
                for nprobes in args.nprobes:
                    for refine in args.refine:
                        store.vector_index = VectorIndexConfig(kind=kind, nprobes=nprobes, refine_factor=refine)
                        row = {**measure(store, n, kind, built, queries, truth, truth_f, where, args.compare_btree,
                                         calibrations, args.only_confidence, encoder), **exact}
                        rows.append(row)
                        print(json.dumps(row), flush=True)
            shutil.rmtree(workdir / f"db{n}", ignore_errors=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print()
    print_table(rows, ["n", "index", "nprobes", "refine", "build_s", "catalog_load_s", "exact_p50_ms", "ann_p50_ms",
                       "ann_p95_ms", "ann_recall@10", "reference_p50_ms", "reference_over_ann_p50",
                       "filtered_exact_p50_ms", "filtered_ann_p50_ms", "filtered_ann_recall@10", "filtered_ann_p50_ms_without_btree",
                       "plain_p50_ms", "confidence_p50_ms", "confidence_over_plain_p50",
                       "confidence_ensembles_p50_ms", "confidence_ensembles_over_plain_p50"])
    write_json(args.out, {"rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
