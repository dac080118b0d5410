"""Commands that look after an archive already indexed: `status`, `verify`, `calibrate`,
`resegment`."""
from __future__ import annotations

from pathlib import Path

from vidsift.app.exit_codes import EXIT_OK, exit_status, report_payload
from vidsift.pipeline.errors import InputError

from .common import (Command, add_common, add_db, add_json, add_segmentation, add_storage, emit, segment_config,
                     spec_of, storage_options)


def add_status_arguments(p) -> None:
    add_db(p)
    add_storage(p)
    add_json(p)


def status(args) -> int:
    from vidsift.pipeline.store import VideoStore  # lazy: pyarrow + LanceDB (~0.5 s) stay out of `vidsift --help`

    if "://" not in args.db and not Path(args.db).exists():
        emit(args, {"db": args.db, "models": [], "failures": []}, f"{args.db}: nothing indexed yet")
        return EXIT_OK
    store = VideoStore(args.db, storage_options=storage_options(args))
    models = store.summary()
    failures = [{**f, "time": f["time"].isoformat()} for f in store.failures()]
    lines = [f"database {args.db}"]
    for m in models:
        lines.append(f"  {m['model']}{' (default)' if m['default'] else ''}: {m['videos']} videos, "
                     f"{m['segments']} segments, {m['dim']}-d, "
                     f"ANN index: {'yes' if m['ann_index'] else 'no (exact search)'}, last indexed {m['last_indexed']}")
    if len(models) > 1 and not any(m["default"] for m in models):
        lines.append("  no default model: pick one with `vidsift models --default NAME`")
    if not models:
        lines.append("  nothing indexed yet")
    lines.append(f"failures: {len(failures)}")
    lines += [f"  {f['path']}: {f['stage']}: {f['reason']} [{f['model']}, {f['time']}]" for f in failures]
    emit(args, {"db": args.db, "models": models, "failures": failures}, "\n".join(lines))
    return EXIT_OK


def add_verify_arguments(p) -> None:
    add_db(p)
    add_storage(p)
    p.add_argument("--repair", action="store_true",
                   help="delete orphan rows and exact copies, re-queue incomplete videos for the next index, "
                        "update the ANN index, drop failures of files that are gone")
    add_json(p)


def verify(args) -> int:
    # lazy: pyarrow + LanceDB (~0.5 s) stay out of `vidsift --help`
    from vidsift.pipeline.store import VideoStore
    from vidsift.pipeline.verify import format_report, verify_store

    if "://" not in args.db and not Path(args.db).is_dir():
        raise InputError(f"{args.db}: no database here" + (" (it is a file)" if Path(args.db).exists() else ""))
    report = verify_store(VideoStore(args.db, storage_options=storage_options(args)), repair=args.repair)
    emit(args, report_payload(report), format_report(report))
    return exit_status(report)


def add_calibrate_arguments(p) -> None:
    add_common(p)
    p.add_argument("--sample", type=int, default=20_000, help="segments sampled (default 20000)")
    p.add_argument("--vocabulary-size", type=int, default=10_000,
                   help="English words the model reads (default 10000; a bundled model uses its own)")


def calibrate(args) -> int:
    # lazy: torch + open_clip (~2 s) and pyarrow + LanceDB stay out of `vidsift --help`
    from vidsift.models.encoder import ClipEncoder
    from vidsift.pipeline.confidence_fit import fit_calibration, format_calibration
    from vidsift.pipeline.search import require_indexed
    from vidsift.pipeline.store import VideoStore

    store = VideoStore(args.db, storage_options=storage_options(args))
    spec = spec_of(args)
    require_indexed(store, spec)
    report = fit_calibration(store, ClipEncoder.from_spec(spec), sample=args.sample,
                             vocabulary_size=args.vocabulary_size)
    emit(args, report, format_calibration(report))
    return EXIT_OK


def add_resegment_arguments(p) -> None:
    add_common(p)
    add_segmentation(p)


def resegment(args) -> int:
    # lazy: the indexing modules (~1 s) and LanceDB stay out of `vidsift --help`
    from vidsift.pipeline.indexing import resegment_store
    from vidsift.pipeline.search import require_indexed
    from vidsift.pipeline.store import VideoStore

    store = VideoStore(args.db, storage_options=storage_options(args))
    spec = spec_of(args)
    require_indexed(store, spec)
    report = resegment_store(store, spec, segment_config(args))
    lines = [f"{report.videos} videos re-segmented into {report.segments} segments [{spec.key}]"]
    if report.without_frames:
        lines.append(f"{len(report.without_frames)} videos have no stored frames (indexed with --no-frames) "
                     "and kept their segments; re-index them to change their segments")
    emit(args, {**report.to_dict(), "model": spec.key}, "\n".join(lines))
    return EXIT_OK


COMMANDS = [
    Command("resegment", "re-pool stored frame vectors into new segments (no decoding)", add_resegment_arguments,
            resegment, writes=True),
    Command("status", "what is indexed, what failed and why", add_status_arguments, status),
    Command("calibrate", "fit the confidence calibration of a model on this archive (no labels)",
            add_calibrate_arguments, calibrate,
            {"sample": ("--sample", 1, 10_000_000, False),
             "vocabulary_size": ("--vocabulary-size", 1, 1_000_000, False)}),
    Command("verify", "check the archive: rows complete, no orphans or copies, vectors sound", add_verify_arguments,
            verify, writes=True),
]
