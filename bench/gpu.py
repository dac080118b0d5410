#!/usr/bin/env python
"""GPU decoding (NVDEC through torchcodec) against the CPU decoder, and what it does for the whole
pipeline: decode-only, encode-only and end-to-end frames/s, and end-to-end / encode-only (how close
the pipeline gets to its encoder's limit). Runs on a machine without a GPU too: it says so and
measures the CPU paths, which checks the script.

    .venv/bin/python bench/gpu.py --out bench/results/gpu.json | tee bench/results/gpu.txt

On a GPU machine: `pip install 'torchcodec==0.17.*'` (CUDA build from PyPI, matching torch 2.14.1)
and `apt-get install ffmpeg` (torchcodec needs FFmpeg 4-9 on the system); then the same command.

Measured, all on the bench archive (bench/common.py, 12 MP4/H.264 640x360 30 fps videos, 1
frame/s, default `IndexConfig`), one process, side by side in one run:
- **decode-only**: the decode stage (`decode_video`: header, scan, plan, decode, resize + crop,
  thumbnails) with the decoder `auto` picks (the GPU when there is one) and with the CPU decoder;
- **encode-only**: the encoder alone on as many model-ready frames (batch 64, on the model's
  device: the GPU when there is one);
- **end-to-end**: decode in a background thread feeding the encoder in batches of 64 (the
  overlap the in-process pipeline does), wall time from the first video opened to the last vector;
- **e2e / encode-only**: 1.0 means decoding is fully hidden behind the encoder;
- **agreement**: GPU vs CPU on every sampled frame: timestamps (max difference, s), squares'
  pixel difference (max and mean levels) and the vectors' cosine (min): the pixel tolerance.
"""
from __future__ import annotations

import argparse
import os
import queue
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ARCHIVES, machine, print_table, rendered_archive, write_json  # noqa: E402

import numpy as np  # noqa: E402


def decode_all(paths, transform, config):
    """(times, squares, decoders used, seconds) of the decode stage over ``paths``."""
    from vidsift.pipeline.decode import decode_video

    times, squares, used = [], [], set()
    started = time.perf_counter()
    for path in paths:
        info, chunks = decode_video(path, transform, config)
        used.add(f"{info.decoder}: {info.decoder_reason}")
        for chunk in chunks:
            times.append(chunk.times)
            squares.append(chunk.pixels)
    return np.concatenate(times), np.concatenate(squares), used, time.perf_counter() - started


def encode_only(encoder, frames: int) -> float:
    height, width = encoder.image_size
    batch = np.random.default_rng(0).integers(0, 256, (64, height, width, 3), dtype=np.uint8)
    encoder.encode_pixels(batch[:8])  # warm-up (CUDA kernels, autotuning)
    done, started = 0, time.perf_counter()
    while done < frames:
        n = min(64, frames - done)
        encoder.encode_pixels(batch[:n])
        done += n
    _sync()
    return frames / (time.perf_counter() - started)


def end_to_end(paths, encoder, transform, config) -> tuple[int, float]:
    """Decoding in a thread, encoding here, batches of 64: (frames, seconds)."""
    from vidsift.pipeline.decode import decode_video

    chunks: queue.Queue = queue.Queue(maxsize=8)

    def produce():
        try:
            for path in paths:
                _, video_chunks = decode_video(path, transform, config)
                for chunk in video_chunks:
                    chunks.put(chunk.pixels)
        finally:
            chunks.put(None)

    started = time.perf_counter()
    thread = threading.Thread(target=produce, daemon=True)
    thread.start()
    pending, frames = [], 0
    while True:
        pixels = chunks.get()
        if pixels is not None:
            pending.append(pixels)
        if sum(len(p) for p in pending) >= 64 or (pixels is None and pending):
            batch = np.concatenate(pending)
            encoder.encode_pixels(batch)
            frames += len(batch)
            pending = []
        if pixels is None:
            break
    _sync()
    thread.join()
    return frames, time.perf_counter() - started


def _sync():
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "vidsift-bench"))
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--pretrained", default="none", help="random ViT-B-32 weights cost what LAION's do")
    parser.add_argument("--videos", type=int, default=12)
    parser.add_argument("--out")
    args = parser.parse_args()

    import torch

    from vidsift.models.encoder import ClipEncoder
    from vidsift.models.spec import resolve_spec
    from vidsift.pipeline import gpu_decode
    from vidsift.pipeline.config import IndexConfig
    from vidsift.pipeline.frames import FrameTransform

    has_cuda = gpu_decode.cuda_available()
    has_codec = gpu_decode.torchcodec_installed()
    print(f"machine: {machine()}")
    if not has_cuda:
        print("no GPU found (torch sees no CUDA device): the figures below are the CPU paths, for checking "
              "this script; GPU decoding is not measured")
    elif not has_codec:
        print("CUDA device found but torchcodec is not installed: pip install 'torchcodec==0.17.*' and the "
              "system ffmpeg (4-9) to measure GPU decoding")
    paths = rendered_archive(Path(args.workdir) / "640x360", **ARCHIVES["640x360"])[:args.videos]
    torch.set_num_threads(os.cpu_count())
    encoder = ClipEncoder.from_spec(resolve_spec(args.model, args.pretrained))
    transform = FrameTransform.from_preprocess_cfg(encoder.preprocess_cfg)
    auto, cpu = IndexConfig(), IndexConfig(decoder="cpu")

    decode_all(paths[:1], transform, auto)  # warm-up: imports, CUDA context, torchcodec's libraries
    t_auto, s_auto, used_auto, sec_auto = decode_all(paths, transform, auto)
    t_cpu, s_cpu, used_cpu, sec_cpu = decode_all(paths, transform, cpu)
    frames = len(t_auto)
    enc_fps = encode_only(encoder, frames)
    e2e_frames, e2e_sec = end_to_end(paths, encoder, transform, auto)
    e2e_cpu_frames, e2e_cpu_sec = end_to_end(paths, encoder, transform, cpu)

    rows = [
        {"stage": "decode-only, auto", "decoder": "; ".join(sorted(used_auto)), "frames": frames,
         "f/s": frames / sec_auto},
        {"stage": "decode-only, CPU", "decoder": "; ".join(sorted(used_cpu)), "frames": len(t_cpu),
         "f/s": len(t_cpu) / sec_cpu},
        {"stage": "encode-only", "decoder": f"{args.model} on {encoder.device}", "frames": frames, "f/s": enc_fps},
        {"stage": "end-to-end, auto", "decoder": "thread + encoder", "frames": e2e_frames, "f/s": e2e_frames / e2e_sec,
         "/ encode-only": e2e_frames / e2e_sec / enc_fps},
        {"stage": "end-to-end, CPU decoder", "decoder": "thread + encoder", "frames": e2e_cpu_frames,
         "f/s": e2e_cpu_frames / e2e_cpu_sec, "/ encode-only": e2e_cpu_frames / e2e_cpu_sec / enc_fps},
    ]
    print()
    print_table(rows, ["stage", "decoder", "frames", "f/s", "/ encode-only"])
    print(f"\ndecode-only auto / CPU: {sec_cpu / sec_auto * frames / max(len(t_cpu), 1):.2f}x")

    agreement = {"frames": frames, "same_count": len(t_auto) == len(t_cpu)}
    if len(t_auto) == len(t_cpu):
        diff = np.abs(s_auto.astype(int) - s_cpu)
        va, vc = encoder.encode_pixels(s_auto), encoder.encode_pixels(s_cpu)
        cosine = (va * vc).sum(1) / np.linalg.norm(va, axis=1) / np.linalg.norm(vc, axis=1)
        agreement.update(max_time_diff_s=float(np.abs(t_auto - t_cpu).max()), max_px_diff=int(diff.max()),
                         mean_px_diff=round(float(diff.mean()), 3), min_cosine=round(float(cosine.min()), 5))
    print(f"agreement, auto vs CPU decoder: {agreement}")
    if not has_cuda or not has_codec:
        print("(auto chose the CPU decoder here, so the agreement is trivially exact)")
    write_json(args.out, {"rows": rows, "agreement": agreement, "cuda": has_cuda, "torchcodec": has_codec})


if __name__ == "__main__":
    main()
