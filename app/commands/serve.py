"""Commands that open the web app: `app` (search, tag a clip, library) and `demo` (render a sample
archive, index it, search it, then serve it)."""
from __future__ import annotations

from vidsift.app.app_config import AppConfig
from vidsift.app.exit_codes import EXIT_OK

from .common import Command, add_common, add_sampling, index_config, spec_of


def add_app_arguments(p) -> None:
    add_common(p)
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
    add_sampling(p)  # how uploads and folders indexed from the page are sampled and segmented


def serve_app(args) -> int:
    from vidsift.app.web import serve  # lazy: gradio takes seconds to import

    extra = {"upload_exts": tuple(args.upload_exts)} if args.upload_exts else {}
    config = AppConfig(db=args.db, spec=spec_of(args), allow_dirs=tuple(args.allow_dirs), host=args.host,
                       port=args.port, share=args.share, max_upload_mb=args.max_upload_mb,
                       concurrency=args.concurrency, index=index_config(args), **extra)
    serve(config)
    return EXIT_OK


def add_demo_arguments(p) -> None:
    p.add_argument("--out", default="demo-out", help="folder for the archive and database (default ./demo-out)")
    p.add_argument("--videos", type=int, default=16)
    p.add_argument("--no-app", action="store_true", help="stop after the searches instead of opening the app")
    p.add_argument("--port", type=int, default=None)


def demo(args) -> int:
    from vidsift.app.demo import run_demo  # lazy: the demo renders, indexes and serves (torch, PyAV, gradio)

    return run_demo(args.out, videos=args.videos, with_app=not args.no_app, port=args.port)


COMMANDS = [
    Command("demo", "render a sample archive, index it with shapes-tiny, search, classify, open the app",
            add_demo_arguments, demo, {"videos": ("--videos", 1, 10_000, False)}),
    Command("app", "the web app: search, tag a clip, library (Gradio)", add_app_arguments, serve_app,
            {"max_upload_mb": ("--max-upload-mb", 0, 1_000_000, True),
             "concurrency": ("--concurrency", 1, 256, False)}),
]
