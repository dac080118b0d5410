#!/usr/bin/env python
"""Cost of each indexing stage, per sampled frame, on one CPU core (what one decode task gets) and
with every core for the encoder: where the time of `vidsift index` goes, and which alternative
each stage uses.

Stages: open + probe; sparse decode of the 1-frame/s plan at full size, and with decoder-side
resize (decord width=/height=); resize + crop to the model square (torch on tensors, PIL as
open_clip does, and the pipeline's own `FrameTransform`); thumbnails; encoding at batch sizes 1,
16 and 64 (ViT-B-32 random weights: same cost as the LAION weights; shapes-tiny bundled);
pooling into segments, cut refinement, and the LanceDB write of one video.

    .venv/bin/python bench/stages.py --out bench/results/stages.json
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ARCHIVES, MODELS, print_table, rendered_archive, write_json  # noqa: E402

import numpy as np  # noqa: E402


def _per_frame(seconds: float, frames: int) -> float:
    return 1000.0 * seconds / max(frames, 1)


def decode_stages(paths: list[str], transform) -> dict:
    """ms per sampled frame of each decode-side stage, one thread."""
    import decord
    from PIL import Image

    from vidsift.pipeline.config import IndexConfig
    from vidsift.pipeline.decode import open_video, probe
    from vidsift.pipeline.frames import jpeg_thumbnail
    from vidsift.pipeline.sampling import plan_frame_indices

    config = IndexConfig()
    totals = dict.fromkeys(["open_probe", "decode_full", "decode_resized_2x", "decode_resized_1x",
                            "resize_torch", "resize_pil", "pipeline_transform", "thumbnail"], 0.0)
    frames_total = 0
    for path in paths:
        t = time.perf_counter()
        reader = open_video(path)
        info, starts = probe(reader, path)
        totals["open_probe"] += time.perf_counter() - t
        indices = plan_frame_indices(starts, info.duration, config.sampling).tolist()
        frames_total += len(indices)
        t = time.perf_counter()
        frames = np.concatenate([reader.get_batch(indices[b:b + 16]).asnumpy() for b in range(0, len(indices), 16)])
        totals["decode_full"] += time.perf_counter() - t
        out_h, out_w = transform.resized_shape(info.height, info.width)
        for key, scale in (("decode_resized_2x", 2), ("decode_resized_1x", 1)):
            small = decord.VideoReader(path, num_threads=1, width=out_w * scale // 2 * 2, height=out_h * scale // 2 * 2)
            t = time.perf_counter()
            for b in range(0, len(indices), 16):
                small.get_batch(indices[b:b + 16]).asnumpy()
            totals[key] += time.perf_counter() - t
        t = time.perf_counter()
        _torch_resize(frames, out_h, out_w)
        totals["resize_torch"] += time.perf_counter() - t
        t = time.perf_counter()
        for frame in frames:
            Image.fromarray(frame).resize((out_w, out_h), Image.BICUBIC)
        totals["resize_pil"] += time.perf_counter() - t
        t = time.perf_counter()
        transform(frames)
        totals["pipeline_transform"] += time.perf_counter() - t
        t = time.perf_counter()
        for frame in frames:
            jpeg_thumbnail(frame, config.thumbnail_height)
        totals["thumbnail"] += time.perf_counter() - t
    return {key: round(_per_frame(value, frames_total), 2) for key, value in totals.items()} | {"frames": frames_total}


def _torch_resize(frames: np.ndarray, out_h: int, out_w: int):
    """Antialiased bicubic on float tensors: torchvision's tensor Resize."""
    import torch
    import torch.nn.functional as F

    batch = torch.from_numpy(frames).permute(0, 3, 1, 2).float()
    return F.interpolate(batch, size=(out_h, out_w), mode="bicubic", antialias=True).round_().clamp_(0, 255)


def encode_stage(encoder, threads: int, seconds: float = 4.0) -> dict:
    """ms per frame at batch sizes 1, 16, 64, with ``threads`` torch threads."""
    import torch

    torch.set_num_threads(threads)
    height, width = encoder.image_size
    out = {}
    for batch in (1, 16, 64):
        pixels = np.random.default_rng(0).integers(0, 256, (batch, height, width, 3), dtype=np.uint8)
        encoder.encode_pixels(pixels)  # warm-up
        n, t = 0, time.perf_counter()
        while time.perf_counter() - t < seconds:
            encoder.encode_pixels(pixels)
            n += batch
        out[f"encode_b{batch}"] = round(_per_frame(time.perf_counter() - t, n), 2)
    torch.set_num_threads(1)
    return out


def after_encode_stages(paths: list[str], encoder) -> dict:
    """Pooling (segmentation + mean pool), cut refinement and the LanceDB write, per video -> per frame."""
    from vidsift.pipeline.config import IndexConfig, SegmentConfig
    from vidsift.pipeline.indexing import assemble_record, embed_video
    from vidsift.pipeline.sources import identify
    from vidsift.pipeline.store import VideoStore

    totals = {"pool": 0.0, "pool_and_refine_cuts": 0.0, "write": 0.0}
    frames_total = 0
    no_refine = IndexConfig(segments=SegmentConfig(refine_cuts=False))
    config = IndexConfig()
    with tempfile.TemporaryDirectory() as tmp:
        store = VideoStore(str(Path(tmp) / "db"))
        for path in paths:
            video = identify(path, {})
            embedded = embed_video(path, encoder, config)
            frames_total += len(embedded.times)
            args = (video, embedded.info, embedded.times, embedded.vectors, embedded.thumbnails)
            t = time.perf_counter()
            assemble_record(*args, no_refine, encoder.model_key)
            totals["pool"] += time.perf_counter() - t
            t = time.perf_counter()
            record = assemble_record(*args, config, encoder.model_key)
            totals["pool_and_refine_cuts"] += time.perf_counter() - t
            t = time.perf_counter()
            store.model(encoder.spec).write_videos([record])
            totals["write"] += time.perf_counter() - t
    return {key: round(_per_frame(value, frames_total), 2) for key, value in totals.items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "vidsift-bench"))
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)

    import torch

    from vidsift.models.encoder import ClipEncoder
    from vidsift.models.spec import resolve_spec
    from vidsift.pipeline.frames import FrameTransform

    torch.set_num_threads(1)
    rows = []
    for model, pretrained in MODELS:
        encoder = ClipEncoder.from_spec(resolve_spec(model, pretrained))
        transform = FrameTransform.from_preprocess_cfg(encoder.preprocess_cfg)
        encode = encode_stage(encoder, threads=os.cpu_count() or 1)
        for archive, options in ARCHIVES.items():
            paths = rendered_archive(Path(args.workdir) / archive, **options)[:4]
            row = {"model": model, "video": archive, **decode_stages(paths, transform), **encode,
                   **after_encode_stages(paths[:2], encoder)}
            rows.append(row)
            print(f"{model} {archive}: done", flush=True)
    print("\nms per sampled frame (decode side: one thread; encode: all cores)\n")
    print_table(rows, ["model", "video", "frames", "open_probe", "decode_full", "decode_resized_2x", "decode_resized_1x",
                       "resize_torch", "resize_pil", "pipeline_transform", "thumbnail", "encode_b1", "encode_b16",
                       "encode_b64", "pool", "pool_and_refine_cuts", "write"])
    write_json(args.out, {"rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
