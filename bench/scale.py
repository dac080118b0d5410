#!/usr/bin/env python
"""1,000 videos indexed in one job: the indexing rate over the job must not decay.

Target: rate in the last tenth of the job >= 0.9 x the rate in the second tenth.

    .venv/bin/python bench/scale.py --videos 1000 --out /tmp/vidsift-bench/scale.json

Renders (once, cached in --workdir) N small shapes-world videos (160x120, 10 fps, MP4, one scene of
2-4 s), runs one ``vidsift index FOLDER --db <fresh db> --model shapes-tiny --json --quiet`` (the
local runner by default), then reads each video's ``indexed_at`` from the videos table to get the rate over time.

Each commit of the job's writer (``pipeline.staging.StagedWriter``, about every 2 s) stamps all its
videos with one ``indexed_at``, so the stamps give exact points (time, videos done so far), one per
commit, not one per video. (Written when a flush took 32 videos or 10 s: the "~30 videos per
flush" below now reads "the videos of ~2 s".) The moment the job had done c videos is interpolated linearly between
the two flushes around c; the launch of the command is the point (launch, 0). Tenth k covers videos
k*N/10 .. (k+1)*N/10 and its rate is N/10 over the time between those two moments. The first tenth
also pays for starting Ray and loading the model (``startup s``), which is why the target compares
the last tenth with the second. With ~30 videos per flush a tenth spans only ~3 flushes, so a
tenth's rate is rough; read the trend over the ten, not one tenth.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from bench.common import print_table, rendered_archive, run_vidsift, write_json  # noqa: E402


def flush_points(stamps: list[float], launched: float) -> tuple[np.ndarray, np.ndarray]:
    """(time, videos stored so far) after each flush, from the per-video ``indexed_at`` stamps."""
    flush_times, per_flush = np.unique(stamps, return_counts=True)
    return np.concatenate([[launched], flush_times]), np.concatenate([[0], np.cumsum(per_flush)])


def rates_per_tenth(times: np.ndarray, done: np.ndarray) -> list[dict]:
    """Videos/s in each tenth of the job; a tenth's ends are interpolated between flushes."""
    tenth = done[-1] / 10
    at = np.interp([k * tenth for k in range(11)], done, times)  # moment the job had done k tenths
    return [{"tenth": k + 1, "videos": f"{round(k * tenth)}-{round((k + 1) * tenth) - 1}",
             "ends at s": round(at[k + 1] - times[0], 1), "videos/s": round(tenth / (at[k + 1] - at[k]), 2)}
            for k in range(10)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--videos", type=int, default=1000)
    parser.add_argument("--workdir", default="/tmp/vidsift-bench")
    parser.add_argument("--seed", type=int, default=1000)
    parser.add_argument("--out")
    args = parser.parse_args()

    folder = Path(args.workdir) / f"scale-{args.videos}-seed{args.seed}"
    started = time.perf_counter()
    paths = rendered_archive(folder, args.videos, args.seed, formats=("mp4",), sizes=[(160, 120)],
                             fps_choices=[10], n_scenes=1, scene_len=(2.0, 4.0), progress=True)
    print(f"{len(paths)} videos in {folder} ({time.perf_counter() - started:.0f} s)", flush=True)

    from vidsift.models.spec import resolve_spec
    from vidsift.pipeline.store import VideoStore

    db = Path(tempfile.mkdtemp(prefix="scale-db-", dir=args.workdir)) / "db.lance"
    try:
        launched = time.time()
        run = run_vidsift(["index", str(folder / "videos"), "--db", str(db), "--model", "shapes-tiny",
                           "--json", "--quiet"])
        rows = VideoStore(str(db)).model(resolve_spec("shapes-tiny")).video_rows(["video_id", "indexed_at"])
    finally:
        shutil.rmtree(db.parent, ignore_errors=True)
    times, done = flush_points([r["indexed_at"].timestamp() for r in rows], launched)
    tenths = rates_per_tenth(times, done)
    print_table(tenths, ["tenth", "videos", "ends at s", "videos/s"])

    second, last = tenths[1]["videos/s"], tenths[-1]["videos/s"]
    ratio = round(last / second, 3) if second and last else None
    middle = float(np.median([t["videos/s"] for t in tenths[1:9]]))  # steadier than one tenth
    summary = {"videos": int(done[-1]), "indexed": run["report"].get("indexed"),
               "failed": run["report"].get("failed"), "frames": run["report"].get("frames"),
               "seconds": round(run["seconds"], 1), "startup s": run["report"].get("startup_seconds"),
               "videos/s": round(done[-1] / run["seconds"], 2), "flushes": len(done) - 1,
               "last/second tenth": ratio, "last/median of 2-9": round(last / middle, 3)}
    print()
    print_table([summary], list(summary))
    print("\ntarget: last/second tenth >= 0.9 ->", ratio)
    write_json(args.out, {"target": "rate in last tenth >= 0.9 x rate in second tenth", **summary,
                          "tenths": tenths, "report": run["report"],
                          "flushes_at": [[round(t - times[0], 2), int(n)] for t, n in zip(times[1:], done[1:])]})


if __name__ == "__main__":
    main()
