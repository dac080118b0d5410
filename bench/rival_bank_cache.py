#!/usr/bin/env python
"""What the rival-bank file cache saves a one-shot `vidsift search`: the CPU of ``load_calibration``
in a fresh process, with an empty cache (cold: the default bank is embedded and written) and then
with the cache that run wrote (warm: read back), in interleaved rounds.

Each process loads the model and embeds one text first, so only the calibration is timed. The
archive must be indexed with the model (any `bench/eval_confidence.py` archive is).

    .venv/bin/python bench/rival_bank_cache.py /tmp/conf-dev/archive-174001/db --rounds 5
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

CHILD = r"""
import json, sys, time
from vidsift.models.encoder import ClipEncoder
from vidsift.models.spec import resolve_spec
from vidsift.pipeline.confidence import load_calibration
from vidsift.pipeline.store import VideoStore
store = VideoStore(sys.argv[1], search_catalog=False)
encoder = ClipEncoder.from_spec(resolve_spec(sys.argv[2]))
encoder.encode_texts(["warm"])
wall, cpu = time.perf_counter(), time.process_time()
calibration = load_calibration(store, encoder)
print(json.dumps({"source": calibration.source, "rivals": len(calibration.bank.phrases),
                  "wall_s": time.perf_counter() - wall, "cpu_s": time.process_time() - cpu}))
"""


def one(db: str, model: str, cache: Path) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, db, model], capture_output=True, text=True, check=True,
                         env={**os.environ, "VIDSIFT_CACHE_DIR": str(cache)})
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("db", help="an archive indexed with --model")
    parser.add_argument("--model", default="shapes-tiny")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", default=None, help="JSON file for the rows")
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory(prefix="vidsift-bank-cache-") as tmp:
        for r in range(args.rounds):
            cache = Path(tmp) / f"round{r}"          # empty: the cold run embeds and writes the bank
            for kind in ("cold", "warm"):
                rows.append({"round": r, "kind": kind, **one(args.db, args.model, cache)})
                print(json.dumps(rows[-1]), flush=True)
    med = {k: float(np.median([row["cpu_s"] for row in rows if row["kind"] == k])) for k in ("cold", "warm")}
    summary = {"rounds": args.rounds, "model": args.model, "rivals": rows[0]["rivals"],
               "cold_cpu_s_median": round(med["cold"], 3), "warm_cpu_s_median": round(med["warm"], 3),
               "warm_over_cold": round(med["warm"] / med["cold"], 3)}
    print(json.dumps(summary))
    if args.out:
        Path(args.out).write_text(json.dumps({"summary": summary, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
