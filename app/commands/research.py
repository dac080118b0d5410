"""Commands for measuring and making models: `eval` (retrieval, zero-shot, moments, boundaries and
the "no match" decision on a labelled archive), `synth` (render the shapes world), `train`."""
from __future__ import annotations

import contextlib
import sys
from pathlib import Path

from vidsift.app.exit_codes import EXIT_OK
from vidsift.pipeline.shapes.manifest import MANIFEST, load_manifest
from vidsift.pipeline.shapes.spec import CONTAINERS

from .common import DEFAULT_DB, Command, add_common, add_json, add_sampling, emit, index_config, spec_of


def add_eval_arguments(p) -> None:
    p.add_argument("manifest", help="a shapes-world manifest.json (or its folder), or an MSR-VTT test CSV")
    add_common(p)
    add_sampling(p)
    p.add_argument("--videos", default=None, help="folder of <video_id>.mp4 files (MSR-VTT CSV only)")
    p.add_argument("--pooling", default="both", choices=["mean", "qs", "both"],
                   help="segment scoring: mean pooling, query-scored pooling, or both side by side")
    p.add_argument("--labels-file", default=None, help="label set for zero-shot (default: the 28 shapes labels)")
    p.add_argument("--no-ray", action="store_true",
                   help="kept for old scripts: eval always indexes with the in-process pipeline (no Ray)")


def evaluate(args) -> int:
    # lazy: torch, open_clip and lancedb cost seconds of every `vidsift` start-up (app/cli.py)
    from vidsift.models.encoder import ClipEncoder
    from vidsift.pipeline.classify import parse_labels
    from vidsift.pipeline.confidence import load_calibration
    from vidsift.pipeline.eval_report import msrvtt_report, read_msrvtt_csv
    from vidsift.pipeline.indexing import index_sequential, resegment_store
    from vidsift.pipeline.shapes.evaluation import format_no_match, full_report, no_match_report
    from vidsift.pipeline.store import VideoStore

    config = index_config(args)
    is_csv = args.manifest.lower().endswith(".csv")
    if is_csv:
        if not args.videos:
            raise ValueError("an MSR-VTT CSV needs --videos DIR holding <video_id>.mp4 files")
        queries = read_msrvtt_csv(args.manifest, args.videos)
        paths = sorted({q["abspath"] for q in queries})
    else:
        _, videos = load_manifest(args.manifest)
        paths = [v["abspath"] for v in videos]
    source = Path(args.manifest).resolve()
    db = args.db if args.db != DEFAULT_DB else str((source if source.is_dir() else source.parent) / "vidsift-eval.lance")
    spec = spec_of(args, db=db)  # the eval database's model when --model is not given
    store = VideoStore(db)
    encoder = ClipEncoder.from_spec(spec)
    report = index_sequential(store, encoder, paths, config)  # the in-process pipeline, as `vidsift index`
    resegment_store(store, spec, config.segments)  # settings of this run, also for videos indexed before
    poolings = ["mean", "qs"] if args.pooling == "both" else [args.pooling]
    labels = parse_labels(file=args.labels_file) if args.labels_file else None
    interval = 1.0 / config.sampling.fps if config.sampling.fps else None
    results = {}
    for pooling in poolings:
        if is_csv:
            results[pooling] = msrvtt_report(store, encoder, queries, pooling=pooling)
        else:
            results[pooling] = full_report(store, encoder, videos, labels=labels, pooling=pooling,
                                           sampling_interval=interval or 1.0)
    settings = {"model": spec.key, "sampling": config.sampling.describe(), "segments": vars(config.segments),
                "db": db, "failed_to_index": len(report.failures)}
    payload, human = {"settings": settings, "results": results}, format_eval(settings, results)
    if not is_csv:  # the "no match" decision on a shapes-world manifest
        payload["no_match"] = no_match_report(store, encoder, videos, load_calibration(store, encoder), labels=labels)
        human += "\n" + format_no_match(payload["no_match"])
    emit(args, payload, human)
    return EXIT_OK


def format_eval(settings: dict, results: dict) -> str:
    seg = settings["segments"]
    lines = [f"model {settings['model']}, sampling {settings['sampling']}, segments {seg['mode']}"
             + (f" (window {seg['window_s']} s)" if seg["mode"] == "fixed" else
                f" (min {seg['min_scene_s']} s, max {seg['max_scene_s']} s)")]
    for pooling, r in results.items():
        lines.append(f"pooling: {pooling}  ({r['videos']} videos)")
        for split, stats in r["retrieval"].items():
            if stats.get("n"):
                lines.append(f"  retrieval {split:<8} R@1 {stats['R@1']:.3f}  R@5 {stats['R@5']:.3f}  "
                             f"R@10 {stats['R@10']:.3f}  median rank {stats['median_rank']:g}  "
                             f"mean rank {stats['mean_rank']:.2f}  (n={stats['n']})")
        for split, stats in r.get("zero_shot", {}).items():
            if stats["top1"]["n"]:
                lines.append(f"  zero-shot {split:<8} top-1 {stats['top1']['rate']:.3f}  top-5 "
                             f"{stats['top5']['rate']:.3f}  (n={stats['top1']['n']})")
        for split, stats in r.get("localisation", {}).items():
            if stats.get("n"):
                lines.append(f"  moments   {split:<8} mIoU {stats['mIoU']:.3f}  R@1 IoU>=0.5 "
                             f"{stats['R@1,IoU>=0.5']:.3f}  R@1 IoU>=0.7 {stats['R@1,IoU>=0.7']:.3f}  (n={stats['n']})")
        if "boundaries" in r:
            b = r["boundaries"]
            lines.append(f"  boundaries P {b['precision']:.3f}  R {b['recall']:.3f}  F1 {b['f1']:.3f}  "
                         f"({b['matched']} of {b['true']} cuts, {b['predicted']} predicted)")
    return "\n".join(lines)


def add_synth_arguments(p) -> None:
    p.add_argument("out", help="output folder (videos/ and manifest.json)")
    p.add_argument("--videos", type=int, default=20, help="number of videos (default 20)")
    p.add_argument("--seed", type=int, default=0)
    split = p.add_mutually_exclusive_group()
    split.add_argument("--exclude-heldout", action="store_true", help="never show the 5 held-out pairs")
    split.add_argument("--only-heldout", action="store_true", help="show only the 5 held-out pairs")
    p.add_argument("--formats", default="mp4,mkv,webm,avi", help="containers, comma-separated")
    p.add_argument("--scenes", type=int, default=None, help="scenes per video (default: 1 to 4)")
    p.add_argument("--max-size", type=int, default=None, help="largest frame width (default 1280)")
    add_json(p)


def synth(args) -> int:
    from vidsift.pipeline.shapes.archive import synthesize_archive  # lazy: loads PyAV, which only rendering needs

    formats = tuple(f.strip() for f in args.formats.split(",") if f.strip())
    unknown = set(formats) - set(CONTAINERS)
    if unknown or not formats:
        raise ValueError(f"--formats must be among {', '.join(CONTAINERS)}, got {args.formats!r}")
    manifest = synthesize_archive(args.out, args.videos, args.seed, exclude_heldout=args.exclude_heldout,
                                  only_heldout=args.only_heldout, formats=formats, n_scenes=args.scenes,
                                  max_size=args.max_size, progress=not args.json)
    scenes = sum(len(v["scenes"]) for v in manifest["videos"])
    emit(args, {"out": args.out, "videos": len(manifest["videos"]), "scenes": scenes,
                "manifest": str(Path(args.out) / MANIFEST)},
         f"{len(manifest['videos'])} videos ({scenes} scenes) in {args.out}; manifest: "
         f"{Path(args.out) / MANIFEST}")
    return EXIT_OK


def add_train_arguments(p) -> None:
    p.add_argument("data", help="a shapes-world archive (folder or manifest.json) or a CSV of path,start,end,caption")
    p.add_argument("--model", default="shapes-tiny", help="open_clip model name (default shapes-tiny)")
    p.add_argument("--pretrained", default=None,
                   help="start from a pretrained tag or checkpoint (default: random init); '' = bundled weights")
    p.add_argument("--out", required=True, help="run folder: checkpoints, metrics.jsonl, exported weights")
    p.add_argument("--val", default=None, help="a shapes-world archive for zero-shot/R@1 validation each epoch")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.add_argument("--warmup-steps", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --out")
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "fp16", "bf16", "amp", "amp_bf16"],
                   help="auto (mixed precision on GPU), fp32, fp16 or bf16 (amp/amp_bf16: old names of fp16/bf16)")
    p.add_argument("--export", default=None, help="where to write the final .safetensors (default: in --out)")
    add_json(p)


def train(args) -> int:
    # lazy: torch and open_clip cost seconds of every `vidsift` start-up (app/cli.py)
    import open_clip

    from vidsift.models.registry import register_bundled_configs
    from vidsift.models.train import TrainConfig, train as train_model
    from vidsift.pipeline.classify import DEFAULT_TEMPLATES
    from vidsift.pipeline.shapes.training_data import load_training_set, shapes_val_set

    dataset = load_training_set(args.data, progress=not args.json)
    val = None
    if args.val:
        register_bundled_configs()
        config = open_clip.get_model_config(args.model)
        if config is None:
            raise ValueError(f"unknown model {args.model!r}")
        size = config["vision_cfg"]["image_size"]
        val = shapes_val_set(args.val, size if isinstance(size, int) else size[0], templates=DEFAULT_TEMPLATES,
                             progress=not args.json)
    cfg = TrainConfig(model=args.model, pretrained=args.pretrained, out_dir=args.out, epochs=args.epochs,
                      batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay,
                      warmup_steps=args.warmup_steps, seed=args.seed, resume=args.resume, device=args.device,
                      precision=args.precision, export_path=args.export, progress=not args.json)
    with contextlib.redirect_stdout(sys.stderr):  # the trainer's epoch lines; stdout stays the result
        result = train_model(cfg, dataset, val)
    emit(args, result, f"weights: {result['weights']}\nuse them: vidsift index ... --model {args.model} "
                       f"--pretrained {result['weights']}")
    return EXIT_OK


COMMANDS = [
    Command("eval", "retrieval, classification, localisation and boundary figures", add_eval_arguments, evaluate,
            writes=True),
    Command("train", "contrastive training / fine-tuning of an open_clip model", add_train_arguments, train,
            {"epochs": ("--epochs", 1, 10_000, False), "batch_size": ("--batch-size", 1, 65_536, False),
             "lr": ("--lr", 0, 1, True), "weight_decay": ("--weight-decay", 0, 10, False),
             "warmup_steps": ("--warmup-steps", 0, 10_000_000, False)}),
    Command("synth", "render shapes-world videos and their manifest.json", add_synth_arguments, synth,
            {"videos": ("--videos", 1, 100_000, False), "scenes": ("--scenes", 1, 100, False),
             "max_size": ("--max-size", 16, 16_384, False)}),
]
