"""The Gradio side of the app's events: each handler calls the service (``app.service``) and turns
what comes back into components. Notes become ``gr.Info``/``gr.Warning``, progress goes to
``gr.Progress``, and every failure becomes one ``gr.Error`` message in the page (raised by
``gradio_client`` as ``AppError``) that names an upload by its file name, never by its path in
the server's temp folder. ``app.web`` lays the page out and wires these handlers to it.

The handlers' parameter names are the named API's (``/search``, ``/classify``,
``/add_to_archive``, ``/index_folder``, ``/switch_model``): scripts call them by these names.
"""
from __future__ import annotations

import contextlib
import io
import logging
import mimetypes
import os
import re
from dataclasses import replace

import gradio as gr
import pandas as pd
from PIL import Image
from starlette.responses import FileResponse, PlainTextResponse

from vidsift.app import render
from vidsift.app.app_client import to_wire
from vidsift.app.paths import PathRefused, UploadRefused
from vidsift.app.service import VidsiftService
from vidsift.app.serving import MODEL_COLUMNS
from vidsift.models.errors import ModelUnavailableError
from vidsift.pipeline.errors import InputError, StoreBusyError, StoreWriteError, VideoError
from vidsift.pipeline.storage import StorageError

log = logging.getLogger(__name__)


def scrub(text: str) -> str:
    """Messages name an upload by its file name, not by its path in the server's temp folder."""
    temp = os.environ.get("GRADIO_TEMP_DIR")
    return re.sub(re.escape(temp.rstrip("/")) + r"/[^/\s'\"]+/", "", text) if temp else text


@contextlib.contextmanager
def user_errors(action: str):
    """Turn every failure into one clear message in the page (``gr.Error``)."""
    try:
        yield
    except gr.Error:
        raise
    except VideoError as exc:
        raise gr.Error(scrub(f"{os.path.basename(exc.path) or exc.path}: {exc.stage} failed: {exc.reason}"),
                       title=f"{action} failed", print_exception=False) from None
    except (InputError, PathRefused, UploadRefused, ModelUnavailableError, StoreBusyError, ValueError) as exc:
        raise gr.Error(scrub(str(exc)), title=f"{action} refused", print_exception=False) from None
    except (StoreWriteError, StorageError) as exc:  # disk full, read-only, unreachable: one line naming the store
        raise gr.Error(scrub(f"{action} failed: {exc}"), title=f"{action} failed", print_exception=False) from None
    except Exception as exc:  # a bug or an infrastructure failure: logged with its traceback
        log.exception("%s failed", action)
        raise gr.Error(scrub(f"{action} failed: {type(exc).__name__}: {exc}"), title=f"{action} failed",
                       print_exception=False) from None


class PageHandlers:
    """The page's event handlers over one ``VidsiftService``."""

    def __init__(self, service: VidsiftService):
        self.service = service

    # ---- search ------------------------------------------------------------------------------
    def search(self, query: str = "", image=None, clip: str | None = None, tags: list[str] | None = None,
               folder: str = "", min_duration: float = 0, max_duration: float = 0, per_video: bool = False,
               k: int = 12):
        """/search: gallery, result (JSON: the CLI's ``--json``, ``app_client.to_wire``), result (state)."""
        with user_errors("Search"):
            result = self.service.search(query, image, clip, tags, folder, min_duration, max_duration, per_video, k,
                                         on_note=gr.Info)
        gallery = [(Image.open(io.BytesIO(hit.thumbnail)), render.caption(hit)) for hit in result.hits]
        return gallery, to_wire(result.payload), result.payload

    def play(self, result: dict | list[dict], evt: gr.SelectData) -> str:
        """The player for the clicked hit (``result``: the search's JSON, or its hits)."""
        hits = result.get("results") or [] if isinstance(result, dict) else result
        index = evt.index if isinstance(evt.index, int) else evt.index[0]
        if not hits or not 0 <= index < len(hits):
            return ""
        hit = hits[index]
        try:
            token = self.service.media.register(hit["path"])
        except (PathRefused, UploadRefused) as exc:
            gr.Warning(str(exc))
            return render.refused(str(exc))
        return render.player(hit, self.service.media.url(token, float(hit["start"])))

    def media_endpoint(self, request):
        """Starlette endpoint: the video behind a token, with HTTP range requests (seeking)."""
        path = self.service.media.file(request.path_params.get("token", ""))
        if path is None:
            return PlainTextResponse("Unknown or expired video link: search again.", status_code=404)
        media_type = mimetypes.guess_type(path)[0] or "application/octet-stream"
        return FileResponse(path, media_type=media_type, headers={"Cache-Control": "private, no-store"})

    # ---- classification ------------------------------------------------------------------------
    def classify(self, clip: str | None = None, video: str = "", label_set: str = "", labels: str = "",
                 labels_file: str | None = None, templates: str = "", per_segment: bool = True, top: int = 5,
                 progress=gr.Progress()):
        """/classify: zero-shot labels of an uploaded clip (or an indexed video)."""
        with user_errors("Classification"):
            return self.service.classify(clip, video, label_set, labels, labels_file, templates, per_segment, top,
                                         progress=progress)

    @staticmethod
    def show_classification(result: dict):
        labels, choices, chosen, title = render.chart(result)
        return (gr.update(value=labels, num_top_classes=max(1, len(labels)), label=title),
                render.timeline(result or {}), gr.update(choices=choices, value=chosen), render.verdict(result or {}))

    # ---- writes --------------------------------------------------------------------------------
    def add_to_archive(self, clip: str | None = None, tags: list[str] | None = None, progress=gr.Progress()) -> str:
        """/add_to_archive: index the uploaded clip with the chosen tags."""
        with user_errors("Adding to the archive"):
            added = self.service.add_to_archive(clip, tags, progress=progress)
        if added.already:
            gr.Warning(f"{added.name} is already in the archive (same content); its tags were not changed.")
        else:
            gr.Info(f"Added {added.name} to the archive ({added.tag_text}).")
        return render.added(added)

    def index_folder(self, root: str = "", subfolder: str = "", progress=gr.Progress()) -> str:
        """/index_folder: index a folder inside one of the --allow-dir roots."""
        with user_errors("Indexing"):
            indexed = self.service.index_folder(root, subfolder, progress=progress)
        if indexed.report.failures:
            gr.Warning(f"{len(indexed.report.failures)} video(s) failed; see the failures table.")
        return render.indexed_folder(indexed)

    # ---- library -------------------------------------------------------------------------------
    def models_view(self):
        """The models table, and the switch (a radio: one click serves another)."""
        view = self.service.models_view()
        return (pd.DataFrame(view.rows, columns=MODEL_COLUMNS),
                gr.update(choices=view.choices, value=view.served, interactive=len(view.choices) > 1))

    def library(self, view=None):
        """Summary (markdown), videos and failures (tables) of the archive, for the served model."""
        view = view or self.service.library()
        shown = replace(view, problem=scrub(view.problem)) if view.problem else view
        return (render.library_summary(shown),
                pd.DataFrame(render.video_rows(view.videos), columns=render.VIDEO_COLUMNS),
                pd.DataFrame(render.failure_rows(view.failures), columns=render.FAILURE_COLUMNS))

    def refresh(self):
        """Everything that depends on the archive's contents and the served model: header, filters,
        pickers, library (summary, models, videos, failures)."""
        view = self.service.library()
        summary, videos, failures = self.library(view)
        table, switch = self.models_view()
        return (render.header(self.service.config.db, self.service.spec.key), gr.update(choices=view.tags),
                gr.update(choices=sorted(r["path"] for r in view.videos)), summary, table, switch, videos, failures)

    def serve_model(self, model: str) -> str:
        """/switch_model: serve the archive's ``model`` and make it the default; the key served now."""
        with user_errors("Switching the model"):
            return self.service.serve_model(model).key

    def switch_model(self, choice: str | None = None, progress=gr.Progress()):
        """The Library's switch: serve another model of the archive; returns ``refresh``."""
        with user_errors("Switching the model"):
            spec = self.service.serve_model(choice, progress=progress)
        gr.Info(f"Now serving {spec.key} (the archive's default model).")
        return self.refresh()
