#!/usr/bin/env python
"""End-to-end `vidsift index` throughput against (a) the machine's limit for the same frames and
(b) a naive baseline, side by side in one run, per model.

- **e2e**: `vidsift index ARCHIVE` (the real CLI, default runner: the local pipeline since issue
  20; `--also-ray` adds `--address local`, a fresh local Ray) on a rendered archive. Reported as
  wall time and as the steady rate the job reports once its first video is done (`steady_fps`:
  frames per second without the fixed start-up of Ray and the model, which a long job amortises).
- **decode-only**: the job's own decode stage (`pipeline.decode.decode_video`: open, sparse
  decode of the 1 frame/s plan, resize + crop, thumbnails) over the same videos, one process per
  core, nothing else running.
- **encode-only**: the encoder alone on as many model-ready frames, every core, batch 64.
- **limit** = min(decode-only, encode-only): what a perfect pipeline could reach if each stage
  had the whole machine while the other cost nothing (the bound with a GPU).
- **shared-CPU bound** = 1 / (1/decode-only + 1/encode-only): on a CPU-only machine both stages
  share the same cores, so this is what a perfect pipeline reaches there.
- **naive**: one process, decord reads every frame, keeps one per second, open_clip's PIL
  transform, one frame per encoder call (the loop people write first).

Rates are sampled frames per second and video-seconds per second.

    .venv/bin/python bench/throughput.py --copies 6 --also-no-refine --out bench/results/throughput.json

``--copies 6`` indexes six remuxed copies of the 12 rendered videos (72 videos, one hour of
video): long enough that the job's fixed start-up weighs what it does on a real archive.
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

from common import (ARCHIVES, MODELS, print_table, remuxed_copies, rendered_archive, run_vidsift,  # noqa: E402
                    video_seconds, write_json)

import numpy as np  # noqa: E402


def _decode_one(job: tuple[str, dict]) -> int:
    from vidsift.pipeline.config import IndexConfig
    from vidsift.pipeline.decode import decode_video
    from vidsift.pipeline.frames import FrameTransform

    path, preprocess_cfg = job
    _, chunks = decode_video(path, FrameTransform.from_preprocess_cfg(preprocess_cfg), IndexConfig())
    return sum(len(chunk.times) for chunk in chunks)


def _warm_worker_task(_) -> None:
    return None


def _warm_worker() -> None:
    import decord  # noqa: F401
    import torch

    torch.set_num_threads(1)  # as in a Ray task with one CPU


def decode_only(paths: list[str], preprocess_cfg: dict) -> tuple[int, float]:
    """(frames, seconds) of the decode stage alone, one process per core, largest files first."""
    jobs = [(p, preprocess_cfg) for p in sorted(paths, key=os.path.getsize, reverse=True)]
    with mp.get_context("spawn").Pool(os.cpu_count(), initializer=_warm_worker) as pool:
        pool.map(_warm_worker_task, range(os.cpu_count()))  # processes up and imported before timing
        started = time.perf_counter()
        frames = sum(pool.imap_unordered(_decode_one, jobs))
        return frames, time.perf_counter() - started


def encode_only(encoder, frames: int, budget_s: float = 20.0) -> float:
    """Frames per second of the encoder alone (every core, batch 64) on ``frames`` frames, or as
    many as fit in ``budget_s``."""
    import torch

    torch.set_num_threads(os.cpu_count())
    height, width = encoder.image_size
    batch = np.random.default_rng(0).integers(0, 256, (64, height, width, 3), dtype=np.uint8)
    encoder.encode_pixels(batch[:8])
    done, started = 0, time.perf_counter()
    while done < frames and time.perf_counter() - started < budget_s:
        encoder.encode_pixels(batch[:min(64, frames - done)])
        done += min(64, frames - done)
    return done / (time.perf_counter() - started)


def naive(paths: list[str], model: str, pretrained: str, budget_s: float, fps: float = 1.0,
          include_loading: bool = False) -> tuple[int, float, float]:
    """(frames, seconds, video seconds) of the naive loop over ``paths`` at ``fps`` sampled frames
    per second of video (stops after ``budget_s``); ``include_loading``: the seconds include
    loading the model, as the CLI's wall time does."""
    loading_started = time.perf_counter()
    import decord
    import torch
    from PIL import Image

    from vidsift.models.loading import load_model
    from vidsift.models.spec import resolve_spec

    torch.set_num_threads(os.cpu_count())
    from open_clip.transform import PreprocessCfg, image_transform_v2

    loaded = load_model(resolve_spec(model, pretrained))
    preprocess = image_transform_v2(PreprocessCfg(**loaded.preprocess_cfg), is_train=False)  # open_clip's own
    frames = 0
    covered = 0.0
    started = loading_started if include_loading else time.perf_counter()
    for path in paths:
        reader = decord.VideoReader(path)
        stamps = reader.get_frame_timestamp(np.arange(len(reader)))[:, 0]
        next_t = 0.0
        for i in range(len(reader)):
            frame = reader.next().asnumpy()
            if stamps[i] + 1e-6 >= next_t:
                with torch.inference_mode():
                    loaded.model.encode_image(preprocess(Image.fromarray(frame))[None], normalize=True)
                frames += 1
                next_t += 1.0 / fps
        covered += float(reader.get_frame_timestamp(len(reader) - 1)[1])
        if time.perf_counter() - started > budget_s:
            break
    return frames, time.perf_counter() - started, covered


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "vidsift-bench"))
    parser.add_argument("--archive", default="640x360", choices=list(ARCHIVES))
    parser.add_argument("--models", nargs="+", default=[m for m, _ in MODELS])
    parser.add_argument("--copies", type=int, default=1,
                        help="index N remuxed copies of each video (same frames, different bytes): a long "
                             "archive, so the job's fixed start-up weighs what it does on a real one")
    parser.add_argument("--also-no-refine", action="store_true",
                        help="also run `vidsift index --no-refine-cuts`, to show what refining the cuts costs")
    parser.add_argument("--also-ray", action="store_true",
                        help="also run `vidsift index --address local` (a fresh local Ray: the default before issue 20)")
    parser.add_argument("--naive-budget", type=float, default=90.0, help="seconds the naive loop may run")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)

    from vidsift.models.encoder import ClipEncoder
    from vidsift.models.spec import resolve_spec

    paths = rendered_archive(Path(args.workdir) / args.archive, **ARCHIVES[args.archive])
    folder = Path(args.workdir) / args.archive / "videos"
    if args.copies > 1:
        folder = Path(args.workdir) / f"{args.archive}-x{args.copies}"
        paths = remuxed_copies(paths, folder, args.copies)
    seconds_of_video = video_seconds(paths)
    rows = []
    for model, pretrained in MODELS:
        if model not in args.models:
            continue
        encoder = ClipEncoder.from_spec(resolve_spec(model, pretrained))
        frames, decode_s = decode_only(paths, encoder.preprocess_cfg)
        decode_fps = frames / decode_s
        encode_fps = encode_only(encoder, frames)
        naive_frames, naive_s, naive_video_s = naive(paths, model, pretrained, args.naive_budget)
        naive_fps = naive_frames / naive_s
        limit = min(decode_fps, encode_fps)
        # On a CPU-only machine both stages run on the same cores, so a perfect pipeline reaches
        # only the harmonic combination of the two rates (with a GPU, encoding has its own
        # device and ``limit`` is the bound).
        shared = 1.0 / (1.0 / decode_fps + 1.0 / encode_fps)
        variants = [[]] + ([["--no-refine-cuts"]] if args.also_no_refine else []) + \
            ([["--address", "local"]] if args.also_ray else [])
        for variant in variants:
            with tempfile.TemporaryDirectory() as tmp:
                run = run_vidsift(["index", str(folder), "--db", f"{tmp}/db", "--model", model,
                                   "--pretrained", pretrained, "--json", "--quiet", *variant])
            report = run["report"]
            assert report["frames"] == frames, (report["frames"], frames)
            steady = report["steady_fps"]
            e2e_wall_fps = frames / run["seconds"]
            rows.append({
                "model": model, "variant": " ".join(variant) or "default", "runner": report.get("runner"),
                "frames": frames, "load_avg": round(os.getloadavg()[0], 1),
                "video_s": round(seconds_of_video, 1),
                "decode_only_fps": round(decode_fps, 1), "encode_only_fps": round(encode_fps, 1),
                "limit_fps": round(limit, 1), "shared_cpu_bound_fps": round(shared, 1),
                "e2e_wall_s": round(run["seconds"], 1), "e2e_wall_fps": round(e2e_wall_fps, 1),
                "e2e_startup_s": report["startup_seconds"], "e2e_steady_fps": steady,
                "e2e_video_s_per_s": round(e2e_wall_fps * seconds_of_video / frames, 1),
                "naive_fps": round(naive_fps, 2), "naive_frames": naive_frames,
                "naive_video_s_per_s": round(naive_video_s / naive_s, 2),
                "steady_vs_limit": round(steady / limit, 2), "wall_vs_limit": round(e2e_wall_fps / limit, 2),
                "wall_vs_shared_bound": round(e2e_wall_fps / shared, 2),
                "steady_vs_naive": round(steady / naive_fps, 2), "wall_vs_naive": round(e2e_wall_fps / naive_fps, 2),
            })
            print(rows[-1], flush=True)
    print(f"\n{len(paths)} videos, {seconds_of_video:.0f} s of {args.archive} video, 1 frame/s; rates in frames/s\n")
    print_table(rows, ["model", "variant", "decode_only_fps", "encode_only_fps", "limit_fps", "shared_cpu_bound_fps",
                       "e2e_startup_s", "e2e_steady_fps", "e2e_wall_fps", "naive_fps", "steady_vs_limit",
                       "wall_vs_limit", "wall_vs_shared_bound", "steady_vs_naive", "wall_vs_naive"])
    write_json(args.out, {"archive": args.archive, "copies": args.copies, "videos": len(paths),
                          "video_seconds": seconds_of_video,
                          "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
