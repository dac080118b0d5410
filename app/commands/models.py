"""`vidsift models`: the models an archive was indexed with, and which one is its default (what
`search`, `classify`, `app` and `index` use when no ``--model`` is given). ``--default NAME``
switches it: one commit to the ``models`` table, nothing re-indexed; a running app picks it up on
its next search."""
from __future__ import annotations

from pathlib import Path

from vidsift.pipeline.archive_models import find_model, label
from vidsift.app.exit_codes import EXIT_OK
from vidsift.pipeline.errors import InputError

from .common import Command, add_db, add_json, add_storage, emit, storage_options


def add_arguments(p) -> None:
    add_db(p)
    add_storage(p)
    p.add_argument("--default", default=None, metavar="NAME",
                   help="make this model the default: its name as listed, or NAME|WEIGHTS when the archive "
                        "holds the name with several weights")
    add_json(p)


def _table(db: str, models: list[dict]) -> str:
    """The human listing: one line per model, the default marked with ``*``."""
    if not models:
        return f"{db}: nothing indexed yet"
    header = ("", "MODEL", "WEIGHTS", "DIM", "VIDEOS", "SEGMENTS", "ANN INDEX")
    names = [m["name"] for m in models]  # the name alone, unless the archive holds it with other weights too
    rows = [("*" if m["default"] else "", m["name"] if names.count(m["name"]) == 1 else m["model"], m["weights"],
             str(m["dim"]), str(m["videos"]), str(m["segments"]), "yes" if m["ann_index"] else "no (exact search)")
            for m in models]
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]
    right = {3, 4, 5}
    lines = [f"database {db}"]
    for row in (header, *rows):
        cells = [cell.rjust(w) if i in right else cell.ljust(w) for i, (cell, w) in enumerate(zip(row, widths))]
        lines.append("  " + "  ".join(cells).rstrip())
    if any(m["default"] for m in models):
        lines.append("* default: used when no --model is given; switch with `vidsift models --default NAME`")
    else:
        lines.append("no default: pick one with `vidsift models --default NAME` (or give --model)")
    lines += [f"  {m['name']}: checkpoint path not recorded; give --model {m['name']} --pretrained PATH"
              for m in models if m["pretrained"] is None]
    return "\n".join(lines)


def run(args) -> int:
    from vidsift.pipeline.store import VideoStore  # lazy: pyarrow + LanceDB (~0.5 s) stay out of `vidsift --help`

    exists = "://" in args.db or Path(args.db).exists()
    if not exists and args.default is None:
        emit(args, {"db": args.db, "models": [], "default": None}, f"{args.db}: nothing indexed yet")
        return EXIT_OK
    if not exists:
        raise InputError(f"{args.db}: no database here")
    store = VideoStore(args.db, storage_options=storage_options(args))
    changed = None
    if args.default is not None:
        models = store.archive_models()
        if not models:
            raise InputError(f"{args.db}: nothing indexed yet, so no model to make the default")
        chosen = find_model(models, args.default, where=args.db)
        before = next((m for m in store.summary() if m["default"]), None)
        store.set_default(chosen.suffix)
        changed = {"from": before["model"] if before else None, "to": chosen.key}
    summary = store.summary()
    default = next((m["model"] for m in summary if m["default"]), None)
    payload = {"db": args.db, "models": summary, "default": default}
    human = _table(args.db, summary)
    if changed is not None:
        payload["changed"] = changed
        name = label(next(m for m in store.archive_models() if m.key == changed["to"]), store.archive_models())
        human = (f"default model of {args.db}: {name}" + ("" if changed["from"] in (None, changed["to"])
                                                          else f" (was {changed['from']})") + "\n" + human)
    emit(args, payload, human)
    return EXIT_OK


COMMANDS = [Command("models", "the models an archive was indexed with; --default NAME switches the default",
                    add_arguments, run, writes=True)]
