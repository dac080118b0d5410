"""`vidsift search`: the moments that match a description, best first, with their confidence; or
the moments that look like an example image (``--image``) or clip (``--clip``).

A text search is asked of a running `vidsift app` when one serves the same database with the model
this search would use (``app.announce``) and its ``/search`` answers the request identically (no
``--where``/``--exact``/``--pooling qs``/``--thumbnails``, top-k within the app's limit, the same
device and precision): the answer comes in a tenth of a second instead of the seconds that
importing torch, open_clip and LanceDB and loading the model take. Anything else, and any failure
to reach the app, searches in this process (``--no-app`` always does); ``--verbose`` says which.
"""
from __future__ import annotations

import dataclasses
import os
import sys

from vidsift.pipeline.archive_models import ArchiveModel, choose_spec
from vidsift.app.exit_codes import EXIT_OK
from vidsift.pipeline.errors import InputError
from vidsift.pipeline.search_request import MAX_K, search_request

from .common import Command, add_common, emit, spec_of, storage_options


def add_arguments(p) -> None:
    p.add_argument("query", nargs="?", default=None,
                   help='e.g. "a dog catching a frisbee" (or search by example with --image/--clip)')
    p.add_argument("--image", default=None, metavar="FILE",
                   help="search by an example image (PNG, JPEG, ...): the moments that look like it")
    p.add_argument("--clip", default=None, metavar="FILE",
                   help="search by an example clip: its frames (1 per second) embedded and mean-pooled, as an "
                        "indexed segment is")
    add_common(p)
    p.add_argument("-k", "--top-k", type=int, default=10, dest="k", help="results to return (default 10)")
    p.add_argument("--per-video", action="store_true", help="only the best segment of each video")
    p.add_argument("--where", default=None, help="LanceDB SQL filter, e.g. \"path LIKE '%%/cats/%%'\"")
    p.add_argument("--exact", action="store_true", help="exact search even when an ANN index exists")
    p.add_argument("--pooling", default="mean", choices=["mean", "qs"],
                   help="mean-pooled segments, or query-scored pooling of their frames (re-ranks)")
    p.add_argument("--thumbnails", default=None, metavar="DIR", help="write result thumbnails (JPEG) here")
    p.add_argument("--matches-only", action="store_true",
                   help="list only results that match (confidence > 0.5); by default, when nothing matches, the "
                        "closest segments follow the 'no match' line, marked weak (text queries only)")
    p.add_argument("--no-app", action="store_true",
                   help="search in this process even when a running `vidsift app` serves this database (by "
                        "default a text search is asked of it: no model to load)")


def query_kind(args) -> str:
    """'text', 'image' or 'clip': exactly one of the query, --image and --clip (else exit 2)."""
    given = [kind for kind, value in (("text", args.query), ("image", args.image), ("clip", args.clip))
             if value is not None]
    if not given:
        raise InputError("give a query, --image FILE or --clip FILE")
    if len(given) > 1:
        shown = {"text": "a query", "image": "--image", "clip": "--clip"}
        raise InputError(f"give only one of a query, --image or --clip (got {' and '.join(shown[k] for k in given)})")
    kind = given[0]
    if kind != "text" and args.matches_only:
        raise InputError("--matches-only needs a text query: a search by example has no confidence to match on")
    return kind


def run(args) -> int:
    kind = query_kind(args)
    # The query, k and the filter, checked as the app checks them, before the model loads.
    request = search_request(args.query, args.k, per_video=args.per_video, where=args.where,
                             by_example=kind != "text")
    # lazy: pipeline.search brings numpy; `vidsift --help` and the other commands do without it
    from vidsift.pipeline.search import (
        check_clip, clip_vector, image_vector, read_image, require_indexed, search_report, search_text, search_vector,
    )

    example, pixels = None, None
    if kind == "image":  # a bad example file fails before the model loads
        example, pixels = {"kind": "image", "path": os.path.abspath(args.image)}, read_image(args.image)
    elif kind == "clip":
        example = {"kind": "clip", "path": os.path.abspath(args.clip)}
        check_clip(example["path"])
    if kind == "text" and not args.no_app:
        answered = search_through_app(args)
        if answered is not None:
            emit(args, *answered)
            return EXIT_OK
    # lazy: torch, open_clip and LanceDB take seconds to import, which a search answered by a
    # running app (above) does without
    from vidsift.models.encoder import ClipEncoder
    from vidsift.pipeline.confidence import load_calibration
    from vidsift.pipeline.store import VideoStore

    # One search: the catalog would not pay for itself.
    store = VideoStore(args.db, storage_options=storage_options(args), search_catalog=False)
    spec = spec_of(args)
    require_indexed(store, spec)  # before loading the model: a wrong --model fails in a second
    encoder = ClipEncoder.from_spec(spec)
    options = dict(k=request.k, per_video=request.per_video, where=request.where, exact=args.exact,
                   pooling=args.pooling, thumbnails=bool(args.thumbnails))
    if request.by_text:
        calibration = load_calibration(store, encoder)
        hits = search_text(store, encoder, request.text, calibration=calibration, **options)
    else:
        calibration = None
        vector = image_vector(encoder, pixels) if kind == "image" else clip_vector(encoder, example["path"])
        hits = search_vector(store, spec.table_suffix, vector, **options)
    payload, human = search_report(args.query, spec.key, hits, calibration, matches_only=args.matches_only,
                                   thumbnail_dir=args.thumbnails, example=example)
    emit(args, payload, human)
    return EXIT_OK


def _say(args, line: str) -> None:
    """A line on stderr with --verbose (or VIDSIFT_VERBOSE=1): which way the search went."""
    if getattr(args, "verbose", False) or os.environ.get("VIDSIFT_VERBOSE") == "1":
        print(f"vidsift search: {line}", file=sys.stderr, flush=True)


def app_mismatch(args, info) -> str | None:
    """Why the app ``info`` (``app.announce.ServerInfo``) would not answer this text search as this
    process would, or None when it would. The model this process would use is chosen as
    ``common.spec_of`` chooses it, from the archive's models the app announced."""
    if args.where is not None or args.exact or args.pooling != "mean" or args.thumbnails:
        return "--where, --exact, --pooling qs and --thumbnails are searched in this process"
    if args.k > info.max_k:
        return f"-k {args.k} is above the app's limit ({info.max_k})"
    if (args.device, args.precision) != (info.device, info.precision):
        return (f"it runs on --device {info.device} --precision {info.precision}, this search asks for "
                f"{args.device}/{args.precision}")
    try:
        models = [ArchiveModel(**row) for row in info.models]
        wanted = choose_spec(models, args.model, args.pretrained, args.device, args.precision, where=args.db).key
    except (InputError, TypeError, ValueError) as exc:  # an ambiguous --model: this process says so properly
        return f"the model to use is not clear from the app's announcement ({exc})"
    if wanted != info.model:
        return f"it serves {info.model}, this search uses {wanted}"
    return None


def search_through_app(args) -> tuple[dict, str] | None:
    """(JSON payload, human text) as this process would print them, answered by a running app;
    None when none serves this request (then the search runs here)."""
    from vidsift.app.announce import announced  # lazy: read only by a text search, not at CLI start-up

    servers = announced(args.db)
    if not servers:
        _say(args, f"no vidsift app serves {args.db}: searching in this process")
        return None
    for info in servers:
        reason = app_mismatch(args, info)
        if reason is None:
            break
        _say(args, f"not asking the vidsift app at {info.url}: {reason}")
    else:
        return None
    from vidsift.app.app_client import AppUnavailable, search_text  # lazy: urllib.request costs ~0.1 s at start-up

    try:
        result = search_text(info.url, args.query, args.k, args.per_video)
        payload = report_of_app(args, result, info.model)
    except AppUnavailable as exc:
        _say(args, f"the vidsift app at {info.url} did not answer ({exc}): searching in this process")
        return None
    _say(args, f"answered by the vidsift app at {info.url} (pid {info.pid}, model {info.model})")
    return payload


class _Described:
    """The app's calibration, as ``search_report`` reads a ``Calibration``: its ``describe()``."""

    def __init__(self, described: dict):
        self._described = described

    def describe(self) -> dict:
        return self._described


def report_of_app(args, result: dict, model: str) -> tuple[dict, str]:
    """The app's /search result (``app_client.search_text``: the CLI's JSON) turned into this
    command's output, through the same ``search_report`` as an in-process search
    (``AppUnavailable`` if it answered another query or another model than asked)."""
    # lazy, as in search_through_app (already loaded when this is called from there)
    from vidsift.app.app_client import AppUnavailable
    from vidsift.pipeline.search import SearchHit, search_report

    if result.get("model") != model or result.get("query") != args.query.strip():
        raise AppUnavailable(f"it answered {result.get('query')!r} with {result.get('model')} "
                             f"(the archive's default model changed since it started?)")
    fields = [f.name for f in dataclasses.fields(SearchHit) if f.name != "thumbnail"]
    try:
        hits = [SearchHit(thumbnail=b"", **{name: row[name] for name in fields}) for row in result["results"]]
    except (KeyError, TypeError) as exc:
        raise AppUnavailable(f"unexpected result row: {type(exc).__name__}: {exc}") from None
    calibration = _Described(result["calibration"]) if result.get("calibration") is not None else None
    return search_report(args.query, model, hits, calibration, matches_only=args.matches_only)


COMMANDS = [Command("search", "find the moments matching a description, an image or a clip", add_arguments, run,
                    {"k": ("-k/--top-k", 1, MAX_K, False)})]
