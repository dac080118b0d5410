#!/usr/bin/env python
"""Acceptance figures of the demo model on fresh shapes-world archives (issue: "A model that really sees").

Renders, with seeds training never used, an archive of one-scene videos and one of multi-scene
videos covering every container, resolution and frame rate of the spec; indexes both with the Ray
job; prints and writes (JSON) `vidsift eval`'s figures (``pipeline.shapes.evaluation.full_report``:
text -> video R@1, zero-shot top-1 per scene, moments found at IoU >= 0.5, scene cuts), overall and
per container, frame-rate band and resolution band, seen and held-out pairs apart.

    .venv/bin/python bench/eval_shapes.py --single 140 --multi 40 --out runs/eval
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from vidsift.pipeline.shapes.archive import synthesize_archive  # noqa: E402
from vidsift.models.encoder import ClipEncoder  # noqa: E402
from vidsift.models.spec import resolve_spec  # noqa: E402
from vidsift.pipeline.config import IndexConfig  # noqa: E402
from vidsift.pipeline.indexing import index_sequential  # noqa: E402
from vidsift.pipeline.shapes.evaluation import full_report  # noqa: E402
from vidsift.pipeline.shapes.manifest import MANIFEST, load_manifest  # noqa: E402
from vidsift.pipeline.store import VideoStore  # noqa: E402
from vidsift.workers.job import run_index_job  # noqa: E402


def fps_band(fps: float) -> str:
    return "10-19 fps" if fps < 20 else "20-39 fps" if fps < 40 else "40-60 fps"


def size_band(height: int) -> str:
    return "<=240p" if height <= 240 else "<=480p" if height <= 480 else ">480p"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--single", type=int, default=140, help="one-scene videos")
    parser.add_argument("--multi", type=int, default=40, help="multi-scene videos")
    parser.add_argument("--seed", type=int, default=777_001, help="render seed (never used in training)")
    parser.add_argument("--out", default=str(REPO / "runs" / "eval-shapes"))
    parser.add_argument("--model", default="shapes-tiny")
    parser.add_argument("--pretrained", default=None)
    parser.add_argument("--no-ray", action="store_true")
    args = parser.parse_args(argv)

    out = Path(args.out)
    started = time.time()
    single_root, multi_root = out / "single", out / "multi"
    if not (single_root / MANIFEST).exists():
        synthesize_archive(single_root, args.single, args.seed, n_scenes=1, progress=True)
    if not (multi_root / MANIFEST).exists():
        synthesize_archive(multi_root, args.multi, args.seed + 1, n_scenes=None, progress=True)
    _, single = load_manifest(single_root)
    _, multi = load_manifest(multi_root)
    multi = [v for v in multi if len(v["scenes"]) > 1]
    rendered = time.time()

    spec = resolve_spec(args.model, args.pretrained)
    store = VideoStore(str(out / "db"))
    paths = [v["abspath"] for v in single + multi]
    if args.no_ray:
        report = index_sequential(store, ClipEncoder.from_spec(spec), paths, IndexConfig())
    else:
        report = run_index_job(store, spec, paths, IndexConfig())
    indexed = time.time()
    encoder = ClipEncoder.from_spec(spec)

    results = {"overall": full_report(store, encoder, single + multi),
               "index_report": {k: v for k, v in report.to_dict().items() if k != "failures"}}
    for name, key in (("container", lambda v: v["container"]), ("fps", lambda v: fps_band(v["fps"])),
                      ("resolution", lambda v: size_band(v["height"]))):
        groups: dict[str, list] = {}
        for video in single + multi:
            groups.setdefault(key(video), []).append(video)
        results[f"by_{name}"] = {g: full_report(store, encoder, vs) for g, vs in sorted(groups.items())}
    results["seconds"] = {"render": round(rendered - started), "index": round(indexed - rendered),
                          "evaluate": round(time.time() - indexed)}
    (out / "results.json").write_text(json.dumps(results, indent=2))

    def fmt(stats: dict, key: str) -> str:
        return "   -  " if not stats.get("n") else f"{stats[key]:.3f} (n={stats['n']})"

    def figures(r: dict, split: str) -> list[str]:
        return [fmt(r["retrieval"][split], "R@1"), fmt(r["zero_shot"][split]["top1"], "rate"),
                fmt(r["localisation"][split], "R@1,IoU>=0.5")]

    print(f"{'group':<22} {'R@1 seen':<16} {'top-1 seen':<16} {'moment seen':<16} {'R@1 held-out':<16} "
          f"{'top-1 held-out':<16} {'moment held-out':<16} cuts F1")
    rows = [("overall", results["overall"])] + [
        (f"{k[3:]}={g}", r) for k in ("by_container", "by_fps", "by_resolution") for g, r in results[k].items()]
    for name, r in rows:
        cells = figures(r, "seen") + figures(r, "heldout")
        print(f"{name:<22} " + " ".join(f"{c:<16}" for c in cells) + f" {r['boundaries']['f1']:.3f}")
    print(f"written {out / 'results.json'}; times {results['seconds']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
