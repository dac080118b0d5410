#!/usr/bin/env python
"""Acceptance figures of calibrated confidence and "no match" (issue 17) on fresh shapes-world sets.

Renders ``--archives`` archives with seeds training never used (scripts/train_shapes_tiny.py used
1001 and 2002); each shows about half of the 28 labels: 14 picked by its seed, held-out pairs among
them, so that every archive has present and absent labels of both kinds. Each has ``--single``
one-scene and ``--multi`` multi-scene videos (every container, 10-60 fps, 160x120 to 640x360),
indexed in its own database. Then, for each calibration (``default``: the model's own, with no
archive; ``fitted``: `vidsift calibrate` on that archive, no labels) and each rule (``--rules``,
``pipeline.confidence.RULES``: how texts are weighed against rivals), it measures with
``pipeline.shapes.evaluation.no_match_report``: absent labels answering "no match", present labels' R@1
and top hit marked match, out-of-world and gibberish queries, open-set classification, the curve
over the threshold and the reliability of the confidences; summed over the archives, seen and
held-out pairs apart. Open-set classification is decided here as `vidsift classify` decides it
(``pipeline.shapes.evaluation.open_set_classification``: "none" when no segment shows one of the set's labels, else
CLIP's top-1). Prints a table and writes ``results.json``.

    .venv/bin/python bench/eval_confidence.py --archives 10 --out /tmp/eval-confidence
    .venv/bin/python bench/eval_confidence.py --archives 16 --seed 174101 --calibrations default \
        --rules plain ensemble-rivals ensembles --out /tmp/conf-report   # the rules on the same archives
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np

from vidsift.models.encoder import ClipEncoder
from vidsift.models.spec import resolve_spec
from vidsift.pipeline.confidence import RULE, RULES, load_calibration
from vidsift.pipeline.confidence_bank import default_bank
from vidsift.pipeline.confidence_fit import fit_calibration, load_fitted_bank
from vidsift.pipeline.config import IndexConfig
from vidsift.pipeline.indexing import index_sequential
from vidsift.pipeline.prompt_templates import DEFAULT_TEMPLATES
from vidsift.pipeline.shapes.archive import random_video_spec
from vidsift.pipeline.shapes.encode import render_video
from vidsift.pipeline.shapes.evaluation import format_no_match, no_match_report
from vidsift.pipeline.shapes.manifest import load_manifest
from vidsift.pipeline.shapes.world import HELDOUT, all_pairs
from vidsift.pipeline.store import VideoStore

REPO = Path(__file__).resolve().parents[1]

TRAINING_SEEDS = (1001, 2002)
SIZES = ((160, 120), (320, 180), (320, 240), (426, 240), (640, 360))


def pick_labels(seed: int, n: int = 14) -> list[tuple[str, str]]:
    """``n`` of the 28 pairs, 2 or 3 of them held out (so held-out pairs are present and absent)."""
    rng = np.random.default_rng(seed)
    heldout = sorted(HELDOUT)
    seen = [p for p in all_pairs() if p not in HELDOUT]
    k = int(rng.integers(2, 4))
    picked = [heldout[i] for i in rng.choice(len(heldout), k, replace=False)]
    picked += [seen[i] for i in rng.choice(len(seen), n - k, replace=False)]
    return sorted(picked)


def render_half_archive(root: Path, seed: int, single: int, multi: int) -> dict:
    """Videos drawn over the whole spec, their scenes' colour and shape re-drawn from the archive's labels."""
    if seed in TRAINING_SEEDS:
        raise SystemExit(f"seed {seed} was used in training")
    manifest_path = root / "manifest.json"
    if manifest_path.exists():
        return json.loads(manifest_path.read_text())
    pairs = pick_labels(seed)
    (root / "videos").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    entries = []
    for i in range(single + multi):
        spec = random_video_spec(rng, n_scenes=1 if i < single else int(rng.integers(2, 4)), scene_len=(2.0, 6.0),
                                 sizes=SIZES)
        scenes, prev = [], None
        for scene in spec.scenes:
            choices = [p for p in pairs if p != prev]
            prev = choices[int(rng.integers(len(choices)))]
            scenes.append(dataclasses.replace(scene, colour=prev[0], shape=prev[1]))
        spec = dataclasses.replace(spec, scenes=scenes)
        rel = f"videos/{i:05d}.{spec.container}"
        entry = render_video(root / rel, spec, seed=int(np.random.SeedSequence([seed, i]).generate_state(1)[0]))
        entry["path"] = rel
        entries.append(entry)
    manifest = {"seed": seed, "labels": [f"{c} {s}" for c, s in pairs], "videos": entries}
    manifest_path.write_text(json.dumps(manifest, indent=2))
    return manifest


def add(total: dict, part: dict) -> None:
    """Sum {"hits", "n"} cells of nested dicts."""
    for key, value in part.items():
        if isinstance(value, dict) and "hits" in value and "n" in value:
            cell = total.setdefault(key, {"hits": 0, "n": 0})
            cell["hits"] += value["hits"]
            cell["n"] += value["n"]
        elif isinstance(value, dict):
            add(total.setdefault(key, {}), value)


def rates(tree: dict) -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict) and "hits" in value and "n" in value:
            out[key] = {**value, "rate": round(value["hits"] / value["n"], 4) if value["n"] else None}
        elif isinstance(value, dict):
            out[key] = rates(value)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--archives", type=int, default=10)
    parser.add_argument("--seed", type=int, default=171_701, help="seed of the first archive (then +1 each)")
    parser.add_argument("--single", type=int, default=60)
    parser.add_argument("--multi", type=int, default=12)
    parser.add_argument("--k", type=int, default=10, help="hits per query")
    parser.add_argument("--calibrations", nargs="+", default=["default", "fitted"], choices=["default", "fitted"])
    parser.add_argument("--rules", nargs="+", default=[RULE], choices=RULES,
                        help="how texts are weighed against rivals (pipeline.confidence.RULES); each is measured "
                             "on the same archives")
    parser.add_argument("--model", default="shapes-tiny")
    parser.add_argument("--pretrained", default=None)
    parser.add_argument("--out", default=str(REPO / "runs" / "eval-confidence"))
    args = parser.parse_args(argv)

    out = Path(args.out)
    encoder = ClipEncoder.from_spec(resolve_spec(args.model, args.pretrained))
    started = time.time()
    totals: dict[str, dict] = {}
    per_archive = []
    curves: dict[str, list] = {}
    for i in range(args.archives):
        seed = args.seed + i
        root = out / f"archive-{seed}"
        manifest = render_half_archive(root, seed, args.single, args.multi)
        _, videos = load_manifest(root)
        store = VideoStore(str(root / "db"))
        report = index_sequential(store, encoder, [v["abspath"] for v in videos], IndexConfig())
        if report.failures:
            print(f"archive {seed}: {len(report.failures)} videos failed to index", file=sys.stderr)
        for mode in args.calibrations:
            for rule in args.rules:
                if mode == "fitted":
                    if load_fitted_bank(store, encoder.spec.table_suffix) is None:
                        fit_calibration(store, encoder, seed=seed)
                    bank = load_fitted_bank(store, encoder.spec.table_suffix)
                else:
                    bank = default_bank(encoder, templates=() if rule == "plain" else DEFAULT_TEMPLATES)
                calibration = load_calibration(store, encoder, bank=bank, rule=rule)
                name = mode if rule == "plain" else f"{mode}, {rule}"
                result = no_match_report(store, encoder, videos, calibration, k=args.k, seed=seed)
                print(f"--- archive {seed} ({len(videos)} videos, labels: {', '.join(manifest['labels'])}), "
                      f"calibration {name}", flush=True)
                print(format_no_match(result), flush=True)
                add(totals.setdefault(name, {}), {"at_threshold": result["at_threshold"],
                                                  "open_set_classification": result["open_set_classification"]})
                for row in result["curve"]:
                    curves.setdefault(name, []).append(row)
                per_archive.append({"seed": seed, "calibration": name, "labels": manifest["labels"],
                                    "report": {k: v for k, v in result.items() if k != "curve"}})
    summary = {}
    for mode, tree in totals.items():
        curve = {}
        for row in curves[mode]:
            add(curve.setdefault(row["threshold"], {}), {k: v for k, v in row.items() if k != "threshold"})
        summary[mode] = {**rates(tree), "curve": [{"threshold": t, **rates(v)} for t, v in sorted(curve.items())]}
    results = {"archives": args.archives, "seeds": [args.seed + i for i in range(args.archives)], "k": args.k,
               "model": encoder.model_key, "videos_per_archive": args.single + args.multi, "summary": summary,
               "per_archive": per_archive, "seconds": round(time.time() - started)}
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str))

    def f(cell):
        return "   -  " if cell["rate"] is None else f"{cell['rate']:.3f} ({cell['hits']}/{cell['n']})"

    print(f"\n=== {args.archives} archives (seeds {args.seed}..{args.seed + args.archives - 1}), top {args.k}, "
          f"{args.model}")
    for mode, s in summary.items():
        at, osc = s["at_threshold"], s["open_set_classification"]
        print(f"calibration: {mode}")
        print(f"  {'':<42}{'seen':<20}{'held-out':<20}all")
        for title, key in (("absent labels answer no match", "no_match_recall"),
                           ("no match precision", "no_match_precision"),
                           ("false no match on present labels", "false_no_match_present"),
                           ("false match on absent labels", "false_match_absent"),
                           ("present labels: R@1", "present_R@1"),
                           ("present labels: top hit marked match", "present_top1_match")):
            print(f"  {title:<42}{f(at['seen'][key]):<20}{f(at['heldout'][key]):<20}{f(at['all'][key])}")
        print(f"  {'out-of-world and gibberish: no match':<42}{f(at['out_of_world_no_match'])}")
        for title, key in (("classify without the true label: none", "none_without_true_label"),
                           ("classify, 2-5 labels without it: none", "none_small_sets_without_true_label"),
                           ("classify top-1 with none", "top1_with_none"), ("classify top-1 before", "top1_before")):
            print(f"  {title:<42}{f(osc[key]['seen']):<20}{f(osc[key]['heldout']):<20}")
        print(f"  {'multi-scene: every shown label matches':<42}{f(osc['multi_scene_all_labels_match'])}")
    print(f"written {out / 'results.json'} ({results['seconds']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
