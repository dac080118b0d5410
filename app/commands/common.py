"""What several commands share: the ``Command`` record, the common flags, the configs built from
them, and how a result is printed (a human table, or ``--json`` on stdout)."""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from vidsift.models.spec import DEFAULT_MODEL, DEFAULT_PRETRAINED
from vidsift.pipeline.archive_models import choose_spec
from vidsift.pipeline.config import IndexConfig, SamplingConfig, SegmentConfig

DEFAULT_DB = "vidsift.lance"

# A numeric flag's range: (flag as the user typed it, low, high, low is excluded). Checked after
# parsing, before anything slow; NaN and infinities fail every range.
NumberRule = tuple[str, float, float, bool]

SHARED_NUMBERS: dict[str, NumberRule] = {
    "fps": ("--fps", 0, 240, True),
    "frames": ("--frames", 1, 100_000, False),
    "window": ("--window", 0.1, 86_400, False),
    "min_scene": ("--min-scene", 0, 86_400, False),
    "max_scene": ("--max-scene", 0, 86_400, True),
    "cut_threshold": ("--cut-threshold", 0, 2, True),
    "seed": ("--seed", 0, 2**32 - 1, False),
    "port": ("--port", 1, 65_535, False),
}


@dataclass(frozen=True)
class Command:
    """One `vidsift NAME` command: its flags (``add_arguments``), the ranges of its numeric flags
    (beyond ``SHARED_NUMBERS``), and ``run(args) -> exit status``."""

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]
    numbers: dict[str, NumberRule] = field(default_factory=dict)
    writes: bool = False  # SIGINT/SIGTERM: finish the write, then stop


def add_db(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--db", default=os.environ.get("VIDSIFT_DB", DEFAULT_DB),
                        help="LanceDB URI: a folder (default ./vidsift.lance, or $VIDSIFT_DB) or s3://...")


def add_common(parser: argparse.ArgumentParser) -> None:
    """--db, the model, storage options, device, precision and --json."""
    add_db(parser)
    parser.add_argument("--model", default=os.environ.get("VIDSIFT_MODEL"),
                        help="open_clip model name, or shapes-tiny (bundled). Default: the model the database "
                             f"was indexed with (its default one, see `vidsift models`); {DEFAULT_MODEL} for a "
                             "new database")
    parser.add_argument("--pretrained", default=os.environ.get("VIDSIFT_PRETRAINED"),
                        help="pretrained tag, a local checkpoint path, or 'none' for random weights. Default: the "
                             "weights the database holds the model with; else, for a bundled model its own "
                             f"weights, for any other {DEFAULT_PRETRAINED}")
    add_storage(parser)
    parser.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda, cuda:1 ...")
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "fp16", "bf16"])
    add_json(parser)


def add_json(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="machine-readable output on stdout")


def add_storage(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--storage-option", action="append", default=[], dest="storage_options",
                        metavar="KEY=VALUE",
                        help="object-storage option for the archive and the inputs (repeatable), e.g. "
                             "endpoint=http://127.0.0.1:9000 allow_http=true region=us-east-1; the standard "
                             "AWS_*/GOOGLE_*/AZURE_* environment variables work too")


def add_sampling(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--fps", type=float, default=None, help="frames sampled per second of video (default 1)")
    group.add_argument("--frames", type=int, default=None, help="sample N frames spread uniformly instead")
    add_segmentation(parser)


def add_segmentation(parser: argparse.ArgumentParser) -> None:
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


def spec_of(args, db: str | None = None):
    """The model a command uses: what ``--model``/``--pretrained`` name, completed from the models
    the database ``db`` (default ``--db``) was indexed with (``pipeline.archive_models.choose_spec``):
    with neither flag, its default model; a new or empty database: ViT-B-32 with LAION weights."""
    db = db or args.db
    models = archive_models(db, args)
    return choose_spec(models, args.model, args.pretrained, args.device, args.precision, where=db)


def archive_models(db: str, args) -> list:
    """The models recorded in the database ``db``; none when there is no database there yet
    (nothing is created by looking)."""
    if "://" not in db and not (Path(db) / "models.lance").exists():
        return []
    from vidsift.pipeline.store import VideoStore  # lazy: pyarrow and LanceDB, which `vidsift --help` does without

    return VideoStore(db, storage_options=storage_options(args)).archive_models()


def segment_config(args) -> SegmentConfig:
    return SegmentConfig(mode=args.segments, window_s=args.window, min_scene_s=args.min_scene,
                         max_scene_s=args.max_scene, cut_threshold=args.cut_threshold,
                         refine_cuts=not args.no_refine_cuts)


def index_config(args) -> IndexConfig:
    sampling = SamplingConfig(fps=None, frames=args.frames) if args.frames is not None \
        else SamplingConfig(fps=args.fps if args.fps is not None else 1.0)
    return IndexConfig(sampling=sampling, segments=segment_config(args),
                       keep_frames=not getattr(args, "no_frames", False))


def emit(args, payload, human: str) -> None:
    """The result: ``payload`` as JSON with --json, else the ``human`` text."""
    if args.json:
        json.dump(payload, sys.stdout, indent=2, default=str)
        sys.stdout.write("\n")
    else:
        print(human)


def storage_options(args) -> dict:
    from vidsift.pipeline.storage import parse_storage_options  # lazy: pipeline.storage loads pyarrow

    return parse_storage_options(args.storage_options)


@contextlib.contextmanager
def stdout_for_json_only(args):
    """With --json, stdout carries the JSON and nothing else: everything else written to it while
    the job runs (Ray's "(raylet) ..." lines come from its native code and its processes) goes
    to stderr, at the file-descriptor level. Without --verbose the same holds for the human
    report (and stderr then leads to the log file, ``app.cli._Quiet``)."""
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
