"""`vidsift app`: the Gradio web app (search, tag a clip, library) over the same functions as the CLI.

This module lays out the page and launches it. The work is in ``app.service`` (plain Python, no
Gradio: search, classify, writes, the Library's data), its words in ``app.render`` (HTML and
Markdown), and ``app.gradio_ui`` turns the service's answers, notes, progress and errors into
components, ``gr.Info``, ``gr.Progress`` and ``gr.Error``. Searching is
``pipeline.search.search_vector``, classifying ``pipeline.classify.classify_clip``, indexing
``pipeline.indexing.index_sequential``. The app adds what a shared server needs around them:

- one ``ClipEncoder`` per server, loaded on first use under a lock; classifiers (text weights)
  cached per (labels, templates);
- a path allowlist (``app.paths``): files are read or served only inside the ``--allow-dir``
  folders, the managed uploads folder and the folders of indexed videos; a typed path with ``..``,
  an absolute path outside them, or a symlink leading out is refused with a message;
- videos are played through ``/vidsift/media/<token>``: a random token handed out for one search
  hit whose file passed the allowlist, never a path in the URL; Gradio's own file route serves only
  its private temp folder (``<work dir>/gradio-tmp``, set as ``GRADIO_TEMP_DIR``), with no
  ``allowed_paths``;
- uploads limited in size (``max_file_size``, 413 above it) and type (video extensions);
- concurrency set per event: searches run ``concurrency`` at a time, classifications about half
  that, writes (add to the archive, index a folder) one at a time, each in its own group, so a long
  job never blocks a search;
- every user error (empty query, non-video upload, corrupt video, unknown label set, refused path)
  becomes a ``gr.Error`` shown in the page (and raised by ``gradio_client`` as ``AppError``) and
  leaves the archive untouched.
"""
from __future__ import annotations

import gc
import logging
import os
import sys
import time

import gradio as gr
from starlette.routing import Route

from vidsift.app import render
from vidsift.app.announce import announce
from vidsift.app.app_config import AppConfig
from vidsift.app.gradio_ui import PageHandlers
from vidsift.app.media import MEDIA_ROUTE
from vidsift.app.paths import absolute
from vidsift.app.service import LABEL_FILE_EXTS, VidsiftService
from vidsift.pipeline import label_sets
from vidsift.pipeline.classify import DEFAULT_TEMPLATES

log = logging.getLogger(__name__)


def build_app(config: AppConfig, encoder=None) -> gr.Blocks:
    """The Blocks of `vidsift app`. ``encoder``: an already loaded ClipEncoder for ``config.spec``
    (tests share one); by default the model is loaded on first use. ``config.spec`` None: the
    archive's default model, followed when it changes (``app.serving``). The Blocks carry the
    service as ``vidsift_service`` and the handlers as ``vidsift_page``."""
    config.temp_path.mkdir(parents=True, exist_ok=True)
    # Gradio serves every file under its temp folder to whoever knows the path: a private one per
    # archive, not the shared /tmp/gradio. Read when components and the app are created.
    os.environ["GRADIO_TEMP_DIR"] = str(config.temp_path)
    # No telemetry: Gradio reads this when it would send some (at launch, on errors), not at import.
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    service = VidsiftService(config, encoder=encoder)
    page = PageHandlers(service)
    exts = list(config.upload_exts)
    sets = label_sets.available()
    default_set = "shapes-world" if service.spec.name == "shapes-tiny" and "shapes-world" in sets else \
        ("generic" if "generic" in sets else (sets[0] if sets else None))
    search_limit = config.concurrency
    classify_limit = max(1, config.concurrency // 2)

    with gr.Blocks(title="vidsift", analytics_enabled=False, delete_cache=(3600, 24 * 3600)) as demo:
        header = gr.Markdown(render.header(config.db, service.spec.key), elem_id="header")
        hits_state = gr.State({})
        with gr.Tabs():
            with gr.Tab("Search", id="search"):
                with gr.Row(equal_height=True):
                    query = gr.Textbox("", label="Describe what you are looking for", placeholder="a red circle",
                                       elem_id="search-query", scale=5, lines=1, max_lines=1)
                    search_btn = gr.Button("Search", variant="primary", elem_id="search-button", scale=1)
                with gr.Accordion("Search by example (an image or a short clip instead of text)", open=False):
                    with gr.Row():
                        example_image = gr.Image(label="Example image", type="numpy", image_mode="RGB",
                                                 sources=["upload", "clipboard"], elem_id="search-image", height=200)
                        example_clip = gr.File(label="Example clip", file_types=exts, elem_id="search-clip")
                with gr.Row():
                    tags = gr.Dropdown(label="Tags (videos with all of them)", choices=[], multiselect=True,
                                       allow_custom_value=True, elem_id="search-tags", scale=2)
                    folder = gr.Textbox("", label="Folder or path contains", elem_id="search-folder", scale=2)
                    min_dur = gr.Number(label="Min video duration (s)", value=0, minimum=0, scale=1)
                    max_dur = gr.Number(label="Max video duration (s, 0 = any)", value=0, minimum=0, scale=1)
                with gr.Row():
                    per_video = gr.Checkbox(label="Best segment per video", value=False, elem_id="search-per-video")
                    top_k = gr.Slider(1, config.max_k, value=min(12, config.max_k), step=1, label="Results (top-k)",
                                      elem_id="search-k")
                search_status = gr.HTML(elem_id="search-status")
                gallery = gr.Gallery(label="Results (click one to play it from the segment's start)", columns=4,
                                     object_fit="contain", allow_preview=False, format="jpeg",
                                     elem_id="search-results", height="auto")
                player = gr.HTML(elem_id="player")
                with gr.Accordion("Results as JSON", open=False):
                    hits_json = gr.JSON(label="Result", elem_id="search-json")

            with gr.Tab("Tag a clip", id="tag"):
                with gr.Row():
                    with gr.Column():
                        tag_clip = gr.File(label=f"Upload a video (≤ {config.max_upload_mb:g} MB)", file_types=exts,
                                           elem_id="tag-upload")
                        tag_video = gr.Dropdown(label="…or pick an indexed video", choices=[], value="",
                                                allow_custom_value=True, elem_id="tag-indexed")
                    with gr.Column():
                        label_set = gr.Dropdown(label="Label set", choices=sets, value=default_set,
                                                allow_custom_value=True, elem_id="tag-label-set")
                        labels_text = gr.Textbox("", label="Or your own labels, comma or newline separated "
                                                           "(used instead of the set)",
                                                 lines=2, elem_id="tag-labels-text")
                        labels_file = gr.File(label="Or a label file (.txt, one label per line)",
                                              file_types=list(LABEL_FILE_EXTS), elem_id="tag-labels-file")
                        templates = gr.Textbox("", label="Prompt templates, one per line with {} for the label "
                                                     "(empty: the built-in ensemble)", lines=2,
                                               placeholder="\n".join(DEFAULT_TEMPLATES[:3]), elem_id="tag-templates")
                        with gr.Row():
                            per_segment = gr.Checkbox(label="Per segment", value=True)
                            top = gr.Slider(1, 20, value=5, step=1, label="Top labels")
                classify_btn = gr.Button("Classify", variant="primary", elem_id="tag-classify")
                verdict = gr.HTML(elem_id="tag-verdict")
                with gr.Row():
                    chart = gr.Label(label="Top labels", elem_id="tag-chart", num_top_classes=5)
                    with gr.Column():
                        timeline = gr.HTML(elem_id="tag-timeline")
                        chosen = gr.Dropdown(label="Tags to store with the clip (pick from the top labels or "
                                                   "type your own)", choices=[], value=[], multiselect=True,
                                             allow_custom_value=True, elem_id="tag-choice")
                        add_btn = gr.Button("Add to the archive", elem_id="tag-add")
                        add_status = gr.Markdown(elem_id="tag-add-status")
                with gr.Accordion("Classification as JSON", open=False):
                    result_json = gr.JSON(label="Result", elem_id="tag-json")

            with gr.Tab("Library", id="library"):
                summary = gr.Markdown(elem_id="library-summary")
                refresh_btn = gr.Button("Refresh", size="sm")
                models_now, serve_now = page.models_view()
                models_df = gr.Dataframe(models_now, label="Models of this archive (● served; progress: videos "
                                         "indexed)", interactive=False, elem_id="library-models", wrap=True)
                serve_choice = gr.Radio(label="Serve model (one click switches the app and the archive's default; "
                                              "also `vidsift models --default NAME`)", choices=serve_now["choices"],
                                        value=serve_now["value"], interactive=serve_now["interactive"],
                                        elem_id="library-serve")
                models_timer = gr.Timer(10.0)  # a model being indexed next to the served one: its progress
                videos_df = gr.Dataframe(label="Indexed videos", interactive=False, elem_id="library-videos",
                                         wrap=True)
                failures_df = gr.Dataframe(label="Failures", interactive=False, elem_id="library-failures",
                                           wrap=True)
                gr.Markdown("### Index a folder")
                if not config.allow_dirs:
                    gr.Markdown("Start the server with `--allow-dir FOLDER` (repeatable) to index folders from "
                                "this page.")
                with gr.Row():
                    index_root = gr.Dropdown(label="Allowed folder", choices=list(config.allow_dirs),
                                             allow_custom_value=True,
                                             value=config.allow_dirs[0] if config.allow_dirs else None,
                                             elem_id="index-root", scale=2)
                    index_sub = gr.Textbox("", label="Subfolder (relative; empty = all of it)", elem_id="index-sub",
                                           scale=2)
                    index_btn = gr.Button("Index", variant="primary", interactive=bool(config.allow_dirs),
                                          elem_id="index-button", scale=1)
                index_status = gr.Markdown(elem_id="index-status")

        refresh_outputs = [header, tags, tag_video, summary, models_df, serve_choice, videos_df, failures_df]
        gr.on([search_btn.click, query.submit], page.search,
              inputs=[query, example_image, example_clip, tags, folder, min_dur, max_dur, per_video, top_k],
              outputs=[gallery, hits_json, hits_state], api_name="search",
              concurrency_limit=search_limit, concurrency_id="search"
              ).success(render.search_status, inputs=[hits_state], outputs=[search_status], api_visibility="private")
        gallery.select(page.play, inputs=[hits_state], outputs=[player], api_visibility="private",
                       concurrency_limit=search_limit, concurrency_id="search")
        classify_btn.click(page.classify,
                           inputs=[tag_clip, tag_video, label_set, labels_text, labels_file, templates, per_segment,
                                   top],
                           outputs=[result_json], api_name="classify",
                           concurrency_limit=classify_limit, concurrency_id="classify"
                           ).success(page.show_classification, inputs=[result_json],
                                     outputs=[chart, timeline, chosen, verdict], api_visibility="private")
        add_btn.click(page.add_to_archive, inputs=[tag_clip, chosen], outputs=[add_status],
                      api_name="add_to_archive", concurrency_limit=1, concurrency_id="write"
                      ).success(page.refresh, outputs=refresh_outputs, api_visibility="private")
        index_btn.click(page.index_folder, inputs=[index_root, index_sub], outputs=[index_status],
                        api_name="index_folder", concurrency_limit=1, concurrency_id="write"
                        ).then(page.refresh, outputs=refresh_outputs, api_visibility="private")
        refresh_btn.click(page.refresh, outputs=refresh_outputs, api_visibility="private")
        serve_choice.input(page.switch_model, inputs=[serve_choice], outputs=refresh_outputs,
                           api_name="library_switch", api_visibility="private", concurrency_limit=1,
                           concurrency_id="switch")
        # The same switch for scripts (the radio's choices are the page's, as it last refreshed).
        gr.api(page.serve_model, api_name="switch_model", concurrency_limit=1, concurrency_id="switch")
        models_timer.tick(lambda: page.models_view()[0], outputs=[models_df], api_visibility="private",
                          show_progress="hidden")
        demo.load(page.refresh, outputs=refresh_outputs, api_visibility="private")

    demo.queue(default_concurrency_limit=config.concurrency, max_size=config.queue_size)
    demo.vidsift_service, demo.vidsift_page = service, page
    return demo


def launch_kwargs(config: AppConfig, demo: gr.Blocks) -> dict:
    """What `launch` needs for this app: the bind address, the upload limit, the media route, and
    no extra ``allowed_paths`` (Gradio's file route then serves its private temp folder only)."""
    page: PageHandlers = demo.vidsift_page
    blocked = [str(config.uploads_dir)] + ([] if "://" in config.db else [str(absolute(config.db))])
    return dict(
        server_name=config.host, server_port=config.port, share=config.share,
        max_file_size=config.max_upload_bytes, allowed_paths=[], blocked_paths=blocked, quiet=True, ssr_mode=False,
        mcp_server=False, show_error=False,
        app_kwargs={"routes": [Route(MEDIA_ROUTE + "/{token}", page.media_endpoint, methods=["GET", "HEAD"])]},
    )


def start(config: AppConfig, encoder=None) -> tuple[gr.Blocks, str]:
    """Build and launch without blocking; returns the Blocks (``.close()`` stops it) and its URL."""
    demo = build_app(config, encoder=encoder)
    _, local_url, share_url = demo.launch(**launch_kwargs(config, demo), prevent_thread_lock=True)
    return demo, share_url or local_url


def serve(config: AppConfig, block: bool = True, encoder=None) -> str:
    """`vidsift app`: launch, print the URL and (``block``) serve until interrupted; returns the URL.
    With ``block=False`` the server keeps running in background threads. With ``block`` the caller
    is expected to exit soon after: the garbage collector is left with the objects made since."""
    demo, url = start(config, encoder=encoder)
    print(f"vidsift app: serving {config.db} (model {demo.vidsift_service.spec.key}) at {demo.local_url}", flush=True)
    if config.share:
        print(f"vidsift app: public link: {url}", flush=True)
    if not config.is_loopback:
        print(f"vidsift app: warning: listening on {config.host}: anyone who can reach this machine can search "
              "the archive and upload videos.", file=sys.stderr, flush=True)
    if config.share:
        print("vidsift app: warning: --share makes the app reachable from the internet through a public link.",
              file=sys.stderr, flush=True)
    service = demo.vidsift_service
    try:  # load the model and calibration now, not at the first search (a failure: that search says why)
        service.encoder()
        service.calibration()
    except Exception:  # noqa: BLE001
        log.warning("vidsift app: the served model did not load at start", exc_info=True)
    # Announced once ready, so that `vidsift search` on this database asks this app (app/announce.py).
    announced = announce(config, demo.local_url, service.spec, service.store.archive_models())
    if not block:
        return url
    try:
        # Not ``demo.block_thread()``: on Ctrl-C it closes the server before telling open pages'
        # heartbeat streams to end (``Blocks.close`` sets that event first), so with a page open the
        # server thread outlives its 5 s join and every Ctrl-C waited those 5 s for nothing.
        while demo.is_running:
            time.sleep(0.1)
    except KeyboardInterrupt:
        pass
    finally:
        announced.remove()
        demo.close()
        _kill_share_tunnels()
    # The process exits next. Python's shutdown would garbage-collect the whole heap (gradio, torch,
    # the model: about 600K objects) several times over: 2-3 s of CPU on an idle machine, ten and
    # more on a loaded one, for memory the exit frees anyway. Frozen objects are left out of it.
    gc.freeze()
    return url


def _kill_share_tunnels() -> None:
    """Stop a ``--share`` link's tunnel process, as ``Blocks.block_thread`` does on Ctrl-C."""
    from gradio import tunneling

    for tunnel in list(getattr(tunneling, "CURRENT_TUNNELS", ())):
        tunnel.kill()
