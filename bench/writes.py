#!/usr/bin/env python
"""Cost of one writer flush (32 videos) as the tables grow: appending new videos against merging
them (the reference path, ``merge_insert`` with delete-by-source, which joins against the whole
table), side by side: each flush is written to both stores in turn, so both see the same machine.

    .venv/bin/python bench/writes.py --videos 3200 --out bench/results/writes.json

Synthetic records shaped like ViT-B-32 output of 30-second videos at 1 frame/s: 512-d vectors,
30 frames and 3 segments a video, 3 KB thumbnails. Nothing is decoded or embedded: this isolates
the store's part of a long job (``bench/scale.py`` measures the whole job).
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

from bench.common import print_table, write_json  # noqa: E402
from vidsift.pipeline.model_store import ModelRef  # noqa: E402
from vidsift.pipeline.records import FrameRows, SegmentRow, VideoRecord  # noqa: E402
from vidsift.pipeline.store import VideoStore  # noqa: E402

DIM, FRAMES, SEGMENTS, THUMB_BYTES, BATCH = 512, 30, 3, 3000, 32
MODEL = ModelRef("m", "bench")  # the vectors are made here: a model known by key and table suffix alone


def make_batch(start: int, rng: np.random.Generator) -> list[VideoRecord]:
    def units(n: int) -> np.ndarray:
        v = rng.normal(size=(n, DIM)).astype(np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    thumb = rng.bytes(THUMB_BYTES)
    records = []
    for k in range(start, start + BATCH):
        frames = units(FRAMES)
        step = FRAMES // SEGMENTS
        records.append(VideoRecord(
            video_id=f"{k:032x}", path=f"/archive/{k // 1000:03d}/{k:06d}.mp4", size_bytes=10**7, mtime_ns=k,
            duration=float(FRAMES), fps=30.0, width=640, height=360, n_frames=FRAMES, settings="{}",
            vector=units(1)[0],
            segments=[SegmentRow(start=float(s * step), end=float((s + 1) * step), n_frames=step, thumbnail=thumb,
                                 vector=frames[s * step:(s + 1) * step].mean(0)) for s in range(SEGMENTS)],
            frames=FrameRows(np.arange(FRAMES, dtype=float), frames, [thumb] * FRAMES)))
    return records


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--videos", type=int, default=3200)
    parser.add_argument("--workdir", default=tempfile.gettempdir())
    parser.add_argument("--out")
    args = parser.parse_args(argv)

    root = Path(tempfile.mkdtemp(prefix="vidsift-writes-", dir=args.workdir))
    stores = {"merge": VideoStore(str(root / "merge")), "append": VideoStore(str(root / "append"))}
    rng = np.random.default_rng(0)
    flushes = []
    try:
        for start in range(0, args.videos, BATCH):
            batch = make_batch(start, rng)
            row = {"videos before": start}
            for mode, store in stores.items():
                began = time.perf_counter()
                store.model(MODEL).write_videos(batch, new_ids={r.video_id for r in batch} if mode == "append" else ())
                row[f"{mode} s"] = time.perf_counter() - began
            flushes.append(row)
        counts = {mode: [t.count_rows() for t in (s.model(MODEL).videos(), s.model(MODEL).segments(),
                                                  s.model(MODEL).frames())] for mode, s in stores.items()}
    finally:
        shutil.rmtree(root, ignore_errors=True)
    assert counts["merge"] == counts["append"], counts

    tenth = max(1, len(flushes) // 10)
    summary = []
    for k in range(0, len(flushes), tenth):
        part = flushes[k:k + tenth]
        merge, append = (float(np.median([f[f"{m} s"] for f in part])) for m in ("merge", "append"))
        summary.append({"videos stored": part[0]["videos before"], "frame rows": part[0]["videos before"] * FRAMES,
                        "merge flush s": round(merge, 3), "append flush s": round(append, 3),
                        "merge / append": round(merge / append, 2)})
    print_table(summary, list(summary[0]))
    first, last = summary[1], summary[-1]  # the first tenth includes creating the tables
    growth = {m: round(last[f"{m} flush s"] / first[f"{m} flush s"], 2) for m in ("merge", "append")}
    print(f"\nflush cost, last tenth / second tenth: merge {growth['merge']}, append {growth['append']}"
          f"  (rows at the end: videos, segments, frames = {counts['append']})")
    write_json(args.out, {"videos": args.videos, "batch": BATCH, "frames_per_video": FRAMES, "dim": DIM,
                          "growth_last_over_second_tenth": growth, "tenths": summary,
                          "flushes": [{k: round(v, 4) for k, v in f.items()} for f in flushes]})
    return 0


if __name__ == "__main__":
    sys.exit(main())
