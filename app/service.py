"""The app's server-side work, behind the page: one encoder per server, the path allowlist, search,
classification, adding to the archive, the library. ``app.web`` lays these out as a Gradio page.

Every call goes through the same functions as the CLI (``pipeline.search``, ``pipeline.classify``,
``pipeline.indexing``); user errors become ``gr.Error`` messages and leave the archive untouched.
"""
from __future__ import annotations

import contextlib
import functools
import html
import io
import logging
import mimetypes
import os
import re
import secrets
import shutil
import sys
import threading
import zlib
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr  # noqa: E402

from vidsift.app.paths import (  # noqa: E402
    PathRefused, UploadRefused, absolute, check_extension, check_inside, check_upload, indexed_roots,
    resolve_user_path, safe_filename,
)
from vidsift.app.serving import ServedModel  # noqa: E402
from vidsift.models.spec import ModelSpec  # noqa: E402
from vidsift.pipeline.config import IndexConfig  # noqa: E402
from vidsift.pipeline.errors import InputError, StoreBusyError, StoreWriteError, VideoError  # noqa: E402
from vidsift.pipeline.scans import last_scans  # noqa: E402
from vidsift.pipeline.search import format_timestamp  # noqa: E402
from vidsift.pipeline.sources import VIDEO_EXTENSIONS  # noqa: E402

log = logging.getLogger(__name__)

MEDIA_ROUTE = "/vidsift/media"
LABEL_FILE_EXTS = (".txt", ".csv", ".lst", ".list")
LABEL_FILE_MAX_BYTES = 1 << 20
MAX_TAGS, MAX_TAG_CHARS = 32, 200
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}
_PALETTE = ("#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#9a6324",
            "#469990", "#808000", "#000075", "#800000")


@dataclass
class AppConfig:
    """How `vidsift app` serves one database.

    ``work_dir`` holds the managed uploads (``uploads/``) and Gradio's private temp folder
    (``gradio-tmp/``); by default it is the DB's sibling folder ``<db>-app`` (``./vidsift-app`` for
    remote URIs). ``temp_dir`` overrides the temp folder alone (it is process-wide: Gradio reads
    ``GRADIO_TEMP_DIR``).
    """

    db: str = "vidsift.lance"
    spec: ModelSpec | None = None  # None: the archive's default model (``app.serving``), ViT-B-32 for a new one
    allow_dirs: tuple[str, ...] = ()
    host: str = "127.0.0.1"
    port: int | None = None
    share: bool = False
    max_upload_mb: float = 500.0
    upload_exts: tuple[str, ...] = tuple(sorted(VIDEO_EXTENSIONS))
    concurrency: int = 4
    queue_size: int = 64
    max_k: int = 100
    index: IndexConfig = field(default_factory=IndexConfig)
    work_dir: str | None = None
    temp_dir: str | None = None

    def __post_init__(self):
        self.allow_dirs = tuple(str(absolute(d)) for d in self.allow_dirs)
        for folder in self.allow_dirs:
            if not os.path.isdir(folder):
                raise InputError(f"--allow-dir {folder}: no such folder")
        self.upload_exts = tuple(sorted({e.lower() if e.startswith(".") else "." + e.lower()
                                         for e in self.upload_exts}))
        if not self.upload_exts:
            raise InputError("at least one upload extension is needed")
        if not 0 < float(self.max_upload_mb) <= 1_000_000:
            raise InputError(f"--max-upload-mb must be > 0, got {self.max_upload_mb!r}")
        if not 1 <= int(self.concurrency) <= 64:
            raise InputError(f"concurrency must be between 1 and 64, got {self.concurrency!r}")
        if self.port is not None and not 0 < int(self.port) < 65536:
            raise InputError(f"--port must be between 1 and 65535, got {self.port!r}")

    @property
    def work_path(self) -> Path:
        if self.work_dir:
            return absolute(self.work_dir)
        if "://" in self.db:
            return absolute("vidsift-app")
        db = absolute(self.db)
        stem = db.name[: -len(".lance")] if db.name.endswith(".lance") else db.name
        return db.parent / f"{stem}-app"

    @property
    def uploads_dir(self) -> Path:
        return self.work_path / "uploads"

    @property
    def temp_path(self) -> Path:
        return absolute(self.temp_dir) if self.temp_dir else self.work_path / "gradio-tmp"

    @property
    def max_upload_bytes(self) -> int:
        return int(float(self.max_upload_mb) * 1024 * 1024)

    @property
    def is_loopback(self) -> bool:
        return self.host in LOOPBACK_HOSTS or self.host.startswith("127.")


def _colour(label: str) -> str:
    return _PALETTE[zlib.crc32(label.encode()) % len(_PALETTE)]


class _CountingEncoder:
    """The server's encoder, reporting how many frames it has embedded (for a progress bar)."""

    def __init__(self, encoder, on_frames):
        self._encoder, self._on_frames, self.frames = encoder, on_frames, 0

    def __getattr__(self, name):
        return getattr(self._encoder, name)

    def encode_pixels(self, pixels):
        out = self._encoder.encode_pixels(pixels)
        self.frames += len(pixels)
        self._on_frames(self.frames)
        return out


def _scrub(text: str) -> str:
    """Messages name an upload by its file name, not by its path in the server's temp folder."""
    temp = os.environ.get("GRADIO_TEMP_DIR")
    return re.sub(re.escape(temp.rstrip("/")) + r"/[^/\s'\"]+/", "", text) if temp else text


@contextlib.contextmanager
def _user_errors(action: str):
    """Turn every failure into one clear message in the page (``gr.Error``)."""
    from vidsift.models.loading import ModelUnavailableError

    try:
        yield
    except gr.Error:
        raise
    except VideoError as exc:
        raise gr.Error(_scrub(f"{os.path.basename(exc.path) or exc.path}: {exc.stage} failed: {exc.reason}"),
                       title=f"{action} failed", print_exception=False) from None
    except (InputError, PathRefused, UploadRefused, ModelUnavailableError, StoreBusyError, ValueError) as exc:
        raise gr.Error(_scrub(str(exc)), title=f"{action} refused", print_exception=False) from None
    except StoreWriteError as exc:  # disk full, read-only, permissions: one line naming the database
        raise gr.Error(_scrub(f"{action} failed: {exc}"), title=f"{action} failed", print_exception=False) from None
    except Exception as exc:  # a bug or an infrastructure failure: logged with its traceback
        storage = sys.modules.get("vidsift.pipeline.storage")  # StorageError: a store that cannot be reached
        if storage is not None and isinstance(exc, storage.StorageError):
            raise gr.Error(_scrub(f"{action} failed: {exc}"), title=f"{action} failed",
                           print_exception=False) from None
        log.exception("%s failed", action)
        raise gr.Error(_scrub(f"{action} failed: {type(exc).__name__}: {exc}"), title=f"{action} failed",
                       print_exception=False) from None


class VidsiftService:
    """The server's state and the handlers behind each event; Gradio-free where it can be."""

    def __init__(self, config: AppConfig, encoder=None):
        from vidsift.pipeline.store import VideoStore

        self.config = config
        self.store = VideoStore(config.db)
        self.model = ServedModel(self.store, config.spec, encoder)  # follows the archive's default model
        self._classifiers: OrderedDict[tuple, object] = OrderedDict()
        self._classifier_lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._media: OrderedDict[str, tuple[str, str]] = OrderedDict()
        self._media_lock = threading.Lock()
        # Refining a search (filters, top-k, per video) asks for the same text again, and encoding
        # it (82 ms with ViT-B-32 on a 2-core CPU) costs more than searching a million segments.
        self._text_vectors = functools.lru_cache(maxsize=256)(self._encode_text)
        self._calibration = None  # (when looked up, model key, Calibration)
        config.uploads_dir.mkdir(parents=True, exist_ok=True)

    # ---- model -------------------------------------------------------------------------------
    @property
    def spec(self) -> ModelSpec:
        """The model served now (``self.model.current()`` looks again at the archive's default)."""
        return self.model.spec

    def encoder(self):
        """The served model's encoder, loaded on first use (a second caller waits for it)."""
        return self.model.encoder()

    def text_vector(self, query: str):
        return self._text_vectors(self.spec, query)

    def _encode_text(self, spec: ModelSpec, query: str):
        return self.model.encoder(spec).encode_texts([query])[0]

    def classifier(self, labels: list[str], templates: list[str]):
        """A zero-shot classifier, its text weights cached per (labels, templates), 16 at most."""
        from vidsift.pipeline.classify import ZeroShotClassifier

        key = (self.spec.key, tuple(labels), tuple(templates))
        with self._classifier_lock:
            if key in self._classifiers:
                self._classifiers.move_to_end(key)
                return self._classifiers[key]
        built = ZeroShotClassifier(self.encoder(), labels, templates)
        with self._classifier_lock:
            self._classifiers[key] = built
            while len(self._classifiers) > 16:
                self._classifiers.popitem(last=False)
        return built

    @property
    def suffix(self) -> str:
        return self.spec.table_suffix

    # ---- what may be read ----------------------------------------------------------------------
    def indexed_paths(self) -> list[str]:
        return [r["path"] for r in self.store.video_rows(self.suffix, ["path"])]

    def roots(self, indexed: list[str] | None = None) -> tuple[str, ...]:
        """Folders whose files this server may read or serve."""
        indexed = self.indexed_paths() if indexed is None else indexed
        return (*self.config.allow_dirs, str(self.config.uploads_dir), *map(str, indexed_roots(indexed)))

    def check_indexed_video(self, path: str) -> Path:
        """A video picked by path: it must be an indexed video, inside the roots once resolved."""
        text = (path or "").strip()
        indexed = self.indexed_paths()
        real = check_inside(text, self.roots(indexed), what="video")  # traversal / outside / symlink out
        if text not in set(indexed):
            raise PathRefused(f"Refused video {text!r}: it is not an indexed video of this archive.")
        check_extension(str(real), VIDEO_EXTENSIONS, what="video file")
        return real

    def check_upload(self, path: str | None, what: str = "video file") -> Path:
        return check_upload(path, self.config.upload_exts, self.config.max_upload_bytes, what=what)

    # ---- search ------------------------------------------------------------------------------
    def _where(self, tags, folder, min_duration, max_duration) -> tuple[str | None, bool]:
        """The LanceDB SQL filter of the search filters, and whether it can match anything."""
        from vidsift.pipeline.store import sql_in, sql_str

        clauses = []
        for tag in tags or []:
            if str(tag).strip():
                clauses.append(f"array_has(tags, {sql_str(str(tag).strip())})")
        if folder and folder.strip():
            clauses.append(f"strpos(path, {sql_str(folder.strip())}) > 0")
        low, high = float(min_duration or 0), float(max_duration or 0)
        if low < 0 or high < 0:
            raise InputError("Durations must be positive (0 = no limit).")
        if high and low > high:
            raise InputError(f"The minimum duration ({low:g} s) is above the maximum ({high:g} s).")
        if low or high:
            rows = self.store.video_rows(self.suffix, ["video_id", "duration"])
            ids = [r["video_id"] for r in rows if r["duration"] >= low and (not high or r["duration"] <= high)]
            if not ids:
                return None, False
            clauses.append(sql_in("video_id", ids))
        return " AND ".join(clauses) or None, True

    def _image_vector(self, image):
        from vidsift.pipeline.search import image_vector

        return image_vector(self.encoder(), image)

    def _clip_vector(self, clip: str):
        from vidsift.pipeline.search import clip_vector

        return clip_vector(self.encoder(), str(self.check_upload(clip)), self.config.index)

    CALIBRATION_TTL_S = 30.0

    def calibration(self):
        """The confidence calibration of the served model on this archive (``pipeline.confidence``):
        the one `vidsift calibrate` fitted, else the model's default. Looked up again at most every
        30 s (opening the table costs each search a millisecond), so a calibration fitted while the
        app runs is used within 30 s."""
        import time

        from vidsift.pipeline.confidence import load_calibration

        now, key = time.monotonic(), self.spec.key
        cached = self._calibration
        if cached is None or cached[1] != key or now - cached[0] > self.CALIBRATION_TTL_S:
            cached = self._calibration = (now, key, load_calibration(self.store, self.encoder()))
        return cached[2]

    def search(self, query: str = "", image=None, clip: str | None = None, tags: list[str] | None = None,
               folder: str = "", min_duration: float = 0, max_duration: float = 0, per_video: bool = False,
               k: int = 12):
        """Search by text, or by example (an image or a short clip): gallery, result (JSON: the CLI's
        ``--json`` fields), result (state). Text hits carry ``confidence`` and ``match``."""
        from PIL import Image

        from vidsift.pipeline.search import require_indexed, search_vector

        calibration = None
        with _user_errors("Search"):
            spec = self.model.current()  # the archive's default, if it was switched since the last search
            query = (query or "").strip()
            if not query and image is None and not clip:
                raise InputError("The search query is empty: describe what you are looking for, or give an "
                                 "example image or clip.")
            try:
                k = int(k)
            except (TypeError, ValueError):
                raise InputError(f"top-k must be a whole number, got {k!r}") from None
            if not 1 <= k <= self.config.max_k:
                raise InputError(f"top-k must be between 1 and {self.config.max_k}, got {k}")
            if image is not None and (query or clip):
                gr.Info("Searching by the example image (clear it to search by text or by clip).")
            elif clip and query:
                gr.Info("Searching by the example clip (clear it to search by text).")
            require_indexed(self.store, spec)  # before loading the model
            where, possible = self._where(tags, folder, min_duration, max_duration)
            by_text = image is None and not clip
            if not possible:
                hits = []
            elif image is not None:
                hits = search_vector(self.store, spec.table_suffix, self._image_vector(image), k=k,
                                     per_video=bool(per_video), where=where)
            elif clip:
                hits = search_vector(self.store, spec.table_suffix, self._clip_vector(clip), k=k,
                                     per_video=bool(per_video), where=where)
            else:
                calibration = self.calibration()
                hits = search_vector(self.store, spec.table_suffix, self.text_vector(query), k=k,
                                     per_video=bool(per_video), where=where, text=query, calibration=calibration)
        if not hits:
            gr.Info("No results: nothing indexed matches these filters.")
        gallery = [(Image.open(io.BytesIO(h.thumbnail)),
                    f"{os.path.basename(h.path)} · {format_timestamp(h.start)}–{format_timestamp(h.end)} · "
                    f"{h.score:.3f}{self.badge(h.confidence, h.match)}")
                   for h in hits]
        # No "path" key: gradio_client takes any JSON dict with one for a file to download.
        rows = [{"rank": h.rank, "score": h.score, "video_path": h.path, "start": h.start, "end": h.end,
                 "video_id": h.video_id, "segment_index": h.segment_index, "n_frames": h.n_frames,
                 "tags": list(h.tags), "match": h.match, "confidence": h.confidence} for h in hits]
        result = {"query": query if by_text else "", "model": spec.key, "results": rows,
                  "matches": sum(1 for h in hits if h.match) if by_text else None,
                  "calibration": calibration.describe() if calibration is not None else None}
        return gallery, result, result

    @staticmethod
    def badge(confidence: float | None, match: bool | None) -> str:
        """The confidence badge of a hit's caption: " · ✓ 97%" for a match, " · weak 3%" otherwise."""
        if confidence is None:
            return ""
        return f" · {'✓' if match else 'weak'} {100 * confidence:.0f}%"

    @staticmethod
    def search_status(result: dict | None) -> str:
        """Above the gallery: the "No match" state (the closest candidates below it, dimmed), or how
        many results match; weak results are dimmed by their place in the gallery."""
        result = result or {}
        rows = result.get("results") or []
        if not rows or result.get("matches") is None:
            return ""
        weak = [i for i, row in enumerate(rows, 1) if not row.get("match")]
        css = "".join(f"#search-results .grid-container > div:nth-child({i}) button.thumbnail-item{{opacity:.35}}"
                      for i in weak)
        query = html.escape(result.get("query") or "")
        if result["matches"] == 0:
            text = (f"<div class='vs-nomatch' style='padding:10px 14px;border-radius:8px;background:#fff4e5;"
                    f"border:1px solid #f0b35b'><b>No match</b> for “{query}”: nothing in the archive shows it. "
                    f"The closest segments are shown below, dimmed.</div>")
        else:
            text = (f"<div class='vs-matches' style='padding:6px 2px'><b>{result['matches']}</b> of {len(rows)} "
                    f"results match “{query}”" + (", the weak ones are dimmed." if weak else ".") + "</div>")
        cal = result.get("calibration") or {}
        note = "" if cal.get("source") in (None, "fitted") else \
            f"<div class='vs-calibration' style='font-size:12px;color:#666'>Confidence calibration: " \
            f"{html.escape(cal.get('note', ''))}</div>"
        return (f"<style>{css}</style>" if css else "") + text + note

    # ---- playing a hit -------------------------------------------------------------------------
    def register_media(self, path: str) -> str:
        """A token for one allowed video file (checked now and again when served)."""
        real = check_inside(path, self.roots(), what="video")
        check_extension(str(real), VIDEO_EXTENSIONS, what="video file")
        if not real.is_file():
            raise PathRefused(f"The video {path!r} is no longer there.")
        token = secrets.token_urlsafe(18)
        with self._media_lock:
            self._media[token] = (path, str(real))
            while len(self._media) > 4096:
                self._media.popitem(last=False)
        return token

    def media_file(self, token: str) -> str | None:
        """The file behind a token if it is still where it was checked, else None."""
        with self._media_lock:
            entry = self._media.get(token)
        if entry is None:
            return None
        written, real = entry
        if os.path.realpath(written) != real or not os.path.isfile(real):
            return None  # moved, or a symlink swapped since the check
        return real

    def media_endpoint(self, request):
        """Starlette endpoint: the video behind a token, with HTTP range requests (seeking)."""
        from starlette.responses import FileResponse, PlainTextResponse

        path = self.media_file(request.path_params.get("token", ""))
        if path is None:
            return PlainTextResponse("Unknown or expired video link: search again.", status_code=404)
        media_type = mimetypes.guess_type(path)[0] or "application/octet-stream"
        return FileResponse(path, media_type=media_type, headers={"Cache-Control": "private, no-store"})

    def play(self, hits: dict | list[dict], evt: gr.SelectData) -> str:
        """HTML5 player for the clicked hit, starting at the segment's start (media fragment #t=)."""
        if isinstance(hits, dict):
            hits = hits.get("results") or []
        index = evt.index if isinstance(evt.index, int) else evt.index[0]
        if not hits or not 0 <= index < len(hits):
            return ""
        hit = hits[index]
        try:
            token = self.register_media(hit["video_path"])
        except (PathRefused, UploadRefused) as exc:
            gr.Warning(str(exc))
            return f"<p class='vs-refused'>{html.escape(str(exc))}</p>"
        start, end = float(hit["start"]), float(hit["end"])
        name = html.escape(os.path.basename(hit["video_path"]))
        src = f"{MEDIA_ROUTE.lstrip('/')}/{token}#t={start:.3f}"
        return (f"<div class='vs-player' data-start='{start:.3f}' data-end='{end:.3f}'>"
                f"<video id='vs-video' src='{src}' controls autoplay muted playsinline preload='auto' "
                f"style='width:100%;max-height:60vh;background:#000'></video>"
                f"<p><b>{name}</b> · {format_timestamp(start)}–{format_timestamp(end)} · score {float(hit['score']):.3f}"
                f"{self.badge(hit.get('confidence'), hit.get('match'))}"
                f"{' · tags: ' + html.escape(', '.join(hit['tags'])) if hit.get('tags') else ''}</p></div>")

    # ---- classification ------------------------------------------------------------------------
    def _labels(self, label_set: str, labels: str, labels_file: str | None) -> list[str]:
        from vidsift.pipeline import label_sets
        from vidsift.pipeline.classify import parse_labels

        text = (labels or "").replace("\n", ",")
        if labels_file:
            check_upload(labels_file, LABEL_FILE_EXTS, LABEL_FILE_MAX_BYTES, what="label file")
        if text.strip() or labels_file:
            return parse_labels(text if text.strip() else None, labels_file)
        if not (label_set or "").strip():
            raise InputError("No labels: choose a label set, type labels, or upload a label file.")
        return label_sets.load(label_set)

    @staticmethod
    def _set_templates(label_set: str) -> list[str] | None:
        from vidsift.pipeline import label_sets

        return label_sets.templates(label_set.strip())

    def _planned_frames(self, path: str) -> int:
        from vidsift.pipeline.decode import open_video, probe
        from vidsift.pipeline.sampling import plan_frame_indices

        info, starts = probe(open_video(path), path)
        return max(1, len(plan_frame_indices(starts, info.duration, self.config.index.sampling)))

    def classify(self, clip: str | None = None, video: str = "", label_set: str = "", labels: str = "",
                 labels_file: str | None = None, templates: str = "", per_segment: bool = True, top: int = 5,
                 progress=gr.Progress()):
        """Zero-shot labels of an uploaded clip (or an indexed video): the whole clip and each segment."""
        from vidsift.pipeline.classify import classify_clip, parse_templates

        with _user_errors("Classification"):
            self.model.current()
            if clip:
                path, shown = str(self.check_upload(clip)), os.path.basename(clip)
            elif (video or "").strip():
                path, shown = str(self.check_indexed_video(video)), video.strip()
            else:
                raise InputError("Upload a clip or pick an indexed video to classify.")
            label_list = self._labels(label_set, labels, labels_file)
            given = [t.strip() for t in (templates or "").splitlines() if t.strip()]
            uses_set = not ((labels or "").strip() or labels_file) and (label_set or "").strip()
            template_list = parse_templates(given) if given or not uses_set else (
                self._set_templates(label_set) or parse_templates())
            try:
                top = int(top)
            except (TypeError, ValueError):
                raise InputError(f"top must be a whole number, got {top!r}") from None
            if not 1 <= top <= 100:
                raise InputError(f"top must be between 1 and 100, got {top}")
            progress(0, desc="Loading the model")
            encoder = self.encoder()
            progress(0, desc="Embedding the labels")
            classifier = self.classifier(label_list, template_list)
            total = self._planned_frames(path)
            progress((0, total), desc="Embedding frames", unit="frames")
            counting = _CountingEncoder(encoder, lambda n: progress((min(n, total), total),
                                                                    desc="Embedding frames", unit="frames"))
            result = classify_clip(counting, path, classifier, self.config.index, per_segment=bool(per_segment),
                                   top=top, calibration=self.calibration())
        out = result.to_dict()
        del out["path"]  # gradio_client takes any JSON dict with a "path" key for a file
        out = {"video": shown, **out, "model": encoder.model_key, "templates": template_list,
               "n_labels": len(label_list)}
        return out

    @staticmethod
    def timeline_html(result: dict) -> str:
        segments = result.get("segments") or []
        if not segments:
            return ""
        blocks = []
        for seg in segments:
            best = seg["labels"][0]
            span = f"{format_timestamp(seg['start'])}–{format_timestamp(seg['end'])}"
            width = max(float(seg["end"]) - float(seg["start"]), 0.05)
            if "label" in seg and seg["label"] is None:  # calibrated: none of the labels is shown here
                label, colour = "none of these labels", "#9e9e9e"
                value = f"closest: {html.escape(best['label'])} {100 * best['confidence']:.0f}%"
            else:
                chosen = next((r for r in seg["labels"] if r["label"] == seg.get("label")), best)
                label, colour = html.escape(chosen["label"]), _colour(chosen["label"])
                value = f"{100 * chosen.get('confidence', chosen['probability']):.0f}%"
            blocks.append(
                f"<div class='vs-seg' title='{span} {label} ({value})' "
                f"style='flex:{width:.3f} 1 0;min-width:2px;background:{colour};color:#fff;"
                f"padding:4px 6px;overflow:hidden;white-space:nowrap;text-overflow:ellipsis;"
                f"border-right:1px solid #fff;font-size:12px'>{label}<br><small>{span} · "
                f"{value}</small></div>")
        return ("<div class='vs-timeline-wrap'><div style='font-size:13px;margin-bottom:4px'>Per segment "
                f"({len(segments)} segments, {float(result.get('duration', 0)):.1f} s)</div>"
                "<div class='vs-timeline' style='display:flex;width:100%;border-radius:6px;overflow:hidden'>"
                + "".join(blocks) + "</div></div>")

    @staticmethod
    def verdict_html(result: dict) -> str:
        """The answer above the chart: the label shown (and any other label shown in some scene), or
        "None of these labels" with the closest one and its confidence."""
        result = result or {}
        if "calibration" not in result:
            return ""
        if result.get("label") is None:
            closest = max(result.get("labels") or [{}], key=lambda r: r.get("confidence", 0.0))
            hint = (f" (closest: {html.escape(closest['label'])}, confidence {100 * closest['confidence']:.0f}%)"
                    if closest.get("label") else "")
            return (f"<div class='vs-verdict vs-none' style='padding:8px 12px;border-radius:8px;background:#fff4e5;"
                    f"border:1px solid #f0b35b'><b>None of these labels</b> fits this clip{hint}.</div>")
        shown = ", ".join(f"{html.escape(m['label'])} ({100 * m['confidence']:.0f}%)"
                          for m in result.get("matches", []))
        return (f"<div class='vs-verdict vs-label' style='padding:8px 12px;border-radius:8px;background:#e8f5e9;"
                f"border:1px solid #81c784'><b>{html.escape(result['label'])}</b> · shown: {shown}</div>")

    def show_classification(self, result: dict):
        labels = {row["label"]: float(row["probability"]) for row in (result or {}).get("labels", [])}
        choices = list(labels)
        matched = [m["label"] for m in (result or {}).get("matches", [])]
        for label in matched:
            if label not in choices:
                choices.append(label)
        calibrated = "calibration" in (result or {})
        chosen = matched if calibrated else choices[:1]
        title = "Top labels" if not calibrated else (
            "Probability among these labels (none of them fits)" if result.get("label") is None
            else "Probability among these labels")
        return (gr.update(value=labels, num_top_classes=max(1, len(labels)), label=title),
                self.timeline_html(result or {}),
                gr.update(choices=choices, value=chosen), self.verdict_html(result or {}))

    # ---- writes --------------------------------------------------------------------------------
    def _copy_upload(self, src: Path) -> tuple[Path, bool]:
        """Copy an upload into the managed uploads folder (by content, so re-uploads are one file)."""
        from vidsift.pipeline.sources import content_hash

        folder = self.config.uploads_dir / content_hash(str(src))[:16]
        dest = folder / safe_filename(src.name)
        if dest.is_file() and dest.stat().st_size == src.stat().st_size:
            return dest, False
        folder.mkdir(parents=True, exist_ok=True)
        staging = folder / f".{dest.name}.part"
        shutil.copyfile(src, staging)
        os.replace(staging, dest)
        return dest, True

    @staticmethod
    def _clean_tags(tags) -> tuple[str, ...]:
        cleaned = tuple(dict.fromkeys(str(t).strip() for t in (tags or []) if str(t).strip()))
        if len(cleaned) > MAX_TAGS or any(len(t) > MAX_TAG_CHARS for t in cleaned):
            raise InputError(f"At most {MAX_TAGS} tags of at most {MAX_TAG_CHARS} characters each.")
        return cleaned

    def add_to_archive(self, clip: str | None = None, tags: list[str] | None = None, progress=gr.Progress()) -> str:
        """Copy the uploaded clip into the uploads folder and index it with the chosen tags."""
        from vidsift.pipeline.decode import open_video, probe
        from vidsift.pipeline.indexing import index_sequential

        with _user_errors("Adding to the archive"):
            self.model.current()
            if not clip:
                raise InputError("Upload a clip first (Tag a clip → Upload a video).")
            src = self.check_upload(clip)
            name = os.path.basename(clip)
            chosen = self._clean_tags(tags)
            probe(open_video(str(src)), str(src))  # not a video / no stream: refused before any copy
            encoder = self.encoder()
            with self._write_lock:
                dest, created = self._copy_upload(src)
                try:
                    report = index_sequential(self.store, encoder, [str(dest)], self.config.index, tags=chosen,
                                              on_progress=lambda d, t: progress((d, t), desc="Indexing",
                                                                                unit="videos"))
                except BaseException:
                    if created:
                        dest.unlink(missing_ok=True)
                    raise
                if report.failures:  # leave the archive as it was: no failure row, no copy
                    self.store.clear_failures(encoder.model_key, [str(dest)])
                    if created:
                        dest.unlink(missing_ok=True)
                    failure = report.failures[0]
                    raise VideoError(name, failure.stage, failure.reason)
                if report.skipped:
                    if created:
                        dest.unlink(missing_ok=True)
                    gr.Warning(f"{name} is already in the archive (same content); its tags were not changed.")
                    return f"**{html.escape(name)}** is already in the archive; nothing was added."
        tag_text = ", ".join(chosen) if chosen else "no tags"
        gr.Info(f"Added {name} to the archive ({tag_text}).")
        return (f"Added **{html.escape(name)}** to the archive as `{html.escape(str(dest))}` with tags: "
                f"{html.escape(tag_text)} ({report.frames} frames).")

    def index_folder(self, root: str = "", subfolder: str = "", progress=gr.Progress()) -> str:
        """Index a folder inside one of the --allow-dir roots."""
        from vidsift.pipeline.indexing import index_sequential
        from vidsift.pipeline.sources import discover

        with _user_errors("Indexing"):
            self.model.current()
            allowed = self.config.allow_dirs
            if not allowed:
                raise PathRefused("No folders may be indexed from the page: start the server with "
                                  "--allow-dir FOLDER.")
            root = (root or allowed[0]).strip()
            if str(absolute(root)) not in allowed or ".." in Path(root).parts:
                raise PathRefused(f"Refused folder {root!r}: not one of the allowed folders ({', '.join(allowed)}).")
            folder = resolve_user_path(subfolder, allowed, base=root, what="folder")
            if not folder.is_dir():
                raise InputError(f"{folder} is not a folder.")
            found, outside = [], []
            for path in discover([str(folder)]):
                try:
                    found.append(str(check_inside(path, allowed, what="video")))
                except PathRefused:
                    outside.append(path)
            found = list(dict.fromkeys(found))
            if not found and outside:
                raise PathRefused(f"Refused folder {str(folder)!r}: its {len(outside)} video(s) are symbolic links "
                                  "leading outside the allowed folders.")
            if not found:
                raise InputError(f"No videos in {folder} (extensions: {' '.join(sorted(VIDEO_EXTENSIONS))}).")
            encoder = self.encoder()
            progress((0, len(found)), desc="Indexing", unit="videos")
            with self._write_lock:
                report = index_sequential(self.store, encoder, found, self.config.index,
                                          on_progress=lambda d, t: progress((d, t), desc="Indexing", unit="videos"))
        lines = [f"Indexed **{report.indexed}**, already indexed {report.skipped}, failed {len(report.failures)} "
                 f"of {report.total} videos in `{html.escape(str(folder))}` ({report.frames} frames, "
                 f"{report.seconds:.1f} s)."]
        lines += [f"- failed `{html.escape(f.path)}`: {f.stage}: {html.escape(f.reason)}" for f in report.failures]
        if outside:
            lines.append(f"- {len(outside)} file(s) skipped: links leading outside the allowed folders")
        if report.failures:
            gr.Warning(f"{len(report.failures)} video(s) failed; see the failures table.")
        return "\n".join(lines)

    # ---- library -------------------------------------------------------------------------------
    def _follow(self) -> str | None:
        """Look again at the archive's default model (``ServedModel.current``); the reason when it
        cannot be served (its weights not found), else None."""
        try:
            self.model.current()
        except InputError as exc:
            return str(exc)
        return None

    def models_view(self):
        """The Library's models: the table, and the switch (a radio: one click serves another)."""
        import pandas as pd

        from vidsift.pipeline.archive_models import label

        from vidsift.app.serving import MODEL_COLUMNS, models_rows

        models = self.store.archive_models()
        table = pd.DataFrame(models_rows(self.store.summary(), self.spec.key), columns=MODEL_COLUMNS)
        choices = [label(m, models) for m in models]
        served = next((label(m, models) for m in models if m.key == self.spec.key), None)
        return table, gr.update(choices=choices, value=served, interactive=len(choices) > 1)

    def header(self) -> str:
        return f"## vidsift · `{html.escape(self.config.db)}` · model `{html.escape(self.spec.key)}`"

    def library(self):
        """Summary (markdown), videos and failures (tables) of the archive, for the served model."""
        import pandas as pd

        problem = self._follow()
        lines = [f"**Database** `{html.escape(self.config.db)}` · **serving model** `{html.escape(self.spec.key)}`"]
        if problem:
            lines.append(f"- the archive's default model cannot be served: {html.escape(_scrub(problem))}")
        if not self.store.archive_models():
            lines.append("- nothing indexed yet")
        rows = self.store.video_rows(self.suffix, ["path", "duration", "n_segments", "tags", "indexed_at"])
        videos = pd.DataFrame([{"path": r["path"], "duration (s)": round(float(r["duration"]), 2),
                                "segments": r["n_segments"], "tags": ", ".join(r["tags"] or []),
                                "indexed": r["indexed_at"].isoformat(timespec="seconds") if r["indexed_at"] else ""}
                               for r in sorted(rows, key=lambda r: r["path"])],
                              columns=["path", "duration (s)", "segments", "tags", "indexed"])
        failures = pd.DataFrame([{"path": f["path"], "stage": f["stage"], "reason": f["reason"], "model": f["model"],
                                  "time": f["time"].isoformat(timespec="seconds")} for f in self.store.failures()],
                                columns=["path", "stage", "reason", "model", "time"])
        lines.append(f"- failures: {len(failures)}")
        lines += [f"- folder `{html.escape(scan['folder'])}` last scanned "
                  f"{scan['scanned_at'].isoformat(timespec='seconds')} ({scan['kind']}: {scan['added']} added, "
                  f"{scan['changed']} changed, {scan['removed']} removed, {scan['failed']} failed)"
                  for scan in last_scans(self.store, self.spec.key)]
        return "\n".join(lines), videos, failures

    def refresh(self):
        """Everything that depends on the archive's contents and the served model: header, filters,
        pickers, library (summary, models, videos, failures)."""
        summary, videos, failures = self.library()
        rows = self.store.video_rows(self.suffix, ["path", "tags"])
        tags = sorted({t for r in rows for t in (r["tags"] or [])})
        paths = sorted(r["path"] for r in rows)
        table, switch = self.models_view()
        return (self.header(), gr.update(choices=tags), gr.update(choices=paths), summary, table, switch, videos,
                failures)

    def serve_model(self, model: str) -> str:
        """The ``/switch_model`` API: serve the archive's ``model`` (a name or NAME|WEIGHTS as
        `vidsift models` lists it) and make it the default; returns the model key now served."""
        with _user_errors("Switching the model"):
            if not (model or "").strip():
                raise InputError("Name one of the archive's models to serve.")
            return self.model.switch(model).key

    def switch_model(self, choice: str | None = None, progress=gr.Progress()):
        """Serve another model of the archive (and make it the archive's default): its encoder is
        loaded before the switch, so searches go on with the old one until then. Returns ``refresh``."""
        with _user_errors("Switching the model"):
            if not (choice or "").strip():
                raise InputError("Pick one of the archive's models to serve.")
            progress(0, desc=f"Loading {choice}")
            spec = self.model.switch(choice)
        gr.Info(f"Now serving {spec.key} (the archive's default model).")
        return self.refresh()
