"""Which model a running app answers with, and its loaded encoder.

The app serves the archive's default model (``pipeline.archive_models``) and follows it: when the
default changes (`vidsift models --default`, or the Library's switch), the next search loads the
new model and answers with it. Nothing is re-indexed and the server never stops: an indexing job
for a second model writes that model's tables while the app reads the default's.

A server started with an explicit ``--model`` serves that one until the archive's default next
changes.
"""
from __future__ import annotations

import logging
import threading

from vidsift.models.spec import ModelSpec, resolve_spec
from vidsift.pipeline.archive_models import find_model
from vidsift.pipeline.errors import InputError

log = logging.getLogger(__name__)


class ServedModel:
    """The served spec and its encoder: loaded on first use, one load at a time, the previous
    model's encoder dropped once another is loaded (an encoder handed in is kept: tests share one)."""

    def __init__(self, store, spec: ModelSpec | None = None, encoder=None):
        self.store = store
        if spec is None:  # the archive's default (several models and none marked: InputError, naming them)
            default = self.store.default_model()
            spec = default.spec() if default is not None else resolve_spec()
        else:
            default = self._archive_default()
        self._seen = default.key if default is not None else None  # the archive's default we follow
        self.spec = spec
        self._device, self._precision = spec.device, spec.precision
        self._given = encoder.model_key if encoder is not None else None
        self._encoders = {self._given: encoder} if encoder is not None else {}
        self._lock = threading.Lock()
        self.store.remember_spec(spec)

    def _archive_default(self):
        """The archive's default model, or None (empty, or several with none marked: then the
        served one stays)."""
        try:
            return self.store.default_model()
        except InputError:
            return None

    def current(self) -> ModelSpec:
        """The spec to answer with now: the archive's default when it changed since last seen
        (one look at the models table's version: well under a millisecond)."""
        default = self._archive_default()
        key = default.key if default is not None else None
        if key is not None and key != self._seen:
            spec = default.spec(self._device, self._precision)  # InputError: weights not found, said once per search
            with self._lock:
                if key != self._seen:
                    log.info("the archive's default model is now %s: serving it", key)
                    self.spec, self._seen = spec, key
                    self.store.remember_spec(spec)
        return self.spec

    def encoder(self, spec: ModelSpec | None = None):
        """The encoder of ``spec`` (default: the served one), loaded on first use."""
        spec = spec or self.spec
        key = spec.key
        found = self._encoders.get(key)
        if found is not None:
            return found
        with self._lock:
            found = self._encoders.get(key)
            if found is None:
                from vidsift.models.encoder import ClipEncoder  # lazy: torch + open_clip, only once a model loads

                log.info("loading model %s", key)
                found = ClipEncoder.from_spec(spec)
                self._encoders = {k: v for k, v in self._encoders.items() if k in (self._given, self.spec.key)}
                self._encoders[key] = found
        return found

    def switch(self, wanted: str) -> ModelSpec:
        """Serve the archive's model named ``wanted`` (as `vidsift models` lists it) and make it the
        archive's default. Its encoder is loaded first, so no search waits for it."""
        chosen = find_model(self.store.archive_models(), wanted, where=self.store.uri)
        spec = chosen.spec(self._device, self._precision)
        self.encoder(spec)
        self.store.set_default(chosen.suffix)
        with self._lock:
            self.spec, self._seen = spec, chosen.key
        self.store.remember_spec(spec)
        return spec


MODEL_COLUMNS = ["served", "model", "weights", "dim", "videos", "progress", "segments", "ANN index", "last indexed"]


def models_rows(summary: list[dict], served_key: str) -> list[dict]:
    """The Library's table of models (``VideoStore.summary``): which one is served, and how far
    each has got, as videos indexed against the most complete model of the archive (a model being
    indexed next to the served one fills up while the app keeps answering with the other)."""
    most = max((m["videos"] for m in summary), default=0)
    return [{"served": "●" if m["model"] == served_key else ("default" if m["default"] else ""),
             "model": m["name"], "weights": m["weights"], "dim": m["dim"], "videos": m["videos"],
             "progress": f"{100 * m['videos'] // most}% of {most} videos" if most else "empty",
             "segments": m["segments"], "ANN index": "yes" if m["ann_index"] else "no",
             "last indexed": (m["last_indexed"] or "never")[:19].replace("T", " ")} for m in summary]
