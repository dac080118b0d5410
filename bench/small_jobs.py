#!/usr/bin/env python
"""A laptop-sized job (issue 20): 20 short videos at ``--fps 4``, ViT-B-32 with random weights,
measured side by side in one run:

- **encode-only**: the encoder alone on as many model-ready frames (every core, batch 64): the
  limit of any pipeline on this machine, since encoding ViT-B-32 costs far more than decoding;
- **naive**: one process, decord reads every frame, keeps one every 1/fps seconds, open_clip's
  PIL transform, one frame per encoder call (the loop a user writes first), model loading included;
- **ray**: `vidsift index --address local` (the old default: a fresh local Ray, the model loaded
  in the driver's check and again in the embedding actor);
- **default**: `vidsift index` with no runner flag (the local pipeline since issue 20).

Every CLI figure is wall-clock frames per second of the whole command (start-up included: that is
what a user waits for); encode-only and naive are the loops' own rates (model loading excluded,
which only makes them harder to beat). Ratios are to encode-only and to naive. On a machine that
others load, wall-clock rates move with their load, so each run also records the CPU seconds it
used (the whole process tree: Ray's processes, decoding processes) and the load average before and
after it; ``cpu_per_frame_ms`` ratios hold whatever the load.

    .venv/bin/python bench/small_jobs.py --out bench/results/small_jobs.json
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import print_table, rendered_archive, run_vidsift, video_seconds, write_json  # noqa: E402
from throughput import encode_only, naive  # noqa: E402

# 20 videos of two 4-8 s scenes (~12 s each, ~240 s in all: ~960 frames at 4 fps), 640x360 H.264.
SMALL = dict(videos=20, seed=2020, formats=("mp4",), sizes=[(640, 360)], fps_choices=[30], n_scenes=2,
             scene_len=(4.0, 8.0))


def load() -> float:
    return round(os.getloadavg()[0], 2)


class TreeCpu:
    """CPU seconds used by a process tree (every descendant of this process, Ray's raylet, GCS and
    workers included: they are not all reaped by the command, so ``os.times`` misses them), from
    /proc every ``interval`` s: the last reading of each process, summed."""

    def __init__(self, interval: float = 0.25):
        import threading

        self.interval, self.seen, self.stop = interval, {}, threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()

    def _run(self):
        tick = os.sysconf("SC_CLK_TCK")
        while not self.stop.is_set():
            parents, cpu = {}, {}
            for entry in os.listdir("/proc"):
                if entry.isdigit():
                    try:
                        with open(f"/proc/{entry}/stat") as fh:
                            fields = fh.read().rsplit(")", 1)[1].split()
                    except OSError:
                        continue
                    parents[int(entry)] = int(fields[1])
                    cpu[int(entry)] = (int(fields[11]) + int(fields[12])) / tick
            mine, stack = set(), [os.getpid()]
            while stack:
                pid = stack.pop()
                children = [p for p, parent in parents.items() if parent == pid and p not in mine]
                mine.update(children)
                stack.extend(children)
            for pid in mine:
                self.seen[pid] = cpu[pid]
            self.stop.wait(self.interval)

    @property
    def seconds(self) -> float:
        return sum(self.seen.values())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "vidsift-bench"))
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--pretrained", default="none")
    parser.add_argument("--fps", type=float, default=4.0)
    parser.add_argument("--runs", nargs="+", default=["encode", "naive", "ray", "default"],
                        choices=["encode", "naive", "ray", "default"])
    parser.add_argument("--naive-budget", type=float, default=300.0,
                        help="seconds the naive loop may run (its rate is what counts)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)

    paths = rendered_archive(Path(args.workdir) / "small-20", **SMALL)
    folder = str(Path(paths[0]).parent)
    seconds_of_video = video_seconds(paths)
    rows, frames = {}, None

    def cli(name: str, extra: list[str]) -> None:
        nonlocal frames
        before = load()
        with tempfile.TemporaryDirectory() as tmp, TreeCpu() as tree:
            run = run_vidsift(["index", folder, "--db", f"{tmp}/db", "--model", args.model, "--pretrained",
                               args.pretrained, "--fps", str(args.fps), "--json", "--quiet", *extra])
        cpu = tree.seconds
        report = run["report"]
        frames = report["frames"]
        rows[name] = {"run": name, "frames": frames, "wall_s": round(run["seconds"], 1),
                      "fps": round(frames / run["seconds"], 2), "startup_s": report["startup_seconds"],
                      "steady_fps": report["steady_fps"], "runner": report.get("runner"), "cpu_s": round(cpu, 1),
                      "cpu_per_frame_ms": round(1000 * cpu / frames, 1), "load_before": before, "load_after": load()}
        print(rows[name], flush=True)

    # The CLI runs first: they say how many frames the job samples, which the others then match.
    for name, extra in (("ray", ["--address", "local"]), ("default", [])):
        if name in args.runs:
            cli(name, extra)
    if frames is None:
        raise SystemExit("run at least one of ray/default: they count the frames")
    if "naive" in args.runs:
        before, cpu = load(), time.process_time()
        n_frames, seconds, _ = naive(paths, args.model, args.pretrained, args.naive_budget, fps=args.fps)
        cpu = time.process_time() - cpu  # model loading included here, excluded from its rate
        rows["naive"] = {"run": "naive", "frames": n_frames, "wall_s": round(seconds, 1),
                         "fps": round(n_frames / seconds, 2), "cpu_s": round(cpu, 1),
                         "cpu_per_frame_ms": round(1000 * cpu / n_frames, 1), "load_before": before,
                         "load_after": load()}
        print(rows["naive"], flush=True)
    if "encode" in args.runs:
        from vidsift.models.encoder import ClipEncoder
        from vidsift.models.spec import resolve_spec

        before = load()
        started = time.perf_counter()
        encoder = ClipEncoder.from_spec(resolve_spec(args.model, args.pretrained))
        loading = time.perf_counter() - started
        cpu = time.process_time()
        rate = encode_only(encoder, frames, budget_s=600.0)
        cpu = time.process_time() - cpu
        rows["encode"] = {"run": "encode-only", "frames": frames, "wall_s": round(frames / rate, 1), "fps": round(rate, 2),
                          "cpu_s": round(cpu, 1), "cpu_per_frame_ms": round(1000 * cpu / frames, 1),
                          "model_loading_s": round(loading, 1), "load_before": before, "load_after": load()}
        print(rows["encode"], flush=True)
    for row in rows.values():
        for base, label in (("encode", "encode_only"), ("naive", "naive")):
            if base in rows:
                row[f"vs_{label}"] = round(row["fps"] / rows[base]["fps"], 2)
                row[f"cpu_vs_{label}"] = round(rows[base]["cpu_per_frame_ms"] / row["cpu_per_frame_ms"], 2)
    print(f"\n{len(paths)} videos, {seconds_of_video:.0f} s of video, {frames} frames at --fps {args.fps:g}, "
          f"{args.model} ({args.pretrained or 'bundled'}); whole-command frames/s\n")
    print_table(list(rows.values()), ["run", "frames", "wall_s", "fps", "startup_s", "steady_fps", "vs_encode_only",
                                      "vs_naive", "cpu_per_frame_ms", "cpu_vs_encode_only", "cpu_vs_naive",
                                      "load_before", "load_after"])
    write_json(args.out, {"videos": len(paths), "video_seconds": seconds_of_video, "fps": args.fps,
                          "model": args.model, "pretrained": args.pretrained, "rows": list(rows.values())})
    return 0


if __name__ == "__main__":
    sys.exit(main())
