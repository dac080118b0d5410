"""The app's server-side work, without Gradio: one served model per server, the path allowlist,
search, classification, the writes and the Library's data. ``app.gradio_ui`` puts a page on it.

Every call goes through the same functions as the CLI (``pipeline.search_request``,
``pipeline.search``, ``pipeline.classify``, ``pipeline.indexing``) and returns plain data: a
search answers with ``search_report``'s payload, the CLI's ``--json``. User errors are raised as
they are (``InputError``, ``PathRefused``, ``VideoError``...) and leave the archive untouched;
notes for the user go to an ``on_note`` callback, progress to a ``progress`` callback called as
``gr.Progress`` is, so the web layer can hand its own objects in.
"""
from __future__ import annotations

import functools
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from vidsift.app.app_config import AppConfig
from vidsift.app.labels import choose_labels
from vidsift.app.media import MediaTokens
from vidsift.app.paths import PathRefused, check_extension, check_inside, check_upload, indexed_roots
from vidsift.app.serving import ServedModel, models_rows
from vidsift.app.writes import Added, ArchiveWriter, FolderIndexed, Progress, no_progress
from vidsift.models.spec import ModelSpec
from vidsift.pipeline.archive_models import label
from vidsift.pipeline.classify import ZeroShotClassifier, classify_clip
from vidsift.pipeline.confidence import load_calibration
from vidsift.pipeline.decode import open_video, probe
from vidsift.pipeline.errors import InputError
from vidsift.pipeline.sampling import plan_frame_indices
from vidsift.pipeline.scans import last_scans
from vidsift.pipeline.search import SearchHit, clip_vector, image_vector, require_indexed, search_report, search_vector
from vidsift.pipeline.search_request import check_filters, search_request
from vidsift.pipeline.sources import VIDEO_EXTENSIONS
from vidsift.pipeline.store import VideoStore

LABEL_FILE_EXTS = (".txt", ".csv", ".lst", ".list")
LABEL_FILE_MAX_BYTES = 1 << 20
MAX_TOP = 100


@dataclass(frozen=True)
class SearchResult:
    """A search's hits (with thumbnails, for the gallery) and its JSON: the CLI's ``--json``."""

    hits: list[SearchHit]
    payload: dict


@dataclass(frozen=True)
class ModelsView:
    """The Library's models: the table's rows (``app.serving.MODEL_COLUMNS``), the switch's choices
    and the one served."""

    rows: list[dict]
    choices: list[str]
    served: str | None


@dataclass(frozen=True)
class LibraryView:
    """The Library's data for the served model (``app.render.library_summary`` words it)."""

    db: str
    model: str
    problem: str | None  # why the archive's default model cannot be served, if it cannot
    has_models: bool
    videos: list[dict]
    failures: list[dict]
    scans: list[dict]
    tags: list[str]


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


class VidsiftService:
    """The server's state (archive, served model, caches, media tokens) and its operations."""

    CALIBRATION_TTL_S = 30.0

    def __init__(self, config: AppConfig, encoder=None):
        self.config = config
        self.store = VideoStore(config.db)
        self.model = ServedModel(self.store, config.spec, encoder)  # follows the archive's default model
        self.media = MediaTokens(self.roots)
        self.writer = ArchiveWriter(config, self.store, self.encoder)
        self._classifiers: OrderedDict[tuple, ZeroShotClassifier] = OrderedDict()
        self._classifier_lock = threading.Lock()
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

    def classifier(self, labels: list[str], templates: list[str]) -> ZeroShotClassifier:
        """A zero-shot classifier, its text weights cached per (labels, templates), 16 at most."""
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

    def calibration(self):
        """The confidence calibration of the served model on this archive (``pipeline.confidence``):
        the one `vidsift calibrate` fitted, else the model's default. Looked up again at most every
        30 s (opening the table costs each search a millisecond), so a calibration fitted while the
        app runs is used within 30 s."""
        now, key = time.monotonic(), self.spec.key
        cached = self._calibration
        if cached is None or cached[1] != key or now - cached[0] > self.CALIBRATION_TTL_S:
            cached = self._calibration = (now, key, load_calibration(self.store, self.encoder()))
        return cached[2]

    def serve_model(self, model: str, progress: Progress = no_progress) -> ModelSpec:
        """Serve the archive's ``model`` (a name or NAME|WEIGHTS as `vidsift models` lists it) and
        make it the default. Its encoder is loaded before the switch, so searches go on with the
        old one until then."""
        if not (model or "").strip():
            raise InputError("Name one of the archive's models to serve.")
        progress(0, desc=f"Loading {model}")
        return self.model.switch(model)

    # ---- what may be read ----------------------------------------------------------------------
    def indexed_paths(self) -> list[str]:
        return [r["path"] for r in self.store.model(self.spec).video_rows(["path"])]

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
    def search(self, query: str = "", image=None, clip: str | None = None, tags: list[str] | None = None,
               folder: str = "", min_duration: float = 0, max_duration: float = 0, per_video: bool = False,
               k: int = 12, on_note: Callable[[str], None] = no_progress) -> SearchResult:
        """Search by text, or by example (an image wins over a clip, a clip over the text). Text
        hits carry ``confidence`` and ``match``; the payload is the CLI's ``--json``."""
        spec = self.model.current()  # the archive's default, if it was switched since the last search
        kind = "image" if image is not None else ("clip" if clip else None)
        request = search_request(query, k, per_video=per_video, by_example=kind is not None, max_k=self.config.max_k)
        filters = check_filters(tags, folder, min_duration, max_duration)
        if kind == "image" and ((query or "").strip() or clip):
            on_note("Searching by the example image (clear it to search by text or by clip).")
        elif kind == "clip" and (query or "").strip():
            on_note("Searching by the example clip (clear it to search by text).")
        require_indexed(self.store, spec)  # before loading the model
        where, possible = filters.where(self.store.model(spec).video_rows)
        calibration = self.calibration() if request.by_text else None
        hits: list[SearchHit] = []
        if possible:
            if kind == "image":
                vector = image_vector(self.encoder(), image)
            elif kind == "clip":
                vector = clip_vector(self.encoder(), str(self.check_upload(clip)), self.config.index)
            else:
                vector = self.text_vector(request.text)
            hits = search_vector(self.store, spec.table_suffix, vector, k=request.k, per_video=request.per_video,
                                 where=where, text=request.text, calibration=calibration)
        if not hits:
            on_note("No results: nothing indexed matches these filters.")
        payload, _ = search_report(request.text, spec.key, hits, calibration,
                                   example=None if kind is None else {"kind": kind})
        return SearchResult(hits, payload)

    # ---- classification ------------------------------------------------------------------------
    def _planned_frames(self, path: str) -> int:
        info, starts = probe(open_video(path), path)
        return max(1, len(plan_frame_indices(starts, info.duration, self.config.index.sampling)))

    def classify(self, clip: str | None = None, video: str = "", label_set: str = "", labels: str = "",
                 labels_file: str | None = None, templates: str = "", per_segment: bool = True, top: int = 5,
                 progress: Progress = no_progress) -> dict:
        """Zero-shot labels of an uploaded clip (or an indexed video): the whole clip and each
        segment. The answer is `vidsift classify --json`'s, with ``video`` (the name the user
        gave) instead of the server's ``path``, and the number of labels."""
        self.model.current()
        if clip:
            path, shown = str(self.check_upload(clip)), os.path.basename(clip)
        elif (video or "").strip():
            path, shown = str(self.check_indexed_video(video)), video.strip()
        else:
            raise InputError("Upload a clip or pick an indexed video to classify.")
        text = (labels or "").replace("\n", ",")
        if labels_file:
            check_upload(labels_file, LABEL_FILE_EXTS, LABEL_FILE_MAX_BYTES, what="label file")
        elif not text.strip() and not (label_set or "").strip():
            raise InputError("No labels: choose a label set, type labels, or upload a label file.")
        given = [t.strip() for t in (templates or "").splitlines() if t.strip()]
        label_list, template_list = choose_labels(label_set, text, labels_file, given)
        try:
            top = int(top)
        except (TypeError, ValueError):
            raise InputError(f"top must be a whole number, got {top!r}") from None
        if not 1 <= top <= MAX_TOP:
            raise InputError(f"top must be between 1 and {MAX_TOP}, got {top}")
        progress(0, desc="Loading the model")
        encoder = self.encoder()
        progress(0, desc="Embedding the labels")
        classifier = self.classifier(label_list, template_list)
        total = self._planned_frames(path)
        progress((0, total), desc="Embedding frames", unit="frames")
        counting = _CountingEncoder(encoder, lambda n: progress((min(n, total), total), desc="Embedding frames",
                                                                unit="frames"))
        result = classify_clip(counting, path, classifier, self.config.index, per_segment=bool(per_segment), top=top,
                               calibration=self.calibration())
        out = result.to_dict()
        del out["path"]  # the server's copy of an upload: the user knows it by its name
        return {"video": shown, **out, "model": encoder.model_key, "templates": template_list,
                "n_labels": len(label_list)}

    # ---- writes --------------------------------------------------------------------------------
    def add_to_archive(self, clip: str | None = None, tags: list[str] | None = None,
                       progress: Progress = no_progress) -> Added:
        """Copy the uploaded clip into the uploads folder and index it with the chosen tags."""
        self.model.current()
        if not clip:
            raise InputError("Upload a clip first (Tag a clip → Upload a video).")
        return self.writer.add_clip(self.check_upload(clip), os.path.basename(clip), tags, progress)

    def index_folder(self, root: str = "", subfolder: str = "", progress: Progress = no_progress) -> FolderIndexed:
        """Index a folder inside one of the --allow-dir roots."""
        self.model.current()
        return self.writer.index_folder(root, subfolder, progress)

    # ---- library -------------------------------------------------------------------------------
    def models_view(self) -> ModelsView:
        """The Library's models: the table, and the switch (one click serves another)."""
        models, served = self.store.archive_models(), self.spec.key
        choices = [label(m, models) for m in models]
        return ModelsView(models_rows(self.store.summary(), served), choices,
                          next((choice for m, choice in zip(models, choices) if m.key == served), None))

    def library(self) -> LibraryView:
        """The archive as the served model sees it, after looking again at the archive's default
        model (``ServedModel.current``; ``problem`` says why it cannot be served)."""
        try:
            self.model.current()
            problem = None
        except InputError as exc:
            problem = str(exc)
        rows = self.store.model(self.spec).video_rows(["path", "duration", "n_segments", "tags", "indexed_at"])
        return LibraryView(db=self.config.db, model=self.spec.key, problem=problem,
                           has_models=bool(self.store.archive_models()), videos=rows, failures=self.store.failures(),
                           scans=last_scans(self.store, self.spec.key),
                           tags=sorted({t for r in rows for t in (r["tags"] or [])}))
