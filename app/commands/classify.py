"""`vidsift classify`: zero-shot classification of one clip against any label set, open-set (it
may answer "none of these labels")."""
from __future__ import annotations

import os

from vidsift.app.exit_codes import EXIT_OK
from vidsift.pipeline.errors import VideoError

from .common import Command, add_common, add_sampling, emit, index_config, spec_of, storage_options


def add_arguments(p) -> None:
    p.add_argument("clip", help="video file")
    add_common(p)
    add_sampling(p)
    p.add_argument("--labels", default=None, help='comma-separated labels, e.g. "surfing,riding a horse"')
    p.add_argument("--labels-file", default=None, help="file with one label per line")
    p.add_argument("--label-set", default=None,
                   help="a bundled label set (kinetics400, ucf101, shapes-world, generic) with its own templates")
    p.add_argument("--template", action="append", default=None, dest="templates",
                   help="prompt template with {} for the label (repeatable; default: built-in ensemble)")
    p.add_argument("--templates-file", default=None, help="file with one template per line")
    p.add_argument("--per-segment", action="store_true", help="also classify each segment")
    p.add_argument("--top", type=int, default=5, help="labels to show (default 5)")


def run(args) -> int:
    # lazy: torch, open_clip and the pipeline take seconds to import; `vidsift --help` does without
    from vidsift.app.labels import choose_labels
    from vidsift.models.encoder import ClipEncoder
    from vidsift.pipeline.classify import ZeroShotClassifier, classify_clip, format_classification
    from vidsift.pipeline.confidence import calibration_for

    if args.label_set and (args.labels or args.labels_file):
        raise ValueError("give either --label-set or --labels/--labels-file, not both")
    labels, templates = choose_labels(args.label_set, args.labels, args.labels_file, args.templates,
                                      args.templates_file)
    if not os.path.isfile(args.clip):
        raise VideoError(args.clip, "open", "file does not exist")
    config = index_config(args)
    encoder = ClipEncoder.from_spec(spec_of(args))
    calibration = calibration_for(args.db, encoder, storage_options(args))
    result = classify_clip(encoder, os.path.abspath(args.clip), ZeroShotClassifier(encoder, labels, templates),
                           config, per_segment=args.per_segment, top=args.top, calibration=calibration)
    emit(args, {**result.to_dict(), "model": encoder.model_key, "templates": templates},
         format_classification(result))
    return EXIT_OK


COMMANDS = [Command("classify", "zero-shot classification of a clip", add_arguments, run,
                    {"top": ("--top", 1, 10_000, False)})]
