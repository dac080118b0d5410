"""`vidsift ...`: the command line. Each command parses its flags, calls the plain functions of
``pipeline``/``workers``, and prints a human table or ``--json`` on stdout. Errors are one line on
stderr naming the file and the cause, never a traceback (with ``--json``, also a JSON object with
``error`` and ``exit_status`` on stdout).

Exit statuses: 0 done (`index`: all indexed, or already were; `verify`: clean), 3 `index`
completed with failures (recorded; see `vidsift status`) / `verify` found problems, 1 the command
failed, 2 bad arguments, 130 interrupted by Ctrl-C (SIGINT), 143 stopped by SIGTERM. An
interrupted `index` writes every finished video before it exits; the same command resumes.

Without ``--verbose`` a command shows its own lines and the progress bar only: what libraries
print (Ray, LanceDB, decord, FFmpeg, open_clip warnings) goes to a log file, kept and named when
the command fails.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
from pathlib import Path

from models.spec import DEFAULT_MODEL, DEFAULT_PRETRAINED, resolve_spec
from pipeline import interrupts
from pipeline.errors import InputError, Interrupted
from pipeline.indexing import EXIT_FAILED, EXIT_OK, EXIT_USAGE

DEFAULT_DB = "vidsift.lance"


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad argument is one line (``vidsift index: error: ...``), exit 2, as every
    other error of ours: no usage dump."""

    def error(self, message):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


# Every numeric flag of every command: (low, high, low is excluded). Checked after parsing, before
# anything slow; NaN and infinities fail every range.
_ANY = "*"
NUMERIC_FLAGS: dict[tuple[str, str], tuple[str, float, float, bool]] = {
    (_ANY, "fps"): ("--fps", 0, 240, True),
    (_ANY, "frames"): ("--frames", 1, 100_000, False),
    (_ANY, "window"): ("--window", 0.1, 86_400, False),
    (_ANY, "min_scene"): ("--min-scene", 0, 86_400, False),
    (_ANY, "max_scene"): ("--max-scene", 0, 86_400, True),
    (_ANY, "cut_threshold"): ("--cut-threshold", 0, 2, True),
    ("index", "num_cpus"): ("--num-cpus", 1, 100_000, False),
    ("index", "embed_workers"): ("--embed-workers", 1, 10_000, False),
    ("index", "embed_threads"): ("--embed-threads", 1, 1024, False),
    ("index", "batch_size"): ("--batch-size", 1, 4096, False),
    ("index", "attempts"): ("--attempts", 1, 100, False),
    ("index", "video_timeout"): ("--video-timeout", 1, 7 * 86_400, False),
    ("search", "k"): ("-k/--top-k", 1, 10_000, False),
    ("classify", "top"): ("--top", 1, 10_000, False),
    ("train", "epochs"): ("--epochs", 1, 10_000, False),
    ("train", "batch_size"): ("--batch-size", 1, 65_536, False),
    ("train", "lr"): ("--lr", 0, 1, True),
    ("train", "weight_decay"): ("--weight-decay", 0, 10, False),
    ("train", "warmup_steps"): ("--warmup-steps", 0, 10_000_000, False),
    (_ANY, "seed"): ("--seed", 0, 2**32 - 1, False),
    ("synth", "videos"): ("--videos", 1, 100_000, False),
    ("demo", "videos"): ("--videos", 1, 10_000, False),
    ("synth", "scenes"): ("--scenes", 1, 100, False),
    ("synth", "max_size"): ("--max-size", 16, 16_384, False),
    (_ANY, "port"): ("--port", 1, 65_535, False),
    ("app", "max_upload_mb"): ("--max-upload-mb", 0, 1_000_000, True),
    ("app", "concurrency"): ("--concurrency", 1, 256, False),
    ("calibrate", "sample"): ("--sample", 1, 10_000_000, False),
    ("calibrate", "vocabulary_size"): ("--vocabulary-size", 1, 1_000_000, False),
}


def check_numbers(args) -> None:
    """Refuse a numeric flag outside its range with one line naming it (exit 2)."""
    for dest, value in vars(args).items():
        rule = NUMERIC_FLAGS.get((args.command, dest)) or NUMERIC_FLAGS.get((_ANY, dest))
        if rule is None or value is None or isinstance(value, bool):
            continue
        flag, low, high, open_low = rule
        if not (low < value <= high if open_low else low <= value <= high):
            bounds = f"above {low:g}" if open_low else f"at least {low:g}"
            raise InputError(f"{flag} must be {bounds} and at most {high:g}, got {value}")


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
    parser = _Parser(prog="vidsift", description="Search, tag and index video archives with CLIP.")
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
    p.add_argument("--matches-only", action="store_true",
                   help="list only results that match (confidence > 0.5); by default, when nothing matches, the "
                        "closest segments follow the 'no match' line, marked weak")

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

    p = sub.add_parser("calibrate", help="fit the confidence calibration of a model on this archive (no labels)")
    _common(p)
    p.add_argument("--sample", type=int, default=20_000, help="segments sampled (default 20000)")
    p.add_argument("--vocabulary-size", type=int, default=10_000,
                   help="English words the model reads (default 10000; a bundled model uses its own)")

    p = sub.add_parser("verify", help="check the archive: rows complete, no orphans or copies, vectors sound")
    p.add_argument("--db", default=os.environ.get("VIDSIFT_DB", DEFAULT_DB))
    _storage(p)
    p.add_argument("--repair", action="store_true",
                   help="delete orphan rows and exact copies, re-queue incomplete videos for the next index, "
                        "update the ANN index, drop failures of files that are gone")
    p.add_argument("--json", action="store_true")

    for command in sub.choices.values():
        command.add_argument("--verbose", action="store_true",
                             help="also show what libraries print (Ray, LanceDB, decord, FFmpeg, warnings)")
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
    to stderr, at the file-descriptor level. Without --verbose the same holds for the human
    report (and stderr then leads to the log file, ``_Quiet``)."""
    if not (args.json or getattr(args, "quiet_log", False)):
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
    from pipeline.lock import writer_lock

    config = _index_config(args)
    # The database is held first, before anything slow (imports, Ray, the model, listing): a
    # second job on it is refused in a fraction of a second, however loaded the machine is.
    with writer_lock(args.db):
        return _index_locked(args, config)


def _index_locked(args, config) -> int:
    from pipeline.storage import is_remote, list_inputs
    from pipeline.store import VideoStore

    spec = _spec(args)
    options = _storage_options(args)
    if args.no_ray:
        from models.encoder import ClipEncoder
        from pipeline.indexing import index_sequential

        if any(is_remote(item) for item in args.inputs):
            raise InputError("--no-ray indexes local files only: drop --no-ray to index from object storage")
        paths = [listed.path for listed in list_inputs(args.inputs)]
        store = VideoStore(args.db, storage_options=options)
        progress = {"done": 0, "total": len(paths)}

        def finished(done: int, total: int) -> None:
            progress.update(done=done, total=total)
            interrupts.safe_point()  # between videos, once the last one is written: stop here

        try:
            report = index_sequential(store, ClipEncoder.from_spec(spec), paths, config, on_progress=finished)
        except Interrupted as exc:
            exc.report = exc.report or progress
            raise
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
    try:
        interrupts.safe_point()  # a signal during the last writes: everything is written, say so
    except Interrupted as exc:
        exc.report = report
        raise
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
    from pipeline.confidence import load_calibration
    from pipeline.search import MAX_K, require_indexed, search_report, search_text
    from pipeline.store import VideoStore

    if not args.query.strip():
        raise InputError("The search query is empty: describe what you are looking for.")
    if not 1 <= args.k <= MAX_K:
        raise InputError(f"k must be an integer between 1 and {MAX_K}, got {args.k}")
    if args.where is not None:
        from pipeline.store import check_filter

        try:  # what can be told without the table (';', parentheses), before the model loads
            check_filter(args.where)
        except InputError as exc:
            raise InputError(f"Bad filter {args.where!r}: {exc}") from None
    store = VideoStore(args.db, storage_options=_storage_options(args), search_catalog=False)  # one search: the catalog would not pay for itself
    spec = _spec(args)
    require_indexed(store, spec)  # before loading the model: a wrong --model fails in a second
    encoder = ClipEncoder.from_spec(spec)
    calibration = load_calibration(store, encoder)
    hits = search_text(store, encoder, args.query, k=args.k, per_video=args.per_video, where=args.where,
                       exact=args.exact, pooling=args.pooling, thumbnails=bool(args.thumbnails),
                       calibration=calibration)
    payload, human = search_report(args.query, spec.key, hits, calibration, matches_only=args.matches_only,
                                   thumbnail_dir=args.thumbnails)
    _emit(args, payload, human)
    return EXIT_OK


def cmd_classify(args) -> int:
    from models.encoder import ClipEncoder
    from pipeline.classify import (ZeroShotClassifier, classify_clip, format_classification, parse_labels,
                                   parse_templates)
    from pipeline.confidence import calibration_for
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
    calibration = calibration_for(args.db, encoder, _storage_options(args))
    result = classify_clip(encoder, os.path.abspath(args.clip), ZeroShotClassifier(encoder, labels, templates),
                           config, per_segment=args.per_segment, top=args.top, calibration=calibration)
    _emit(args, {**result.to_dict(), "model": encoder.model_key, "templates": templates},
          format_classification(result))
    return EXIT_OK


def cmd_calibrate(args) -> int:
    from models.encoder import ClipEncoder
    from pipeline.confidence import fit_calibration, format_calibration
    from pipeline.search import require_indexed
    from pipeline.store import VideoStore

    store = VideoStore(args.db, storage_options=_storage_options(args))
    spec = _spec(args)
    require_indexed(store, spec)
    report = fit_calibration(store, ClipEncoder.from_spec(spec), sample=args.sample,
                             vocabulary_size=args.vocabulary_size)
    _emit(args, report, format_calibration(report))
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


def cmd_verify(args) -> int:
    from pipeline.store import VideoStore
    from pipeline.verify import format_report, verify_store

    if "://" not in args.db and not Path(args.db).is_dir():
        raise InputError(f"{args.db}: no database here" + (" (it is a file)" if Path(args.db).exists() else ""))
    report = verify_store(VideoStore(args.db, storage_options=_storage_options(args)), repair=args.repair)
    _emit(args, report.to_dict(), format_report(report))
    return report.exit_status


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
    payload, human = {"settings": settings, "results": results}, _format_eval(settings, results)
    if not is_csv:  # the "no match" decision on a shapes-world manifest
        from pipeline.confidence import load_calibration
        from pipeline.evaluation import format_no_match, no_match_report

        payload["no_match"] = no_match_report(store, encoder, videos, load_calibration(store, encoder), labels=labels)
        human += "\n" + format_no_match(payload["no_match"])
    _emit(args, payload, human)
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


WRITING_COMMANDS = ("index", "eval", "resegment", "verify")  # SIGINT/SIGTERM: finish the write, then stop
COMMANDS = {"index": cmd_index, "search": cmd_search, "classify": cmd_classify, "status": cmd_status,
            "synth": cmd_synth, "demo": cmd_demo, "resegment": cmd_resegment, "eval": cmd_eval,
            "app": cmd_app, "train": cmd_train, "verify": cmd_verify, "calibrate": cmd_calibrate}


class _Quiet:
    """Without --verbose: file descriptor 2 (where native code, Ray's processes, decord and FFmpeg
    write) goes to a log file, Python's warnings and library logging too; ``sys.stderr``, where
    the progress bar and vidsift's own lines go, stays on the terminal. The log is kept, and
    named, only when the command fails."""

    def __init__(self, command: str):
        import logging
        import tempfile

        sys.stderr.flush()
        try:
            fd, self.path = tempfile.mkstemp(prefix=f"vidsift-{command}-", suffix=".log")
        except OSError:  # no room for a log (a full disk, say): the noise goes nowhere
            fd, self.path = os.open(os.devnull, os.O_WRONLY), None
        self.saved_fd = os.dup(2)
        os.dup2(fd, 2)
        os.close(fd)
        self.saved_stderr = sys.stderr
        sys.stderr = open(os.dup(self.saved_fd), "w", buffering=1, encoding="utf-8", errors="replace",
                          closefd=True)
        root = logging.getLogger()
        self.saved_logging = (list(root.handlers), root.level)
        self.handler = logging.FileHandler(self.path or os.devnull, encoding="utf-8")
        self.handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.handlers = [self.handler]
        root.setLevel(logging.INFO)
        logging.captureWarnings(True)

    def close(self, keep: bool) -> str | None:
        import logging

        logging.captureWarnings(False)
        root = logging.getLogger()
        root.handlers, level = self.saved_logging
        root.setLevel(level)
        self.handler.close()
        sys.stderr.flush()
        sys.stderr.close()
        sys.stderr = self.saved_stderr
        os.dup2(self.saved_fd, 2)
        os.close(self.saved_fd)
        if self.path is None:
            return None
        if keep and os.path.getsize(self.path):
            return self.path
        os.unlink(self.path)
        return None


def _failure_json(args, message: str, status: int, report=None) -> None:
    """With --json, a failed or interrupted command still answers on stdout."""
    if getattr(args, "json", False):
        payload = dict(report.to_dict()) if hasattr(report, "to_dict") else dict(report or {})
        payload.update(error=message, exit_status=status, db=getattr(args, "db", None))
        if status in (128 + 2, 128 + 15):
            payload["interrupted"] = "SIGINT" if status == 130 else "SIGTERM"
        json.dump(payload, sys.stdout, indent=2, default=str)
        sys.stdout.write("\n")


def _interrupted_line(args, exc: Interrupted) -> str:
    report = exc.report
    if hasattr(report, "indexed"):
        done = (f"{report.indexed} indexed and {len(report.failures)} failed videos were saved in {args.db}")
    elif isinstance(report, dict) and "done" in report:
        done = f"{report['done']} of {report['total']} videos were finished and saved in {args.db}"
    else:
        done = "what was finished is saved"
    return (f"vidsift {args.command}: interrupted by {exc.signal_name}; {done}; run the same command again to "
            f"resume (exit {exc.exit_status})") if args.command == "index" else \
        f"vidsift {args.command}: interrupted by {exc.signal_name} (exit {exc.exit_status})"


def _expected_failure(exc: Exception) -> bool:
    """Errors whose message is the whole story (one line naming the file or database and the
    cause). ``models.loading`` imports torch: its error is recognised without importing it."""
    from pipeline.errors import StoreBusyError, StoreWriteError, VideoError
    from pipeline.storage import StorageError

    loading = sys.modules.get("models.loading")
    return isinstance(exc, (VideoError, StoreBusyError, StorageError, StoreWriteError)) or (
        loading is not None and isinstance(exc, loading.ModelUnavailableError))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    previous = {signum: signal.getsignal(signum) for signum in interrupts.SIGNALS}
    interrupts.reset()
    if args.command in WRITING_COMMANDS:  # the others keep Python's Ctrl-C (the app: a clean exit 0)
        interrupts.install()
    quiet = None if args.verbose or os.environ.get("VIDSIFT_VERBOSE") == "1" else _Quiet(args.command)
    args.quiet_log = quiet is not None
    status, message, report = EXIT_FAILED, None, None
    try:
        check_numbers(args)
        status = COMMANDS[args.command](args)
    except KeyboardInterrupt:  # before our handlers were in place
        exc = Interrupted(signal.SIGINT)
        status, message = exc.exit_status, _interrupted_line(args, exc)
    except Interrupted as exc:
        status, message, report = exc.exit_status, _interrupted_line(args, exc), exc.report
    except (InputError, ValueError) as exc:
        status, message = EXIT_USAGE, f"vidsift {args.command}: error: {exc}"
    except Exception as exc:  # noqa: BLE001
        if _expected_failure(exc):
            status, message = EXIT_FAILED, f"vidsift {args.command}: error: {exc}"
        elif os.environ.get("VIDSIFT_DEBUG"):  # a bug or an infrastructure failure: the traceback on demand
            raise
        else:
            first = (str(exc).strip().splitlines() or [""])[0][:300]
            status, message = EXIT_FAILED, (f"vidsift {args.command}: failed: {type(exc).__name__}: {first} (set "
                                            "VIDSIFT_DEBUG=1 for the traceback)")
    finally:
        for signum, handler in previous.items():
            with contextlib.suppress(TypeError, ValueError):
                signal.signal(signum, handler)
        log = quiet.close(keep=status == EXIT_FAILED and message is not None) if quiet else None
    if message is not None:
        _failure_json(args, message, status, report)
        print(message + (f" (details: {log})" if log else ""), file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
