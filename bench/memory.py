#!/usr/bin/env python
"""Peak memory while indexing a 1-minute and a 60-minute video: memory must not grow with length.

Target: peak RSS for the 60-minute video <= 1.2 x that for the 1-minute video.

    .venv/bin/python bench/memory.py --out /tmp/vidsift-bench/memory.json
    .venv/bin/python bench/memory.py --modes no-ray --videos SHORT.mp4 LONG.mp4   # given files

Both videos are 320x240, 25 fps, MP4/H.264, made of consecutive random shapes-world scenes. A
VideoSpec holds at most 4 scenes, so the videos are rendered here by a streaming renderer that
draws and encodes one frame at a time (never the whole video in memory), and cached in --workdir
(a file is reused when it has the right frame count and size).

Each video is indexed with ``vidsift index VIDEO --db <fresh db> --model shapes-tiny --json
--quiet`` once per mode: the default local pipeline, the Ray job (``--address local``) and, with
``--modes no-ray``, ``--no-ray``. Peak RSS is that of the whole
process tree, sampled every 0.1 s (bench/common.py). In the Ray mode the tree includes Ray's own
processes (gcs_server, raylet, dashboard agent, Ray Data's helper actors): they are part of what a
user's machine pays, so they are counted. They cost the same ~2 GB for both lengths, which dilutes
the Ray-mode ratio: read the per-process table too. Pages of Ray's shared object store are counted
in every process that maps them (RSS overstates a little in Ray mode).

Alongside the total, the same sampler (bench/common.py) keeps each process's own peak (RSS, anonymous and shared
parts) and the tree total over time, so a ratio above 1.2 says which process grows and when.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from bench.common import print_table, run_vidsift, write_json  # noqa: E402
from vidsift.pipeline.shapes.archive import random_video_spec  # noqa: E402
from vidsift.pipeline.shapes.draw import render_frame  # noqa: E402
from vidsift.pipeline.shapes.encode import open_stream  # noqa: E402
from vidsift.pipeline.shapes.spec import SceneSpec, VideoSpec  # noqa: E402
from vidsift.pipeline.video_libs import pyav  # noqa: E402

av = pyav()

WIDTH, HEIGHT, FPS = 320, 240, 25


# --- rendering -------------------------------------------------------------------------------

def _scenes(rng: np.random.Generator):
    """An endless stream of (VideoSpec, SceneSpec): random videos' scenes, one after another.
    Each scene is drawn with its own video's background and noise (as a hard cut would show)."""
    while True:
        spec = random_video_spec(rng, formats=("mp4",), sizes=[(WIDTH, HEIGHT)], fps_choices=[FPS])
        for scene in spec.scenes:
            yield spec, scene


def render_long_video(path: Path, minutes: float, seed: int) -> None:
    """Encode ``minutes`` of consecutive random scenes, frame by frame (memory stays flat)."""
    n_frames = round(minutes * 60 * FPS)
    fps = Fraction(FPS)
    tmp = path.with_suffix(".part.mp4")
    rng = np.random.default_rng(seed)
    layout = VideoSpec([SceneSpec("red", "circle", 2.0)], WIDTH, HEIGHT, FPS, "mp4")
    with av.open(str(tmp), mode="w", format="mp4") as out:
        stream = open_stream(out, layout, fps, threads=1)
        i = 0
        for spec, scene in _scenes(rng):
            scene_frames = round(scene.duration_s * FPS)
            for k in range(min(scene_frames, n_frames - i)):
                frame = av.VideoFrame.from_ndarray(render_frame(spec, scene, k / FPS, rng), format="rgb24")
                frame.pts, frame.time_base = i, 1 / fps
                out.mux(stream.encode(frame))
                i += 1
            if i >= n_frames:
                break
        out.mux(stream.encode(None))
    os.replace(tmp, path)


def frame_count(path: Path) -> int | None:
    """Frames and size of an existing file, from the container (no decoding); None if unusable."""
    try:
        with av.open(str(path)) as container:
            s = container.streams.video[0]
            return s.frames if (s.width, s.height) == (WIDTH, HEIGHT) else None
    except (av.error.FFmpegError, IndexError, OSError):
        return None


def cached_video(workdir: Path, minutes: float, seed: int) -> Path:
    path = workdir / f"long-{minutes:g}min-{WIDTH}x{HEIGHT}-{FPS}fps-seed{seed}.mp4"
    if frame_count(path) != round(minutes * 60 * FPS):
        started = time.perf_counter()
        print(f"rendering {path} ...", flush=True)
        render_long_video(path, minutes, seed)
        print(f"  {time.perf_counter() - started:.0f} s", flush=True)
    return path


MODE_FLAGS = {  # mode -> extra `vidsift index` flags
    "default": [],                    # the in-process local pipeline (issue 20)
    "ray": ["--address", "local"],    # a fresh local Ray, as a cluster job runs
    "no-ray": ["--no-ray"],           # one video at a time in the CLI's process
}


def index_once(video: Path, mode: str, workdir: Path) -> dict:
    db = Path(tempfile.mkdtemp(prefix="memory-db-", dir=workdir)) / "db.lance"
    args = ["index", str(video), "--db", str(db), "--model", "shapes-tiny", "--json", "--quiet"]
    try:
        return run_vidsift(args + MODE_FLAGS[mode], measure_rss=True)
    finally:
        shutil.rmtree(db.parent, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", default="/tmp/vidsift-bench")
    parser.add_argument("--minutes", type=float, nargs=2, default=[1, 60], metavar=("SHORT", "LONG"))
    parser.add_argument("--modes", nargs="+", default=["default", "ray"], choices=list(MODE_FLAGS))
    parser.add_argument("--seed", type=int, default=60)
    parser.add_argument("--videos", nargs=2, metavar=("SHORT", "LONG"),
                        help="index these two files instead of rendering (give --minutes to match them)")
    parser.add_argument("--out")
    args = parser.parse_args()
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    if args.videos:
        videos = dict(zip(args.minutes, map(Path, args.videos)))
    else:
        videos = {m: cached_video(workdir, m, args.seed) for m in args.minutes}

    rows, runs = [], []
    for mode in args.modes:
        peaks = {}
        for minutes, video in videos.items():
            print(f"indexing {video.name} ({mode}) ...", flush=True)
            r = index_once(video, mode, workdir)
            peaks[minutes] = r["peak_rss_mib"]
            runs.append({"mode": mode, "minutes": minutes, "video": str(video), **r})
            rows.append({"mode": mode, "video min": minutes, "frames": r["report"].get("frames"),
                         "indexed": r["report"].get("indexed"), "seconds": round(r["seconds"], 1),
                         "peak RSS MiB": r["peak_rss_mib"], "top process": r["processes"][0]["process"],
                         "its RSS MiB": r["processes"][0]["VmRSS"]})
        short, long = args.minutes
        rows.append({"mode": mode, "video min": f"{long:g}/{short:g}",
                     "peak RSS MiB": round(peaks[long] / peaks[short], 3)})
    print()
    print_table(rows, ["mode", "video min", "frames", "indexed", "seconds", "peak RSS MiB", "top process",
                       "its RSS MiB"])
    for run in runs:
        print(f"\n{run['mode']}, {run['minutes']:g} min: largest processes at their peaks (MiB)")
        print_table(run["processes"], ["pid", "VmRSS", "RssAnon", "RssFile", "RssShmem", "process"])
    ratios = {r["mode"]: r["peak RSS MiB"] for r in rows if "/" in str(r["video min"])}
    print("\nratio of peaks long/short (target <= 1.2):", ratios)
    write_json(args.out, {"target": "peak RSS 60-min <= 1.2 x 1-min", "ratios": ratios, "runs": runs})


if __name__ == "__main__":
    main()
