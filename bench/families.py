#!/usr/bin/env python
"""CPU encode-only frames/s of one model per open_clip family, side by side in one run (issue 19).

Each family is measured with the architecture of the checkpoint the README recommends for it
(same config, so the same FLOPs), built with seeded random weights: the weights are a download,
and their values do not change the cost. Only the image tower is kept (indexing never runs the
text tower per frame), so every model fits in memory at once and the models are timed in turns:
``--rounds`` rounds, each timing ``--batches`` batches of ``--batch`` frames per model, the median
per model kept. Interleaving puts every model under the same load, so the ratios to the baseline
(ViT-B-32, vidsift's default) hold even on a busy machine where the absolute figures do not.

Frames go through vidsift's own encoder path (``ClipEncoder.encode_pixels``: uint8 squares at the
model's input size -> normalise -> ``encode_image``), as the indexing job calls it; decoding is
not included (bench/throughput.py measures it). ``--import-cost`` also times ``import open_clip``
in fresh interpreters with and without ``transformers`` importable (open_clip imports it at import
time when it is installed: every vidsift command would pay for it; meaningful only where
transformers is installed).

    nice -n 5 .venv/bin/python bench/families.py --rounds 3 --batches 1 --batch 8 --import-cost \
        --out bench/results/families.json   # its table: bench/results/families.txt
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ROOT, machine, print_table, write_json  # noqa: E402

# (family, open_clip config, the pretrained tag whose architecture it is)
FAMILIES = [
    ("CLIP ViT-B/32", "ViT-B-32", "laion2b_s34b_b79k"),
    ("CLIP ViT-B/16", "ViT-B-16", "laion2b_s34b_b88k"),
    ("ConvNeXt-B (wide)", "convnext_base_w", "laion2b_s13b_b82k_augreg"),
    ("SigLIP B/16", "ViT-B-16-SigLIP", "webli"),
    ("SigLIP2 B/16", "ViT-B-16-SigLIP2", "webli"),
    ("SigLIP2 B/32", "ViT-B-32-SigLIP2-256", "webli"),
    ("PE-Core B/16", "PE-Core-B-16", "meta"),
    ("PE-Core S/16", "PE-Core-S-16-384", "meta"),
    ("PE-Core T/16", "PE-Core-T-16-384", "meta"),
    ("MobileCLIP2-S0", "MobileCLIP2-S0", "dfndr2b"),
    ("MobileCLIP2-S2", "MobileCLIP2-S2", "dfndr2b"),
    ("EVA02-B/16", "EVA02-B-16", "merged2b_s8b_b131k"),
    ("shapes-tiny (bundled)", "shapes-tiny", ""),
]
BASELINE = "ViT-B-32"


def image_encoder(name: str):
    """vidsift's ClipEncoder over ``name`` with random weights and only its image tower."""
    import open_clip
    import torch

    from vidsift.models.encoder import ClipEncoder
    from vidsift.models.loading import LoadedModel
    from vidsift.models.registry import register_bundled_configs
    from vidsift.models.spec import ModelSpec

    register_bundled_configs()
    torch.manual_seed(0)
    model = open_clip.create_model(name, pretrained=None).eval()
    for tower in ("transformer", "token_embedding", "text"):  # CLIP's text tower / CustomTextCLIP's
        if hasattr(model, tower):
            setattr(model, tower, None)
    loaded = LoadedModel(model=model, tokenizer=None, preprocess_cfg=dict(model.visual.preprocess_cfg),
                         device=torch.device("cpu"), autocast_dtype=None, spec=ModelSpec(name, "none"))
    return ClipEncoder(loaded)


def time_batches(encoder, batch, batches: int) -> float:
    started = time.perf_counter()
    for _ in range(batches):
        encoder.encode_pixels(batch)
    return len(batch) * batches / (time.perf_counter() - started)


def import_cost(repeats: int) -> list[dict]:
    """Seconds for ``import open_clip`` in a fresh interpreter, with transformers importable and
    with it hidden (``sys.modules['transformers'] = None``), alternating."""
    code = {"with transformers": "import open_clip",
            "without transformers": "import sys; sys.modules['transformers'] = None; import open_clip"}
    times = {label: [] for label in code}
    for _ in range(repeats):
        for label, source in code.items():
            started = time.perf_counter()
            subprocess.run([sys.executable, "-c", source], cwd=ROOT, check=True, capture_output=True)
            times[label].append(time.perf_counter() - started)
    try:
        import transformers
        version = transformers.__version__
    except ImportError:
        version = None
    base = statistics.median(times["without transformers"])
    return [{"import open_clip": label, "transformers": version if label.startswith("with ") else "-",
             "median_s": statistics.median(ts), "runs": len(ts), "x_without": statistics.median(ts) / base}
            for label, ts in times.items()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batches", type=int, default=2)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: every core)")
    parser.add_argument("--only", nargs="*", help="open_clip configs to run (default: all)")
    parser.add_argument("--import-cost", action="store_true", help="also time `import open_clip` +- transformers")
    parser.add_argument("--out", default=None, help="JSON file for the figures")
    args = parser.parse_args()

    import numpy as np
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    families = [f for f in FAMILIES if not args.only or f[1] in args.only]
    print(f"machine: {machine()}  torch threads: {torch.get_num_threads()}", flush=True)
    encoders, batches, build_s = {}, {}, {}
    for _, name, _ in families:
        started = time.perf_counter()
        encoders[name] = image_encoder(name)
        build_s[name] = time.perf_counter() - started
        height, width = encoders[name].image_size
        batches[name] = np.random.default_rng(0).integers(0, 256, (args.batch, height, width, 3), dtype=np.uint8)
        encoders[name].encode_pixels(batches[name][:2])  # warm-up (allocator, kernels)
        print(f"built {name} in {build_s[name]:.1f} s", flush=True)

    rates: dict[str, list[float]] = {name: [] for _, name, _ in families}
    for round_ in range(args.rounds):
        for _, name, _ in families:
            rates[name].append(time_batches(encoders[name], batches[name], args.batches))
        print(f"round {round_ + 1}/{args.rounds} done", flush=True)

    base = statistics.median(rates[BASELINE]) if BASELINE in rates else None
    rows = []
    for family, name, tag in families:
        encoder = encoders[name]
        visual = sum(p.numel() for p in encoder.model.visual.parameters())
        fps = statistics.median(rates[name])
        rows.append({"family": family, "config": name, "tag": tag or "(bundled)",
                     "input": "x".join(map(str, encoder.image_size)), "image_params_M": visual / 1e6,
                     "dim": int(encoder.encode_pixels(batches[name][:1]).shape[1]),
                     "frames_per_s": fps, "x_vit_b32": fps / base if base else None,
                     "spread": (max(rates[name]) - min(rates[name])) / fps})
    print(f"\nencode-only, CPU, batch {args.batch}, {args.rounds} rounds x {args.batches} batches, median "
          f"(spread = (max-min)/median over the rounds):")
    print_table(rows, ["family", "config", "tag", "input", "image_params_M", "dim", "frames_per_s", "x_vit_b32",
                       "spread"])
    payload = {"rounds": args.rounds, "batches": args.batches, "batch": args.batch,
               "threads": torch.get_num_threads(), "rows": rows, "raw": rates}
    if args.import_cost:
        imports = import_cost(repeats=3)
        print("\n`import open_clip` in a fresh interpreter (median of 3, alternating):")
        print_table(imports, ["import open_clip", "transformers", "median_s", "runs", "x_without"])
        payload["import_cost"] = imports
    write_json(args.out, payload)


if __name__ == "__main__":
    main()
