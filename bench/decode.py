#!/usr/bin/env python
"""Decode-only sampled frames/s at 1 frame/s: the previous decoder (decord, full-size frames, PIL
resize) against the new one (PyAV: decoder-side resize, non-reference frames skipped, seeking past
unneeded keyframe intervals), side by side in one run, per container/codec and per model transform.

What is timed is the job's decode stage (`pipeline.decode.decode_video`: header check, open/scan,
plan, decode, resize + crop to the model's input, JPEG thumbnails), the same stage
`bench/throughput.py` calls decode-only. Two measures:

- **pool**: one process per core over the bench archive (largest files first), as
  `bench/throughput.py` measures decode-only: the figure the issue's target is about;
- **per container**: one process, one thread, three videos per container (the bench archive's
  first three, and the same specs and seed rendered as MKV, WebM, AVI; 2 videos at 1280x720),
  wall time and the process's CPU time (CPU ms per frame are the robust figure on a shared machine).

Rounds alternate old/new so a load change hits both. Also checked, not timed: the new path's
timestamps equal decord's (exact presentation times, max difference printed) and its squares'
pixel difference from the old path's (full-size PyAV is pixel-identical; decoder-side resize
moves squares by a few levels: `tests/test_decode.py` bounds the vectors' cosine).

    .venv/bin/python bench/decode.py --out bench/results/decode.json | tee bench/results/decode.txt

Archives (rendered once into --workdir, default /tmp/vidsift-bench): the bench archive of
`bench/common.py` (12 MP4/H.264 640x360 30 fps videos of ~50 s) and, for the other containers, 3
videos each of the same shape as MKV/H.264, WebM/VP9 and AVI/MPEG-4, plus the 1280x720 MP4 archive.
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ARCHIVES, print_table, rendered_archive, write_json  # noqa: E402

import numpy as np  # noqa: E402

TRANSFORMS = {  # what bench/throughput.py's models ask for (models.loading.preprocess_config)
    "ViT-B-32": {"size": 224, "resize_mode": "shortest", "interpolation": "bicubic"},
    "shapes-tiny": {"size": 64, "resize_mode": "squash", "interpolation": "bicubic"},
}
VARIANTS = {  # name -> IndexConfig overrides
    "decord (before)": {"decoder": "decord", "decoder_resize": False},
    "decord + decoder resize (default)": {"decoder": "decord"},
    "pyav full-size": {"decoder": "cpu", "decoder_resize": False},
    "pyav (--decoder cpu)": {"decoder": "cpu"},
}
POOL_VARIANTS = ("decord (before)", "decord + decoder resize (default)", "pyav (--decoder cpu)")
ABLATIONS = {  # the new decoder with one saving turned off: read_sampled's keyword
    "new, no nonref skip": {"skip_nonref": False},
    "new, no seeking": {"seek": False},
}


def _config(overrides: dict):
    from vidsift.pipeline.config import IndexConfig, SamplingConfig

    keyframes = overrides.pop("keyframes", False)
    return IndexConfig(sampling=SamplingConfig(fps=1.0, keyframes=keyframes), **overrides)


def _decode(path: str, model: str, overrides: dict, ablation: dict | None = None):
    """(times, squares) of one video through the decode stage."""
    from vidsift.pipeline import decoders, pyav_decode
    from vidsift.pipeline.decode import decode_video
    from vidsift.pipeline.frames import FrameTransform

    original = pyav_decode.read_sampled
    if ablation:
        decoders.pyav_decode.read_sampled = lambda *a, **k: original(*a, **{**k, **ablation})
    try:
        _, chunks = decode_video(path, FrameTransform.from_preprocess_cfg(TRANSFORMS[model]), _config(dict(overrides)))
        chunks = list(chunks)
    finally:
        decoders.pyav_decode.read_sampled = original
    times = np.concatenate([c.times for c in chunks]) if chunks else np.zeros(0)
    squares = np.concatenate([c.pixels for c in chunks]) if chunks else np.zeros((0,))
    return times, squares


def _decode_count(job) -> tuple[int, float]:
    """(frames, CPU seconds of this worker process, all its threads)."""
    path, model, variant = job
    cpu = time.process_time()
    return len(_decode(path, model, VARIANTS[variant])[0]), time.process_time() - cpu


def _warm(_=None):
    import av  # noqa: F401
    import decord  # noqa: F401

    import vidsift.pipeline.decoders  # noqa: F401


def pool_rate(paths: list[str], model: str, variant: str) -> tuple[float, float]:
    """(sampled frames/s, CPU ms per frame) of the decode stage, one process per core."""
    jobs = [(p, model, variant) for p in sorted(paths, key=os.path.getsize, reverse=True)]
    with mp.get_context("spawn").Pool(os.cpu_count(), initializer=_warm) as pool:
        pool.map(_warm, range(os.cpu_count()))
        started = time.perf_counter()
        results = list(pool.imap_unordered(_decode_count, jobs))
        seconds = time.perf_counter() - started
    frames = sum(n for n, _ in results)
    return frames / seconds, 1000 * sum(c for _, c in results) / max(frames, 1)


def serial(paths: list[str], model: str, overrides: dict, ablation: dict | None = None) -> dict:
    frames, wall, cpu = 0, time.perf_counter(), time.process_time()
    for path in paths:
        frames += len(_decode(path, model, overrides, ablation)[0])
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {"frames": frames, "fps": frames / wall, "cpu_ms": 1000 * cpu / max(frames, 1)}


def exactness(paths: list[str], model: str) -> dict:
    """New vs old on every video: timestamps (max |difference|, s) and squares (max / mean levels)."""
    worst_t, worst_px, mean_px, worst_full = 0.0, 0, [], 0
    for path in paths:
        t_old, s_old = _decode(path, model, VARIANTS["decord (before)"])
        t_full, s_full = _decode(path, model, VARIANTS["pyav full-size"])
        t_new, s_new = _decode(path, model, VARIANTS["pyav (--decoder cpu)"])
        if len(t_old) != len(t_new) or len(t_full) != len(t_old):
            return {"error": f"{path}: {len(t_old)} frames before, {len(t_new)} now"}
        worst_t = max(worst_t, float(np.abs(t_old - t_new).max()), float(np.abs(t_old - t_full).max()))
        worst_full = max(worst_full, int(np.abs(s_old.astype(int) - s_full).max()))
        diff = np.abs(s_old.astype(int) - s_new)
        worst_px, mean_px = max(worst_px, int(diff.max())), mean_px + [float(diff.mean())]
    return {"max_time_diff_s": worst_t, "full_size_max_px_diff": worst_full, "resized_max_px_diff": worst_px,
            "resized_mean_px_diff": round(float(np.mean(mean_px)), 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "vidsift-bench"))
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--models", nargs="+", default=list(TRANSFORMS), choices=list(TRANSFORMS))
    parser.add_argument("--table-models", nargs="+", default=["shapes-tiny"], choices=list(TRANSFORMS),
                        help="models of the per-container table (the pool and exactness checks use --models)")
    parser.add_argument("--table-rounds", type=int, default=1)
    parser.add_argument("--skip-pool", action="store_true")
    parser.add_argument("--only-pool", action="store_true", help="the headline figure alone (no per-container table)")
    parser.add_argument("--max-videos", type=int, help="first N videos of each archive (a quick look)")
    parser.add_argument("--out")
    args = parser.parse_args()
    work = Path(args.workdir)
    bench = rendered_archive(work / "640x360", **ARCHIVES["640x360"])
    archives = {"mp4/h264 640x360": bench[:3]}  # the same three videos' scenes in every container
    for fmt, codec in (("mkv", "h264"), ("webm", "vp9"), ("avi", "mpeg4")):
        archives[f"{fmt}/{codec} 640x360"] = rendered_archive(
            work / f"decode-{fmt}", videos=3, seed=ARCHIVES["640x360"]["seed"], formats=(fmt,), sizes=[(640, 360)], fps_choices=[30],
            n_scenes=4, scene_len=(10.0, 15.0))
    archives["mp4/h264 1280x720"] = rendered_archive(work / "1280x720", **ARCHIVES["1280x720"])
    if args.max_videos:
        bench = bench[:args.max_videos]
        archives = {k: v[:args.max_videos] for k, v in archives.items()}
        archives["mp4/h264 640x360"] = bench
    print(f"load average before: {os.getloadavg()}", flush=True)

    pool_rows = []
    if not args.skip_pool:
        for model in args.models:
            rates = {v: [] for v in POOL_VARIANTS}
            for _ in range(args.rounds):
                for variant in rates:
                    rates[variant].append(pool_rate(bench, model, variant))
            means = {v: np.mean(r, axis=0) for v, r in rates.items()}
            old, old_cpu = means["decord (before)"]
            for variant in POOL_VARIANTS[1:]:
                new, new_cpu = means[variant]
                pool_rows.append({"model": model, "decoder": variant,
                                  "archive": f"bench 640x360 ({len(bench)} videos), {os.cpu_count()} procs",
                                  "before f/s": old, "new f/s": new, "new/before": new / old,
                                  "before CPU ms/f": old_cpu, "new CPU ms/f": new_cpu, "CPU before/new": old_cpu / new_cpu,
                                  "rounds f/s": " ".join(f"{a[0]:.0f}/{b[0]:.0f}"
                                                         for a, b in zip(rates["decord (before)"], rates[variant]))})
        print("\nDecode-only, one process per core (as bench/throughput.py), sampled frames/s at 1 fps")
        print_table(pool_rows, ["model", "decoder", "archive", "before f/s", "new f/s", "new/before", "before CPU ms/f",
                                "new CPU ms/f", "CPU before/new", "rounds f/s"])

    if args.only_pool:
        write_json(args.out, {"pool": pool_rows})
        return
    rows = []
    for model in args.table_models:
        for name, paths in archives.items():
            results = {}
            for _ in range(args.table_rounds):
                for variant, overrides in VARIANTS.items():
                    results.setdefault(variant, []).append(serial(paths, model, overrides))
                for variant, ablation in ABLATIONS.items():
                    results.setdefault(variant, []).append(serial(paths, model, VARIANTS["pyav (--decoder cpu)"], ablation))
                results.setdefault("keyframes only", []).append(
                    serial(paths, model, {"decoder": "cpu", "keyframes": True}))
            base = results["decord (before)"]
            base_fps, base_cpu = np.mean([r["fps"] for r in base]), np.mean([r["cpu_ms"] for r in base])
            for variant, rs in results.items():
                fps, cpu = np.mean([r["fps"] for r in rs]), np.mean([r["cpu_ms"] for r in rs])
                rows.append({"model": model, "archive": name, "decoder": variant, "frames": rs[0]["frames"],
                             "f/s": fps, "x before (wall)": fps / base_fps, "CPU ms/frame": cpu,
                             "x before (CPU)": base_cpu / cpu})
            print(f"  done {model} {name}", flush=True)
    print("\nPer container/codec, one process, one thread (mean of rounds; 'x before' = speed-up over decord)")
    print_table(rows, ["model", "archive", "decoder", "frames", "f/s", "x before (wall)", "CPU ms/frame",
                       "x before (CPU)"])

    checks = []
    for model in args.models:
        for name, paths in archives.items():
            checks.append({"model": model, "archive": name, **exactness(paths, model)})
    print("\nExactness, new vs decord: timestamps (s) and squares' pixel levels (0-255)")
    print_table(checks, ["model", "archive", "max_time_diff_s", "full_size_max_px_diff", "resized_max_px_diff",
                         "resized_mean_px_diff"])
    print(f"\nload average after: {os.getloadavg()}")
    write_json(args.out, {"pool": pool_rows, "per_container": rows, "exactness": checks})


if __name__ == "__main__":
    main()
