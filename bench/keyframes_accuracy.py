#!/usr/bin/env python
"""What `--sample keyframes` costs in accuracy and saves in decoding (issue 20), side by side on one
fresh shapes-world archive.

The same archive (one-scene videos and videos of 1-4 scenes, in every container, frame rate and size of the
spec; seeds training never used) is indexed twice with the bundled shapes-tiny model, in the same
process, one run after the other: once with exact sampling (`--fps 1`, the default) and once with
`--fps 1 --sample keyframes` (the keyframe at or before each sampling time). For each it reports
what `vidsift eval` reports (``pipeline.shapes.evaluation.full_report``: text -> video R@1,
zero-shot top-1 per scene, moments found at IoU >= 0.5, scene cuts within one sampling interval),
the frames it stored and the CPU seconds its decoding processes used per stored frame and per
second of video (``os.times`` of the reaped children: the job's decoding processes).

    .venv/bin/python bench/keyframes_accuracy.py --single 60 --multi 30 --seed 176001 \
        --out bench/results/keyframes_accuracy.json
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import print_table, write_json  # noqa: E402


def index_and_report(paths, videos, encoder, sampling, db: str) -> dict:
    from vidsift.pipeline.config import IndexConfig
    from vidsift.pipeline.indexing import index_sequential
    from vidsift.pipeline.shapes.evaluation import full_report
    from vidsift.pipeline.store import VideoStore

    store = VideoStore(db)
    before, started = os.times(), time.perf_counter()
    report = index_sequential(store, encoder, paths, IndexConfig(sampling=sampling))
    wall, after = time.perf_counter() - started, os.times()
    children_cpu = (after.children_user + after.children_system) - (before.children_user + before.children_system)
    figures = full_report(store, encoder, videos, sampling_interval=1.0 / sampling.fps)
    return {"report": report.to_dict(), "wall_s": round(wall, 1), "decode_cpu_s": round(children_cpu, 1),
            "figures": figures}


def _pooled_rate(tallies: list[dict]) -> float | None:
    hits, total = sum(t.get("hits", 0) for t in tallies), sum(t.get("n", 0) for t in tallies)
    return round(hits / total, 4) if total else None


def summary_row(name: str, run: dict, video_seconds: float) -> dict:
    figures, frames = run["figures"], run["report"]["frames"]
    retrieval, zero_shot = figures["retrieval"], figures["zero_shot"]
    localisation, boundaries = figures["localisation"], figures["boundaries"]
    return {
        "sampling": name,
        "frames": frames,
        "frames_per_video_s": round(frames / video_seconds, 3),
        "decode_cpu_ms_per_video_s": round(1000 * run["decode_cpu_s"] / video_seconds, 1),
        "R@1 seen": retrieval.get("seen", {}).get("R@1"),
        "R@1 heldout": retrieval.get("heldout", {}).get("R@1"),
        "zero-shot top1": _pooled_rate([split["top1"] for split in zero_shot.values()]),
        "moments R@1 IoU>=0.5": localisation["all"].get("R@1,IoU>=0.5"),
        "cut F1": boundaries.get("f1"),
        "failed": run["report"]["failed"],
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--single", type=int, default=60, help="one-scene videos")
    parser.add_argument("--multi", type=int, default=30, help="videos of 1-4 scenes")
    parser.add_argument("--seed", type=int, default=176_001, help="render seed (never used in training)")
    parser.add_argument("--fps", type=float, default=1.0)
    parser.add_argument("--workdir", default=None, help="where the archive and databases go (default: a temp dir)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)

    from vidsift.models.encoder import ClipEncoder
    from vidsift.models.spec import resolve_spec
    from vidsift.pipeline.config import SamplingConfig
    from vidsift.pipeline.shapes.archive import synthesize_archive
    from vidsift.pipeline.shapes.manifest import load_manifest

    work = Path(args.workdir or tempfile.mkdtemp(prefix="vidsift-keyframes-"))
    videos = []
    for part, count, scenes in (("single", args.single, 1), ("multi", args.multi, None)):
        if count:
            synthesize_archive(work / part, count, args.seed + (0 if scenes == 1 else 500), n_scenes=scenes)
            videos += load_manifest(str(work / part))[1]
    paths = [v["abspath"] for v in videos]
    video_seconds = sum(v["duration"] for v in videos)
    encoder = ClipEncoder.from_spec(resolve_spec("shapes-tiny", None))
    runs = {}
    for name, sampling in (("exact (default)", SamplingConfig(fps=args.fps)),
                           ("keyframes", SamplingConfig(fps=args.fps, keyframes=True))):
        runs[name] = index_and_report(paths, videos, encoder, sampling, str(work / f"db-{len(runs)}"))
        print(name, runs[name]["report"]["frames"], "frames", runs[name]["wall_s"], "s", flush=True)
    rows = [summary_row(name, run, video_seconds) for name, run in runs.items()]
    exact, keyframes = rows
    ratios = {"decode_cpu_exact_over_keyframes": round(exact["decode_cpu_ms_per_video_s"]
                                                       / keyframes["decode_cpu_ms_per_video_s"], 2),
              "frames_kept": round(keyframes["frames"] / exact["frames"], 3)}
    print(f"\n{len(videos)} videos ({args.single} one-scene, {args.multi} of 1-4 scenes), {video_seconds:.0f} s of "
          f"video, shapes-tiny, --fps {args.fps:g}, seed {args.seed}\n")
    print_table(rows, list(rows[0]))
    print(f"\ndecoding CPU per second of video, exact / keyframes: {ratios['decode_cpu_exact_over_keyframes']}x; "
          f"keyframes keeps {ratios['frames_kept']:.1%} of the frames")
    write_json(args.out, {"videos": len(videos), "video_seconds": round(video_seconds, 1), "seed": args.seed,
                          "fps": args.fps, "rows": rows, "ratios": ratios,
                          "figures": {name: run["figures"] for name, run in runs.items()}})
    return 0


if __name__ == "__main__":
    sys.exit(main())
