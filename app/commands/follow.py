"""`vidsift index PATH --prune` and `--watch`: the archive follows the folder.

The index command owns indexing; this module wraps it (``run(args, index_once, render)``): it
prunes the rows of deleted files first, records the scan of each folder for the app's Library
(``pipeline.scans.last_scans``), and with ``--watch`` keeps going, one line per action (one
JSON object per line with ``--json``). Ctrl-C or SIGTERM stops a watch after the current write,
with exit status 0: stopping is how a watch ends.
"""
from __future__ import annotations

import datetime as dt
import json

from vidsift.app.exit_codes import exit_status, report_payload
from vidsift.pipeline.errors import Interrupted

from .common import emit, spec_of, storage_options

NUMBERS = {
    "settle": ("--settle", 0.5, 86_400, False),
    "poll": ("--poll", 0.1, 3_600, False),
}


def add_arguments(p) -> None:
    group = p.add_argument_group("following a folder")
    group.add_argument("--prune", action="store_true",
                       help="first remove, for every model, the rows of videos under the inputs whose files are "
                            "gone (and their recorded failures); refused if an input folder is missing")
    group.add_argument("--watch", action="store_true",
                       help="keep running: index new and changed files once they stop changing, prune deleted "
                            "ones, one line per action (Ctrl-C or SIGTERM stops it); implies --prune")
    group.add_argument("--settle", type=float, default=5.0, metavar="SECONDS",
                       help="--watch: a file is indexed once its size and mtime have not changed for this long "
                            "(default 5; never while it is being copied)")
    group.add_argument("--poll", type=float, default=2.0, metavar="SECONDS",
                       help="--watch: time between listings of the folders (default 2)")
    group.add_argument("--allow-empty", action="store_true",
                       help="--prune/--watch: an input folder may be empty (by default an empty folder that the "
                            "archive holds videos under is taken for an unmounted drive, and nothing is pruned)")


def describe(report, db: str, model: str) -> tuple[dict, list[str]]:
    """The index command's JSON payload and human lines for ``report`` (a ``JobReport``)."""
    lines = [f"{report.indexed} indexed, {report.skipped} already indexed, {len(report.failures)} failed of "
             f"{report.total} files ({report.frames} frames, {report.seconds:.1f} s) into {db} [{model}]"]
    lines += [f"  FAILED {f.path}: {f.stage}: {f.reason}" for f in report.failures]
    if report.ann_index:
        lines.append(f"  ANN index: {report.ann_index}")
    return report_payload(report, db=db, model=model), lines


def run(args, index_once, render=None, spec=None) -> int:
    """Index ``args.inputs`` through ``index_once(paths) -> JobReport`` (which prints nothing),
    pruning first with --prune, or follow them with --watch. ``render(report) -> (payload, lines)``
    is the index command's own output (default: ``describe``). Call it holding the writer lock."""
    # lazy (here and in ``_watch``): pyarrow + LanceDB (~0.5 s) stay out of `vidsift --help`
    from vidsift.pipeline.follow import scan_once
    from vidsift.pipeline.store import VideoStore

    spec = spec or spec_of(args)
    options = storage_options(args)
    store = VideoStore(args.db, storage_options=options)
    if getattr(args, "watch", False):
        return _watch(args, store, spec, options, index_once)
    report, pruned, _ = scan_once(store, list(args.inputs), spec, index_once,
                                  prune_first=bool(getattr(args, "prune", False)), storage_options=options,
                                  allow_empty=bool(getattr(args, "allow_empty", False)))
    payload, lines = render(report) if render else describe(report, args.db, spec.key)
    if getattr(args, "prune", False):
        payload = {**payload, "pruned": pruned.to_dict()}
        lines = [*(_removed_line(path, pruned.models_of(path)) for path in pruned.paths()),
                 f"pruned {len(pruned.paths())} deleted video{'' if len(pruned.paths()) == 1 else 's'} under "
                 f"{', '.join(args.inputs)}"
                 + (f" ({sum(map(len, pruned.failures_cleared.values()))} failure records dropped)"
                    if pruned.failures_cleared else ""), *lines]
    emit(args, payload, "\n".join(lines))
    return exit_status(report)


def _removed_line(path: str, models: list[str]) -> str:
    return f"removed {path} [{', '.join(models)}]"


def _watch(args, store, spec, options, index_once) -> int:
    from vidsift.pipeline.follow import list_root, root_of  # lazy: see ``run``
    from vidsift.pipeline.watch import Action, Follower, WatchConfig, watch

    for item in args.inputs:  # a typo or a missing drive at the start: say so, do not wait for it
        list_root(root_of(item), options)
    config = WatchConfig(settle_s=args.settle, poll_s=args.poll, allow_empty=args.allow_empty)

    def show(action) -> None:
        now = dt.datetime.now(dt.timezone.utc)
        if args.json:
            print(json.dumps({**action.to_dict(), "time": now.isoformat(timespec="seconds")}), flush=True)
            return
        models = f" [{', '.join(action.models)}]" if action.models and action.action == "removed" else ""
        detail = f": {action.detail}" if action.detail else ""
        print(f"{now.astimezone():%H:%M:%S} {action.action:<8} {action.path}{models}{detail}", flush=True)

    follower = Follower(store, list(args.inputs), spec, index_once, config, options,
                        on_action=show)
    show(Action("watching", ", ".join(root.path for root in follower.roots),
              detail=f"{spec.key}; a file is indexed once unchanged for {args.settle:g} s; Ctrl-C stops"))
    try:
        watch(follower)
    except Interrupted as exc:
        follower.flush()
        show(Action("stopped", ", ".join(root.path for root in follower.roots), detail=exc.signal_name))
    return 0
