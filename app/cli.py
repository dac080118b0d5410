"""`vidsift ...`: the command line. Each command parses its flags, calls the plain functions of
``pipeline``/``workers``, and prints a human table or ``--json`` on stdout. Errors are one line on
stderr naming the file and the cause, never a traceback.

Exit statuses of `vidsift index`: 0 all indexed (or already were), 3 completed with failures
(recorded; see `vidsift status`), 1 the job failed, 2 bad arguments.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from pathlib import Path

from models.spec import DEFAULT_MODEL, DEFAULT_PRETRAINED, resolve_spec
from pipeline.errors import InputError
from pipeline.indexing import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from pipeline.search import format_timestamp

DEFAULT_DB = "vidsift.lance"


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--db", default=os.environ.get("VIDSIFT_DB", DEFAULT_DB),
                        help="LanceDB URI: a folder (default ./vidsift.lance, or $VIDSIFT_DB) or s3://...")
    parser.add_argument("--model", default=os.environ.get("VIDSIFT_MODEL", DEFAULT_MODEL),
                        help=f"open_clip model name, or shapes-tiny (bundled). Default {DEFAULT_MODEL}")
    parser.add_argument("--pretrained", default=os.environ.get("VIDSIFT_PRETRAINED"),
                        help=f"pretrained tag (default {DEFAULT_PRETRAINED}; bundled models: their own "
                             "weights), a local checkpoint path, or 'none' for random weights")
    _storage(parser)
    parser.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda, cuda:1 ...")
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "fp16", "bf16"])
    parser.add_argument("--json", action="store_true", help="machine-readable output on stdout")


def _storage(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--storage-option", action="append", default=[], dest="storage_options",
                        metavar="KEY=VALUE",
                        help="object-storage option for the archive and the inputs (repeatable), e.g. "
                             "endpoint=http://127.0.0.1:9000 allow_http=true region=us-east-1; the standard "
                             "AWS_*/GOOGLE_*/AZURE_* environment variables work too")


def _sampling(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--fps", type=float, default=None, help="frames sampled per second of video (default 1)")
    group.add_argument("--frames", type=int, default=None, help="sample N frames spread uniformly instead")
    _segmentation(parser)


def _segmentation(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--segments", default="scenes", choices=["scenes", "fixed"],
                        help="scene-aware segments (default) or fixed windows of --window seconds")
    parser.add_argument("--window", type=float, default=10.0, help="fixed segment length in seconds (default 10)")
    parser.add_argument("--min-scene", type=float, default=1.0, help="shortest scene in seconds (default 1)")
    parser.add_argument("--max-scene", type=float, default=30.0,
                        help="longer scenes are split into equal parts (default 30 s)")
    parser.add_argument("--cut-threshold", type=float, default=None,
                        help="cosine distance between consecutive frames that makes a cut (default: adaptive)")
    parser.add_argument("--no-refine-cuts", action="store_true",
                        help="leave each scene cut midway between the two sampled frames around it instead of "
                             "decoding around it to find the exact frame (faster: refining was ~20%% of a "
                             "decode-bound job, bench/RESULTS.md)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vidsift", description="Search, tag and index video archives with CLIP.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("index", help="decode, sample, embed, pool and store videos")
    p.add_argument("inputs", nargs="+", help="folders, video files, or .txt lists of paths")
    _common(p)
    _sampling(p)
    p.add_argument("--address", default=None,
                   help="Ray cluster: auto, or HOST:6379 (default: start Ray locally; inside a Ray Job, its cluster)")
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs for local Ray (default: all)")
    p.add_argument("--embed-workers", type=int, default=None, help="embedding actors (default: one per GPU, else 1)")
    p.add_argument("--embed-threads", type=int, default=None,
                   help="torch threads of each CPU embedding actor (default: the CPUs divided by the actors)")
    p.add_argument("--batch-size", type=int, default=64, help="frames per encoder batch (default 64)")
    p.add_argument("--attempts", type=int, default=3,
                   help="tries per video when its decoding process dies or times out (default 3)")
    p.add_argument("--video-timeout", type=float, default=300.0, metavar="SECONDS",
                   help="time a video may take, plus 1 s per sampled frame once its length is known (default 300)")
    p.add_argument("--build-index", action="store_true", help="build the ANN index after indexing")
    p.add_argument("--no-ray", action="store_true", help="run in this process without Ray (small jobs)")
    p.add_argument("--no-frames", action="store_true",
                   help="do not keep frame vectors (saves space; `resegment` then needs a re-index)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")

    p = sub.add_parser("search", help="find the moments matching a description")
    p.add_argument("query", help='e.g. "a dog catching a frisbee"')
    _common(p)
    p.add_argument("-k", "--top-k", type=int, default=10, dest="k", help="results to return (default 10)")
    p.add_argument("--per-video", action="store_true", help="only the best segment of each video")
    p.add_argument("--where", default=None, help="LanceDB SQL filter, e.g. \"path LIKE '%%/cats/%%'\"")
    p.add_argument("--exact", action="store_true", help="exact search even when an ANN index exists")
    p.add_argument("--pooling", default="mean", choices=["mean", "qs"],
                   help="mean-pooled segments, or query-scored pooling of their frames (re-ranks)")
    p.add_argument("--thumbnails", default=None, metavar="DIR", help="write result thumbnails (JPEG) here")

    p = sub.add_parser("classify", help="zero-shot classification of a clip")
    p.add_argument("clip", help="video file")
    _common(p)
    _sampling(p)
    p.add_argument("--labels", default=None, help='comma-separated labels, e.g. "surfing,riding a horse"')
    p.add_argument("--labels-file", default=None, help="file with one label per line")
    p.add_argument("--label-set", default=None,
                   help="a bundled label set (kinetics400, ucf101, shapes-world, generic) with its own templates")
    p.add_argument("--template", action="append", default=None, dest="templates",
                   help="prompt template with {} for the label (repeatable; default: built-in ensemble)")
    p.add_argument("--templates-file", default=None, help="file with one template per line")
    p.add_argument("--per-segment", action="store_true", help="also classify each segment")
    p.add_argument("--top", type=int, default=5, help="labels to show (default 5)")

    p = sub.add_parser("eval", help="retrieval, classification, localisation and boundary figures")
    p.add_argument("manifest", help="a shapes-world manifest.json (or its folder), or an MSR-VTT test CSV")
    _common(p)
    _sampling(p)
    p.add_argument("--videos", default=None, help="folder of <video_id>.mp4 files (MSR-VTT CSV only)")
    p.add_argument("--pooling", default="both", choices=["mean", "qs", "both"],
                   help="segment scoring: mean pooling, query-scored pooling, or both side by side")
    p.add_argument("--labels-file", default=None, help="label set for zero-shot (default: the 28 shapes labels)")
    p.add_argument("--no-ray", action="store_true", help="index in this process without Ray")

    p = sub.add_parser("resegment", help="re-pool stored frame vectors into new segments (no decoding)")
    _common(p)
    _segmentation(p)

    p = sub.add_parser("train", help="contrastive training / fine-tuning of an open_clip model")
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
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "amp", "amp_bf16"])
    p.add_argument("--export", default=None, help="where to write the final .safetensors (default: in --out)")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("synth", help="render shapes-world videos and their manifest.json")
    p.add_argument("out", help="output folder (videos/ and manifest.json)")
    p.add_argument("--videos", type=int, default=20, help="number of videos (default 20)")
    p.add_argument("--seed", type=int, default=0)
    split = p.add_mutually_exclusive_group()
    split.add_argument("--exclude-heldout", action="store_true", help="never show the 5 held-out pairs")
    split.add_argument("--only-heldout", action="store_true", help="show only the 5 held-out pairs")
    p.add_argument("--formats", default="mp4,mkv,webm,avi", help="containers, comma-separated")
    p.add_argument("--scenes", type=int, default=None, help="scenes per video (default: 1 to 4)")
    p.add_argument("--max-size", type=int, default=None, help="largest frame width (default 1280)")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("demo", help="render a sample archive, index it with shapes-tiny, search, classify, open the app")
    p.add_argument("--out", default="demo-out", help="folder for the archive and database (default ./demo-out)")
    p.add_argument("--videos", type=int, default=16)
    p.add_argument("--no-app", action="store_true", help="stop after the searches instead of opening the app")
    p.add_argument("--port", type=int, default=None)

    p = sub.add_parser("app", help="the web app: search, tag a clip, library (Gradio)")
    _common(p)
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0 = every network)")
    p.add_argument("--port", type=int, default=None, help="port (default 7860, or the next free one)")
    p.add_argument("--allow-dir", action="append", default=[], dest="allow_dirs", metavar="FOLDER",
                   help="folder whose videos may be indexed from the page (repeatable; nothing by default)")
    p.add_argument("--share", action="store_true", help="also open a public gradio.live link (off by default)")
    p.add_argument("--max-upload-mb", type=float, default=500.0, help="largest upload accepted, in MB (default 500)")
    p.add_argument("--upload-ext", action="append", default=None, dest="upload_exts", metavar=".EXT",
                   help="accepted upload extension (repeatable; default: the usual video extensions)")
    p.add_argument("--concurrency", type=int, default=4, help="searches served at once (default 4)")
    _sampling(p)  # how uploads and folders indexed from the page are sampled and segmented

    p = sub.add_parser("status", help="what is indexed, what failed and why")
    p.add_argument("--db", default=os.environ.get("VIDSIFT_DB", DEFAULT_DB))
    _storage(p)
    p.add_argument("--json", action="store_true")
    return parser


def _spec(args):
    return resolve_spec(args.model, args.pretrained, args.device, args.precision)


def _segment_config(args):
    from pipeline.config import SegmentConfig

    return SegmentConfig(mode=args.segments, window_s=args.window, min_scene_s=args.min_scene,
                         max_scene_s=args.max_scene, cut_threshold=args.cut_threshold,
                         refine_cuts=not args.no_refine_cuts)


def _index_config(args):
    from pipeline.config import IndexConfig, SamplingConfig

    sampling = SamplingConfig(fps=None, frames=args.frames) if args.frames is not None \
        else SamplingConfig(fps=args.fps if args.fps is not None else 1.0)
    return IndexConfig(sampling=sampling, segments=_segment_config(args),
                       keep_frames=not getattr(args, "no_frames", False))


def _emit(args, payload, human: str) -> None:
    if args.json:
        json.dump(payload, sys.stdout, indent=2, default=str)
        sys.stdout.write("\n")
    else:
        print(human)


def _storage_options(args) -> dict:
    from pipeline.storage import parse_storage_options

    return parse_storage_options(args.storage_options)


@contextlib.contextmanager
def _stdout_for_json_only(args):
    """With --json, stdout carries the JSON and nothing else: everything else written to it while
    the job runs (Ray's "(raylet) ..." lines come from its native code and its processes) goes
    to stderr, at the file-descriptor level."""
    if not args.json:
        yield
        return
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def _shutdown_ray() -> None:
    if "ray" in sys.modules:
        import ray

        if ray.is_initialized():
            ray.shutdown()


def cmd_index(args) -> int:
    from pipeline.storage import is_remote, list_inputs
    from pipeline.store import VideoStore

    config = _index_config(args)
    spec = _spec(args)
    options = _storage_options(args)
    if args.no_ray:
        from models.encoder import ClipEncoder
        from pipeline.indexing import index_sequential

        if any(is_remote(item) for item in args.inputs):
            raise InputError("--no-ray indexes local files only: drop --no-ray to index from object storage")
        paths = [listed.path for listed in list_inputs(args.inputs)]
        store = VideoStore(args.db, storage_options=options)
        report = index_sequential(store, ClipEncoder.from_spec(spec), paths, config)
        if args.build_index:
            report.ann_index = store.build_vector_index(spec.table_suffix)
    else:
        from workers.job import ClusterConfig, run_index_job

        cluster = ClusterConfig(address=args.address, num_cpus=args.num_cpus, embed_actors=args.embed_workers,
                                embed_threads=args.embed_threads, batch_size=args.batch_size,
                                attempts=args.attempts, video_timeout_s=args.video_timeout)
        listed = list_inputs(args.inputs, options)
        store = VideoStore(args.db, storage_options=options)
        with _stdout_for_json_only(args):
            try:
                report = run_index_job(store, spec, listed, config, cluster, build_index=args.build_index,
                                       progress=not (args.quiet or args.json), storage_options=options)
            finally:
                _shutdown_ray()  # now, while stdout still goes to stderr: Ray says goodbye on stdout
    lines = [f"{report.indexed} indexed, {report.skipped} already indexed, {len(report.failures)} failed "
             f"of {report.total} files ({report.frames} frames, {report.seconds:.1f} s) into {args.db} "
             f"[{spec.key}]"]
    lines += [f"  FAILED {f.path}: {f.stage}: {f.reason}" for f in report.failures]
    if report.ann_index:
        lines.append(f"  ANN index: {report.ann_index}")
    _emit(args, {**report.to_dict(), "db": args.db, "model": spec.key}, "\n".join(lines))
    return report.exit_status


def cmd_search(args) -> int:
    from models.encoder import ClipEncoder
    from pipeline.search import search_text
    from pipeline.store import VideoStore

    from pipeline.search import MAX_K, require_indexed

    if not args.query.strip():
        raise InputError("The search query is empty: describe what you are looking for.")
    if not 1 <= args.k <= MAX_K:
        raise InputError(f"k must be an integer between 1 and {MAX_K}, got {args.k}")
    store = VideoStore(args.db, storage_options=_storage_options(args), search_catalog=False)  # one search: the catalog would not pay for itself
    spec = _spec(args)
    require_indexed(store, spec)  # before loading the model: a wrong --model fails in a second
    hits = search_text(store, ClipEncoder.from_spec(spec), args.query, k=args.k, per_video=args.per_video,
                       where=args.where, exact=args.exact, pooling=args.pooling, thumbnails=bool(args.thumbnails))
    results = [hit.to_dict() for hit in hits]
    if args.thumbnails:
        folder = Path(args.thumbnails)
        folder.mkdir(parents=True, exist_ok=True)
        for hit, row in zip(hits, results):
            target = folder / f"{hit.rank:03d}_{hit.video_id[:12]}_{hit.segment_index:05d}.jpg"
            target.write_bytes(hit.thumbnail)
            row["thumbnail_file"] = str(target)
    human = "\n".join(f"{h.rank:>3}  {h.score:+.4f}  {format_timestamp(h.start)}-{format_timestamp(h.end)}"
                      f"  {h.path}" for h in hits) or "no results"
    _emit(args, {"query": args.query, "model": spec.key, "results": results}, human)
    return EXIT_OK


def cmd_classify(args) -> int:
    from models.encoder import ClipEncoder
    from pipeline.classify import ZeroShotClassifier, classify_clip, parse_labels, parse_templates
    from pipeline.errors import VideoError

    from pipeline import label_sets

    if args.label_set and not (args.labels or args.labels_file):
        labels = label_sets.load(args.label_set)
        templates = parse_templates(args.templates, args.templates_file) if (args.templates or args.templates_file) \
            else (label_sets.templates(args.label_set) or parse_templates())
    else:
        if args.label_set:
            raise ValueError("give either --label-set or --labels/--labels-file, not both")
        labels = parse_labels(args.labels, args.labels_file)
        templates = parse_templates(args.templates, args.templates_file)
    if not 1 <= args.top <= 10_000:
        raise ValueError(f"--top must be between 1 and 10000, got {args.top}")
    if not os.path.isfile(args.clip):
        raise VideoError(args.clip, "open", "file does not exist")
    config = _index_config(args)
    encoder = ClipEncoder.from_spec(_spec(args))
    result = classify_clip(encoder, os.path.abspath(args.clip), ZeroShotClassifier(encoder, labels, templates),
                           config, per_segment=args.per_segment, top=args.top)
    lines = [f"{result.path} ({result.duration:.1f} s)"]
    lines += [f"  {row['probability']:.4f}  {row['label']}" for row in result.labels]
    for seg in result.segments:
        best = seg["labels"][0]
        lines.append(f"  {format_timestamp(seg['start'])}-{format_timestamp(seg['end'])}  {best['label']} "
                     f"({best['probability']:.3f})")
    _emit(args, {**result.to_dict(), "model": encoder.model_key, "templates": templates}, "\n".join(lines))
    return EXIT_OK


def cmd_status(args) -> int:
    from pipeline.store import VideoStore

    if "://" not in args.db and not Path(args.db).exists():
        _emit(args, {"db": args.db, "models": [], "failures": []}, f"{args.db}: nothing indexed yet")
        return EXIT_OK
    store = VideoStore(args.db, storage_options=_storage_options(args))
    models = store.summary()
    failures = [{**f, "time": f["time"].isoformat()} for f in store.failures()]
    lines = [f"database {args.db}"]
    for m in models:
        lines.append(f"  {m['model']}: {m['videos']} videos, {m['segments']} segments, {m['dim']}-d, "
                     f"ANN index: {'yes' if m['ann_index'] else 'no (exact search)'}, last indexed {m['last_indexed']}")
    if not models:
        lines.append("  nothing indexed yet")
    lines.append(f"failures: {len(failures)}")
    lines += [f"  {f['path']}: {f['stage']}: {f['reason']} [{f['model']}, {f['time']}]" for f in failures]
    _emit(args, {"db": args.db, "models": models, "failures": failures}, "\n".join(lines))
    return EXIT_OK


def cmd_synth(args) -> int:
    from pipeline.synth import CONTAINERS, synthesize_archive  # imports PyAV before decord (VP9 clash)

    formats = tuple(f.strip() for f in args.formats.split(",") if f.strip())
    unknown = set(formats) - set(CONTAINERS)
    if unknown or not formats:
        raise ValueError(f"--formats must be among {', '.join(CONTAINERS)}, got {args.formats!r}")
    if not 1 <= args.videos <= 100_000:
        raise ValueError(f"--videos must be between 1 and 100000, got {args.videos}")
    manifest = synthesize_archive(args.out, args.videos, args.seed, exclude_heldout=args.exclude_heldout,
                                  only_heldout=args.only_heldout, formats=formats, n_scenes=args.scenes,
                                  max_size=args.max_size, progress=not args.json)
    scenes = sum(len(v["scenes"]) for v in manifest["videos"])
    _emit(args, {"out": args.out, "videos": len(manifest["videos"]), "scenes": scenes,
                 "manifest": str(Path(args.out) / "manifest.json")},
          f"{len(manifest['videos'])} videos ({scenes} scenes) in {args.out}; manifest: "
          f"{Path(args.out) / 'manifest.json'}")
    return EXIT_OK


def cmd_eval(args) -> int:
    from models.encoder import ClipEncoder
    from pipeline.evaluation import full_report, load_manifest, msrvtt_report, read_msrvtt_csv
    from pipeline.indexing import index_sequential, resegment_store
    from pipeline.store import VideoStore

    config = _index_config(args)
    spec = _spec(args)
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
    store = VideoStore(db)
    encoder = ClipEncoder.from_spec(spec)
    if args.no_ray:
        report = index_sequential(store, encoder, paths, config)
    else:
        from workers.job import run_index_job

        report = run_index_job(store, spec, paths, config, progress=not args.json,
                               preprocess_cfg=encoder.preprocess_cfg)
    resegment_store(store, spec, config.segments)  # settings of this run, also for videos indexed before
    poolings = ["mean", "qs"] if args.pooling == "both" else [args.pooling]
    labels = None
    if args.labels_file:
        from pipeline.classify import parse_labels

        labels = parse_labels(file=args.labels_file)
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
    _emit(args, {"settings": settings, "results": results}, _format_eval(settings, results))
    return EXIT_OK


def _format_eval(settings: dict, results: dict) -> str:
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


def cmd_resegment(args) -> int:
    from pipeline.indexing import resegment_store
    from pipeline.search import require_indexed
    from pipeline.store import VideoStore

    store = VideoStore(args.db, storage_options=_storage_options(args))
    spec = _spec(args)
    require_indexed(store, spec)
    report = resegment_store(store, spec, _segment_config(args))
    lines = [f"{report.videos} videos re-segmented into {report.segments} segments [{spec.key}]"]
    if report.without_frames:
        lines.append(f"{len(report.without_frames)} videos have no stored frames (indexed with --no-frames) "
                     "and kept their segments; re-index them to change their segments")
    _emit(args, {**report.to_dict(), "model": spec.key}, "\n".join(lines))
    return EXIT_OK


def cmd_app(args) -> int:
    from app.web import AppConfig, serve

    extra = {"upload_exts": tuple(args.upload_exts)} if args.upload_exts else {}
    config = AppConfig(db=args.db, spec=_spec(args), allow_dirs=tuple(args.allow_dirs), host=args.host,
                       port=args.port, share=args.share, max_upload_mb=args.max_upload_mb,
                       concurrency=args.concurrency, index=_index_config(args), **extra)
    serve(config)
    return EXIT_OK


def cmd_train(args) -> int:
    from models.registry import register_bundled_configs
    from models.train import TrainConfig, train
    from pipeline.classify import DEFAULT_TEMPLATES
    from pipeline.training_data import load_training_set, shapes_val_set

    if not 1 <= args.epochs <= 10_000 or not 1 <= args.batch_size <= 65_536 or not 0 < args.lr < 1:
        raise ValueError("--epochs, --batch-size and --lr must be positive and sensible")
    dataset = load_training_set(args.data, progress=not args.json)
    val = None
    if args.val:
        import open_clip

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
    import contextlib

    with contextlib.redirect_stdout(sys.stderr):  # the trainer's epoch lines; stdout stays the result
        result = train(cfg, dataset, val)
    _emit(args, result, f"weights: {result['weights']}\nuse them: vidsift index ... --model {args.model} "
                        f"--pretrained {result['weights']}")
    return EXIT_OK


def cmd_demo(args) -> int:
    from app.demo import run_demo

    return run_demo(args.out, videos=args.videos, with_app=not args.no_app, port=args.port)


COMMANDS = {"index": cmd_index, "search": cmd_search, "classify": cmd_classify, "status": cmd_status,
            "synth": cmd_synth, "demo": cmd_demo, "resegment": cmd_resegment, "eval": cmd_eval,
            "app": cmd_app, "train": cmd_train}


def main(argv: list[str] | None = None) -> int:
    from models.loading import ModelUnavailableError
    from pipeline.errors import StoreBusyError, VideoError
    from pipeline.storage import StorageError

    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except (InputError, ValueError) as exc:
        print(f"vidsift {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (ModelUnavailableError, VideoError, StoreBusyError, StorageError) as exc:
        print(f"vidsift {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except Exception as exc:  # a bug or an infrastructure failure: one line, the traceback on demand
        if os.environ.get("VIDSIFT_DEBUG"):
            raise
        print(f"vidsift {args.command}: failed: {type(exc).__name__}: {exc} (set VIDSIFT_DEBUG=1 for the "
              "traceback)", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print(f"vidsift {args.command}: interrupted; finished videos are saved, rerun to resume", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
