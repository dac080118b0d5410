"""Calibrated confidence: how likely a segment shows what a text describes, and an honest "no match".

Why not a cosine cut-off: raw CLIP similarities are not comparable across queries or models (in
the shapes world a held-out pair's true matches score 0.74 while another label's near misses
score 0.94; real CLIP models score matches near 0.3). So each (text, segment) pair is judged
against alternatives scored on the same segment, with the model's own softmax:

    confidence = e^(s*q) / (e^(s*q) + e^(s*c) + e^(s*r))

- ``q``: cosine of the text and the segment; ``s``: the model's logit scale (its own temperature).
- ``c``: the best of a few content-free prompts ("a photo.", "something.", "" ...). A text that
  says nothing the segment confirms is no better than these: an out-of-world or gibberish query
  ties with them and stays below 1/2.
- ``r``: the best *rival description*: short phrases of the words that describe this archive
  ("green circle", "dog beach"), except those made only of the text's own words (they are implied
  by it) and those that contain all of them (they refine it). A near miss loses to the phrase
  that describes what the segment really shows ("a red circle" against "green circle").

``match`` is ``confidence > 0.5``: the text is more likely than "nothing in particular" and "the
archive's best other description" together. For a label set (`vidsift classify`'s "none of these
labels") the labels count together against what is outside the set (``set_confidences``). The threshold is that definition, not a tuned value;
nothing is fitted on labels. A text with no content word (only "a", "the", "photo"...) describes
nothing and has confidence 0.

Rival descriptions come without labels from the user. A bundled model of a closed world
(shapes-tiny) ships its world's descriptions (``models.registry.ClosedWorld``: its 28 colour-shape
phrases), its "default". Any other model gets them from the archive (``confidence_fit.fit_calibration``,
`vidsift calibrate`; banks are built in ``confidence_bank``, from the words of ``confidence_words``):
a vocabulary the model reads (English words from open_clip's tokenizer vocabulary, most frequent
first), minus the words the model does not react to (their embedding is the empty text's); each
sampled segment is described by its top words (scores centred on the archive's mean, so what sets
the segment apart counts), and the phrases of those words (each word, each ordered pair) that
describe the most segments are stored in ``calibration_<model>``. Without a fitted calibration such
a model compares with the content-free prompts only ("none": near misses are not caught), which
every output says.
"""
from __future__ import annotations

import dataclasses
import functools
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .confidence_bank import RivalBank, default_bank, encode_texts
from .confidence_fit import load_fitted_bank
from .confidence_words import content_words
from .prompt_templates import DEFAULT_TEMPLATES, prompt_ensembles
from .store import VideoStore

MATCH_THRESHOLD = 0.5
# How texts are weighed against rivals (bench/eval_confidence.py --rules measures each; only "plain"
# is used: on fresh seeds the others trade one target for another or cost 8 text encodings a query):
# "plain": the query, the labels' ensembles and the rivals' plain phrases;
# "ensemble-rivals": a search query against the rivals' prompt ensembles (embedded once per model,
#     cached: nothing more is embedded per query); classification as "plain";
# "ensembles": the query's prompt ensemble (8 more texts embedded per query) and the labels' against
#     the rivals' ensembles.
RULES = ("plain", "ensemble-rivals", "ensembles")
RULE = "plain"
CONTENT_FREE_PROMPTS = ("", "a photo.", "a picture.", "an image.", "a video.", "a frame of a video.",
                        "something.", "a thing.")


# ---- scoring ---------------------------------------------------------------------------------

_SINGLE_THREAD_MACS = 200_000  # OpenBLAS runs a product below 65536 x 4 multiply-adds on one thread


def scores(vectors: np.ndarray, texts: np.ndarray) -> np.ndarray:
    """``vectors @ texts.T`` in pieces small enough for the BLAS to run each on the calling thread.

    A search scores ~10 hits against ~2000 rival phrases: one product would wake the BLAS's thread
    pool, whose threads then spin for work; on a busy 2-core machine they took the cores from
    lance's search threads and tripled the search's latency (28 ms instead of 10 at 10K segments)."""
    vectors = np.atleast_2d(vectors)
    n, d = vectors.shape
    step = max(1, _SINGLE_THREAD_MACS // max(1, n * d))
    if step >= len(texts):
        return vectors @ texts.T
    return np.concatenate([vectors @ texts[i:i + step].T for i in range(0, len(texts), step)], axis=1)


@dataclass
class Calibration:
    """What scoring needs for one model: its temperature, the content-free prompts and the rivals."""

    logit_scale: float
    content_free: np.ndarray                 # (m, dim)
    bank: RivalBank
    model: str = ""
    embed_query: Callable[[str], np.ndarray] | None = None  # a query's prompt ensemble (None: its plain vector)
    ensembles_for_labels: bool = False       # labels (classify) against the rivals' ensembles too

    @property
    def source(self) -> str:
        return self.bank.source

    def describe(self) -> dict:
        """What the outputs say about where the calibration comes from."""
        notes = {
            "fitted": "fitted on this archive by `vidsift calibrate` (no labels)",
            "default": f"the default of {self.model.split('|')[0]} (its world's descriptions; run `vidsift calibrate` "
                       "to fit it on this archive)",
            "none": "none: compared with content-free prompts only, near misses are not caught "
                    "(run `vidsift calibrate`)",
        }
        return {"source": self.source, "rivals": len(self.bank.phrases), "note": notes[self.source],
                **{k: v for k, v in self.bank.info.items() if k in ("fitted_at", "segments", "vocabulary")}}

    def rivals(self, for_query: bool) -> np.ndarray:
        """The rival phrases' vectors a search query (``for_query``) or a label set is weighed
        against: their prompt ensembles when the bank has them (for labels only under the
        "ensembles" rule), else the phrases' own vectors."""
        if self.bank.ensembles is None or not (for_query or self.ensembles_for_labels):
            return self.bank.vectors
        return self.bank.ensembles

    def confidences(self, text: str, text_vector: np.ndarray, vectors: np.ndarray) -> np.ndarray:
        """Confidence that each of ``vectors`` (segments, L2-normalised) shows ``text``; with
        ``embed_query`` the text is weighed as that embeds it (its prompt ensemble), not as
        ``text_vector`` (the plain query vector the search ranked with)."""
        if self.embed_query is not None and content_words(text):
            text_vector = self.embed_query(text)
        return self.confidence_matrix([text], np.atleast_2d(text_vector), vectors, for_query=True)[0]

    def confidence_matrix(self, texts: list[str], text_vectors: np.ndarray, vectors: np.ndarray,
                          for_query: bool = False) -> np.ndarray:
        """(len(texts), len(vectors)) confidences: each text (a label of a set, or a search query)
        against each segment."""
        vectors = np.atleast_2d(np.asarray(vectors, dtype=np.float32))
        out = np.zeros((len(texts), len(vectors)))
        if len(vectors) == 0:
            return out
        tv = np.atleast_2d(np.asarray(text_vectors, dtype=np.float32))
        tv = tv / np.maximum(np.linalg.norm(tv, axis=1, keepdims=True), 1e-12)
        q = scores(tv, vectors)                                     # (T, N)
        c = scores(vectors, self.content_free).max(axis=1)          # (N,)
        bank = scores(vectors, self.rivals(for_query)) if len(self.bank.phrases) else None  # (N, R)
        for i, text in enumerate(texts):
            content = content_words(text)
            if not content:
                continue
            rival = 0.0
            if bank is not None:
                mask = self.bank.valid_for(content)
                if mask.any():
                    rival = np.exp(np.clip(self.logit_scale * (bank[:, mask].max(axis=1) - q[i]), -80, 80))
            free = np.exp(np.clip(self.logit_scale * (c - q[i]), -80, 80))
            out[i] = 1.0 / (1.0 + free + rival)
        return out

    def set_confidences(self, texts: list[str], text_vectors: np.ndarray, vectors: np.ndarray) -> np.ndarray:
        """Per segment: how likely it shows *one of* ``texts`` (a label set), the question behind
        "none of these labels". The texts together against the content-free prompts and the best
        rival that is none of them (not implied by, nor refining, any text of the set):

            e^(s*q_1) + ... + e^(s*q_n)  over  that + e^(s*c) + e^(s*r)

        Which label of the set it is, is the classifier's question; so labels of the set that the
        model confuses with each other (a held-out "blue star" it scores as "blue triangle") do
        not make every one of them lose to another, as each label's own confidence does."""
        vectors = np.atleast_2d(np.asarray(vectors, dtype=np.float32))
        tv = np.atleast_2d(np.asarray(text_vectors, dtype=np.float32))
        keep = [i for i, text in enumerate(texts) if content_words(text)]
        if not keep or len(vectors) == 0:
            return np.zeros(len(vectors))
        tv = tv[keep] / np.maximum(np.linalg.norm(tv[keep], axis=1, keepdims=True), 1e-12)
        q = scores(vectors, tv)                                    # (N, T)
        top = q.max(axis=1)
        c = scores(vectors, self.content_free).max(axis=1)
        out_of_set = np.exp(np.clip(self.logit_scale * (c - top), -80, 80))
        if len(self.bank.phrases):
            mask = np.ones(len(self.bank.phrases), dtype=bool)
            for i in keep:
                mask &= self.bank.valid_for(content_words(texts[i]))
            if mask.any():
                r = scores(vectors, self.rivals(False)[mask]).max(axis=1)
                out_of_set = out_of_set + np.exp(np.clip(self.logit_scale * (r - top), -80, 80))
        in_set = np.exp(np.clip(self.logit_scale * (q - top[:, None]), -80, 0)).sum(axis=1)
        return in_set / (in_set + out_of_set)

    def best_rivals(self, text: str, vectors: np.ndarray, n: int = 3) -> list[list[str]]:
        """For explanation: the rival phrases that score highest on each of ``vectors`` for the query ``text``."""
        mask = self.bank.valid_for(content_words(text))
        if not mask.any():
            return [[] for _ in np.atleast_2d(vectors)]
        phrases = [p for p, ok in zip(self.bank.phrases, mask) if ok]
        found = scores(np.atleast_2d(vectors), self.rivals(True))[:, mask]
        return [[phrases[j] for j in np.argsort(-row)[:n]] for row in found]


_DEFAULTS: dict[tuple, RivalBank] = {}
_CONTENT_FREE: dict[str, np.ndarray] = {}
_LOCK = threading.Lock()


def _content_free(encoder) -> np.ndarray:
    with _LOCK:
        found = _CONTENT_FREE.get(encoder.model_key)
    if found is None:
        found = encode_texts(encoder, list(CONTENT_FREE_PROMPTS))
        with _LOCK:
            _CONTENT_FREE[encoder.model_key] = found
    return found


def query_ensemble(encoder, templates: tuple[str, ...], text: str) -> np.ndarray:
    """``text``'s prompt ensemble: its ``templates`` embedded in one batch and averaged."""
    return prompt_ensembles(encoder, [text], templates)[0]


def model_default_bank(encoder, templates: tuple[str, ...] = ()) -> RivalBank:
    """The model's default rival bank (``confidence_bank.default_bank``), kept for the process."""
    key = (encoder.model_key, tuple(templates))
    with _LOCK:
        bank = _DEFAULTS.get(key)
    if bank is None:
        bank = default_bank(encoder, templates=templates)
        with _LOCK:
            _DEFAULTS[key] = bank
    return bank


def load_calibration(store, encoder, bank: RivalBank | None = None, rule: str = RULE) -> Calibration:
    """The calibration ``encoder``'s model uses on ``store``: ``bank`` when given (the benches), else
    the one fitted by `vidsift calibrate`, else the model's default (see the module's notes); texts
    weighed by ``rule`` (``RULES``). A bank without prompt ensembles (a fitted one) is weighed plain."""
    if rule not in RULES:
        raise ValueError(f"unknown confidence rule {rule!r} (one of {', '.join(RULES)})")
    templates = () if rule == "plain" else DEFAULT_TEMPLATES
    if bank is None and store is not None:
        bank = load_fitted_bank(store, encoder.spec.table_suffix)
    if bank is None:
        bank = model_default_bank(encoder, templates)
    if rule == "plain" and bank.ensembles is not None:
        bank = dataclasses.replace(bank, ensembles=None)
    ensembles = rule == "ensembles" and bank.ensembles is not None
    return Calibration(logit_scale=encoder.logit_scale, content_free=_content_free(encoder), bank=bank,
                       model=encoder.model_key, ensembles_for_labels=ensembles,
                       embed_query=functools.partial(query_ensemble, encoder, templates) if ensembles else None)


def calibration_for(db: str, encoder, storage_options: dict | None = None) -> Calibration:
    """The calibration for work outside the archive (`vidsift classify` of any clip): the one fitted
    on the archive at ``db`` when there is one, else the model's default."""
    store = VideoStore(db, storage_options=storage_options) if "://" in db or os.path.isdir(db) else None
    return load_calibration(store, encoder)


def is_match(confidence: float | None) -> bool | None:
    return None if confidence is None else bool(confidence > MATCH_THRESHOLD)
