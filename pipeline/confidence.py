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

Rival descriptions come from the archive without labels (``fit_calibration``, `vidsift calibrate`):
a vocabulary the model reads (English words from open_clip's tokenizer vocabulary, most frequent
first; a bundled model trained on a closed vocabulary ships the words of its training captions),
minus the words the model does not react to (their embedding is the empty text's); each sampled
segment is described by its top words (scores centred on the archive's mean, so what sets the
segment apart counts), and the phrases of those words (each word, each ordered pair) that describe
the most segments are stored in ``calibration_<model>``. Without a fitted calibration, a model with a
small vocabulary (the bundled shapes-tiny) uses all its words and ordered pairs (the "default"),
and any other model compares with the content-free prompts only ("none": near misses are not
caught), which every output says.
"""
from __future__ import annotations

import datetime as dt
import json
import re
import threading
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

MATCH_THRESHOLD = 0.5
CONTENT_FREE_PROMPTS = ("", "a photo.", "a picture.", "an image.", "a video.", "a frame of a video.",
                        "something.", "a thing.")
# Function words, and words that name the medium rather than what it shows.
STOP_WORDS = frozenset("""
a an the this that these those it its it's there here some any each every no not
of on in at to into onto from by with without for about over under above below near between behind
and or but as than then so very just also only
is are was were be been being am has have had do does did can could will would should may might
i me my we our you your he him his she her they them their who whom which what where when how
photo photos picture pictures image images video videos clip clips frame frames footage still stills
scene scenes shot shots showing shows show shown seen view
""".split())
CALIBRATION_META_KEY = b"vidsift_calibration"
VOCABULARY_SIZE = 10_000       # English words read by fit_calibration (most frequent first)
INFORMATIVE_FRACTION = 0.1     # a word the model moves less than this x the median word is ignored
WORDS_PER_SEGMENT = 3          # each sampled segment is described by its 3 best words
SAMPLE_SEGMENTS = 20_000
MAX_PHRASES = 2048
DEFAULT_BANK_MAX_WORDS = 64    # words of a shipped vocabulary paired into the default bank


# ---- words ---------------------------------------------------------------------------------

def _stem(word: str) -> str:
    """A plural and its singular are one word here ("circles" is no rival of "circle")."""
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 4 and word.endswith(("sses", "xes", "ches", "shes")):
        return word[:-2]
    if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
        return word[:-1]
    return word


def words_of(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+(?:'[a-z]+)?", (text or "").lower())


def content_words(text: str) -> frozenset[str]:
    """The words of ``text`` that say what to look for (stems, without function/medium words)."""
    return frozenset(_stem(w) for w in words_of(text) if w not in STOP_WORDS)


def english_vocabulary(size: int = VOCABULARY_SIZE) -> list[str]:
    """The ``size`` most frequent whole English words of open_clip's tokenizer vocabulary (its BPE
    merges come in frequency order), without function words: what any open_clip text tower reads."""
    from open_clip.tokenizer import SimpleTokenizer

    out: list[str] = []
    for token in SimpleTokenizer().encoder:
        if not token.endswith("</w>"):
            continue
        word = token[:-4]
        if 3 <= len(word) <= 15 and word.isascii() and word.isalpha() and word.islower() \
                and word not in STOP_WORDS:
            out.append(word)
            if len(out) >= size:
                break
    return out


def _shapes_world_caption_words() -> list[str]:
    """Every word of the captions shapes-tiny was trained on (``shapes_world.caption_variants``)."""
    from .shapes_world import BACKGROUNDS, COLOURS, SHAPES, caption_variants

    words = {w for c in COLOURS for s in SHAPES for bg in (None, *BACKGROUNDS)
             for caption in caption_variants(c, s, bg) for w in words_of(caption)}
    return sorted(w for w in words if w not in STOP_WORDS)


# A bundled model trained from scratch on a closed vocabulary reads only the words of its captions
# (any other word is noise to it): it ships them. Every other model reads English.
CAPTION_VOCABULARIES = {"shapes-tiny": _shapes_world_caption_words}


def model_vocabulary(spec, size: int = VOCABULARY_SIZE) -> tuple[list[str], str]:
    """(words, where they come from) for the model of ``spec``."""
    own = CAPTION_VOCABULARIES.get(spec.name)
    if own is not None and not spec.pretrained:
        return own(), f"the words of {spec.name}'s training captions"
    return english_vocabulary(size), f"the {size} most frequent English words of the open_clip tokenizer"


# ---- the rival bank ------------------------------------------------------------------------

@dataclass
class RivalBank:
    """Rival descriptions with their (L2-normalised) embeddings, and where they come from."""

    phrases: list[str]
    vectors: np.ndarray                      # (n, dim) float32
    source: str                              # "fitted", "default" or "none"
    info: dict = field(default_factory=dict)
    stems: list[frozenset] = field(init=False)
    _valid: dict = field(init=False, default_factory=dict, repr=False)

    def __post_init__(self):
        self.vectors = np.asarray(self.vectors, dtype=np.float32)
        if self.phrases:
            self.vectors = self.vectors.reshape(len(self.phrases), -1)
        self.stems = [content_words(p) for p in self.phrases]

    def valid_for(self, content: frozenset) -> np.ndarray:
        """Rivals of a text with these content words: not made only of its words (implied by it),
        and not containing all of them (a refinement of it). Remembered for the last 256 texts."""
        found = self._valid.get(content)
        if found is None:
            found = np.fromiter((not (s <= content or content <= s) for s in self.stems), bool, len(self.stems))
            if len(self._valid) >= 256:
                self._valid.pop(next(iter(self._valid)))
            self._valid[content] = found
        return found


def _informative(words: list[str], vectors: np.ndarray, empty: np.ndarray) -> np.ndarray:
    """Words the model reacts to: their embedding differs from the empty text's at least a tenth as
    much as the median word's (shapes-tiny ignores "background", "moving": ~0.01 against ~0.4)."""
    effect = 1.0 - vectors @ empty
    return effect >= INFORMATIVE_FRACTION * float(np.median(effect)) if len(words) else np.zeros(0, bool)


def encode_texts(encoder, texts: list[str], batch: int = 256, progress=None) -> np.ndarray:
    out = []
    for begin in range(0, len(texts), batch):
        out.append(encoder.encode_texts(texts[begin:begin + batch]))
        if progress:
            progress(min(begin + batch, len(texts)), len(texts))
    if not out:
        return np.zeros((0, encoder.embed_dim), dtype=np.float32)
    vectors = np.concatenate(out).astype(np.float32)
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


def default_bank(encoder) -> RivalBank:
    """Without a fitted calibration: every word and ordered word pair of a model that ships its own
    closed vocabulary (shapes-tiny); nothing for a model that reads English (too many words to pair
    without knowing which ones the archive needs)."""
    if encoder.spec.name not in CAPTION_VOCABULARIES or encoder.spec.pretrained:
        return RivalBank([], np.zeros((0, encoder.embed_dim)), "none")
    words, origin = model_vocabulary(encoder.spec)
    vectors = encode_texts(encoder, words)
    empty = encode_texts(encoder, [""])[0]
    kept = [w for w, ok in zip(words, _informative(words, vectors, empty)) if ok][:DEFAULT_BANK_MAX_WORDS]
    phrases = kept + [f"{a} {b}" for a in kept for b in kept if a != b]
    return RivalBank(phrases, encode_texts(encoder, phrases), "default",
                     {"vocabulary": origin, "words": len(kept)})


def _sample_vectors(table, sample: int, seed: int) -> np.ndarray:
    dataset = table.to_lance()
    total = dataset.count_rows()
    if total == 0:
        return np.zeros((0, 0), dtype=np.float32)
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(total, size=min(total, sample), replace=False))
    column = dataset.take(rows.tolist(), columns=["vector"]).column("vector")
    return np.asarray(column.combine_chunks().flatten().to_numpy(zero_copy_only=False),
                      dtype=np.float32).reshape(len(rows), -1)


def fit_bank(encoder, segment_vectors: np.ndarray, words: list[str] | None = None,
             words_per_segment: int = WORDS_PER_SEGMENT, max_phrases: int = MAX_PHRASES,
             progress=None) -> RivalBank:
    """Rival phrases describing these segments, from the model's vocabulary, without labels: each
    segment's ``words_per_segment`` best words (scores centred on the segments' mean), and the
    words and ordered pairs of words describing the most segments."""
    origin = "the given words"
    if words is None:
        words, origin = model_vocabulary(encoder.spec)
    vectors = encode_texts(encoder, list(words), progress=progress)
    empty = encode_texts(encoder, [""])[0]
    keep = _informative(list(words), vectors, empty)
    words = [w for w, ok in zip(words, keep) if ok]
    vectors = vectors[keep]
    x = np.asarray(segment_vectors, dtype=np.float32)
    counts: Counter = Counter()
    if len(x) and len(words):
        mean = np.zeros(len(words), dtype=np.float64)
        for begin in range(0, len(x), 4096):
            mean += (x[begin:begin + 4096] @ vectors.T).sum(axis=0)
        mean /= len(x)
        r = min(words_per_segment, len(words))
        for begin in range(0, len(x), 4096):
            scores = x[begin:begin + 4096] @ vectors.T - mean.astype(np.float32)
            top = np.argpartition(-scores, r - 1, axis=1)[:, :r]
            for row in top:
                chosen = [words[j] for j in row]
                counts.update((w,) for w in chosen)
                counts.update((a, b) for a in chosen for b in chosen if a != b)
    phrases = [" ".join(p) for p, _ in counts.most_common(max_phrases)]
    return RivalBank(phrases, encode_texts(encoder, phrases), "fitted",
                     {"vocabulary": origin, "informative_words": len(words), "segments_sampled": int(len(x))})


# ---- stored calibrations ---------------------------------------------------------------------

def calibration_table_name(suffix: str) -> str:
    return f"calibration_{suffix}"


def _open_table(store, name: str):
    try:
        return store.db.open_table(name)
    except ValueError as exc:  # LanceDB: "Table 'name' was not found"
        if "not found" in str(exc):
            return None
        raise


def fit_calibration(store, encoder, sample: int = SAMPLE_SEGMENTS, vocabulary_size: int = VOCABULARY_SIZE,
                    seed: int = 0, progress=None) -> dict:
    """`vidsift calibrate`: fit the rival bank of ``encoder``'s model on this archive (no labels) and
    store it in ``calibration_<model>`` (replacing a previous one). Returns a report."""
    import pyarrow as pa

    from .errors import InputError
    from .search import require_indexed

    spec = encoder.spec
    require_indexed(store, spec)
    table = store.segments_table(spec.table_suffix)
    if table is None or table.count_rows() == 0:
        raise InputError(f"Nothing is indexed with {spec.key}: index videos before calibrating.")
    segments = table.count_rows()
    x = _sample_vectors(table, sample, seed)
    words, origin = model_vocabulary(spec, vocabulary_size)
    bank = fit_bank(encoder, x, words, progress=progress)
    bank.info["vocabulary"] = origin
    info = {**bank.info, "model": spec.key, "segments": segments, "table_version": int(table.version),
            "fitted_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "phrases": len(bank.phrases), "seed": seed}
    dim = bank.vectors.shape[1] if len(bank.phrases) else encoder.embed_dim
    schema = pa.schema([pa.field("phrase", pa.string()), pa.field("vector", pa.list_(pa.float32(), dim))],
                       metadata={CALIBRATION_META_KEY: json.dumps(info).encode()})
    data = pa.table({"phrase": pa.array(bank.phrases, pa.string()),
                     "vector": pa.FixedSizeListArray.from_arrays(pa.array(bank.vectors.ravel(), pa.float32()), dim)},
                    schema=schema)
    with store.exclusive_writer():
        store.db.create_table(calibration_table_name(spec.table_suffix), data, mode="overwrite")
    _BANKS.clear()
    return {**info, "examples": bank.phrases[:12]}


def format_calibration(report: dict) -> str:
    """`vidsift calibrate`'s human text."""
    return (f"calibrated {report['model']} on this archive ({report['segments']} segments, "
            f"{report['segments_sampled']} sampled, no labels): {report['phrases']} rival phrases from "
            f"{report['informative_words']} words ({report['vocabulary']}); e.g. "
            + ", ".join(report["examples"][:8]))


def load_fitted_bank(store, suffix: str) -> RivalBank | None:
    """The stored rival bank of a model, or None; cached per table version."""
    table = _open_table(store, calibration_table_name(suffix))
    if table is None:
        return None
    key = (store.uri, suffix, int(table.version))
    with _LOCK:
        if key in _BANKS:
            return _BANKS[key]
    data = table.to_arrow()
    info = json.loads((data.schema.metadata or {}).get(CALIBRATION_META_KEY, b"{}"))
    vectors = np.asarray(data.column("vector").combine_chunks().flatten().to_numpy(zero_copy_only=False),
                         dtype=np.float32).reshape(data.num_rows, -1)
    bank = RivalBank(data.column("phrase").to_pylist(), vectors, "fitted", info)
    with _LOCK:
        _BANKS[key] = bank
    return bank


_BANKS: dict[tuple, RivalBank] = {}
_LOCK = threading.Lock()


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

    @property
    def source(self) -> str:
        return self.bank.source

    def describe(self) -> dict:
        """What the outputs say about where the calibration comes from."""
        notes = {
            "fitted": "fitted on this archive by `vidsift calibrate` (no labels)",
            "default": f"the default of {self.model.split('|')[0]} (its own vocabulary; run `vidsift calibrate` "
                       "to fit it on this archive)",
            "none": "none: compared with content-free prompts only, near misses are not caught "
                    "(run `vidsift calibrate`)",
        }
        return {"source": self.source, "rivals": len(self.bank.phrases), "note": notes[self.source],
                **{k: v for k, v in self.bank.info.items() if k in ("fitted_at", "segments", "vocabulary")}}

    def confidences(self, text: str, text_vector: np.ndarray, vectors: np.ndarray) -> np.ndarray:
        """Confidence that each of ``vectors`` (segments, L2-normalised) shows ``text``."""
        vectors = np.atleast_2d(np.asarray(vectors, dtype=np.float32))
        content = content_words(text)
        if not content or len(vectors) == 0:
            return np.zeros(len(vectors))
        q = vectors @ (np.asarray(text_vector, dtype=np.float32) / max(np.linalg.norm(text_vector), 1e-12))
        c = scores(vectors, self.content_free).max(axis=1)
        mask = self.bank.valid_for(content)
        if mask.any():
            r = scores(vectors, self.bank.vectors)[:, mask].max(axis=1)
            rival = np.exp(np.clip(self.logit_scale * (r - q), -80, 80))
        else:
            rival = 0.0
        free = np.exp(np.clip(self.logit_scale * (c - q), -80, 80))
        return 1.0 / (1.0 + free + rival)

    def confidence_matrix(self, texts: list[str], text_vectors: np.ndarray, vectors: np.ndarray) -> np.ndarray:
        """(len(texts), len(vectors)) confidences: each label of a set against each segment."""
        vectors = np.atleast_2d(np.asarray(vectors, dtype=np.float32))
        tv = np.atleast_2d(np.asarray(text_vectors, dtype=np.float32))
        tv = tv / np.maximum(np.linalg.norm(tv, axis=1, keepdims=True), 1e-12)
        q = scores(tv, vectors)                                     # (T, N)
        c = scores(vectors, self.content_free).max(axis=1)[None, :]  # (1, N)
        bank = scores(vectors, self.bank.vectors) if len(self.bank.phrases) else None  # (N, R)
        out = np.zeros((len(texts), len(vectors)))
        for i, text in enumerate(texts):
            content = content_words(text)
            if not content:
                continue
            rival = 0.0
            if bank is not None:
                mask = self.bank.valid_for(content)
                if mask.any():
                    rival = np.exp(np.clip(self.logit_scale * (bank[:, mask].max(axis=1) - q[i]), -80, 80))
            free = np.exp(np.clip(self.logit_scale * (c[0] - q[i]), -80, 80))
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
                r = scores(vectors, self.bank.vectors[mask]).max(axis=1)
                out_of_set = out_of_set + np.exp(np.clip(self.logit_scale * (r - top), -80, 80))
        in_set = np.exp(np.clip(self.logit_scale * (q - top[:, None]), -80, 0)).sum(axis=1)
        return in_set / (in_set + out_of_set)

    def best_rivals(self, text: str, vectors: np.ndarray, n: int = 3) -> list[list[str]]:
        """For explanation: the rival phrases that score highest on each of ``vectors``."""
        mask = self.bank.valid_for(content_words(text))
        if not mask.any():
            return [[] for _ in np.atleast_2d(vectors)]
        phrases = [p for p, ok in zip(self.bank.phrases, mask) if ok]
        found = scores(np.atleast_2d(vectors), self.bank.vectors)[:, mask]
        return [[phrases[j] for j in np.argsort(-row)[:n]] for row in found]


_DEFAULTS: dict[str, RivalBank] = {}
_CONTENT_FREE: dict[str, np.ndarray] = {}


def _content_free(encoder) -> np.ndarray:
    with _LOCK:
        found = _CONTENT_FREE.get(encoder.model_key)
    if found is None:
        found = encode_texts(encoder, list(CONTENT_FREE_PROMPTS))
        with _LOCK:
            _CONTENT_FREE[encoder.model_key] = found
    return found


def load_calibration(store, encoder) -> Calibration:
    """The calibration ``encoder``'s model uses on ``store``: fitted if `vidsift calibrate` ran,
    else the model's default (see the module's notes)."""
    bank = load_fitted_bank(store, encoder.spec.table_suffix) if store is not None else None
    if bank is None:
        with _LOCK:
            bank = _DEFAULTS.get(encoder.model_key)
        if bank is None:
            bank = default_bank(encoder)
            with _LOCK:
                _DEFAULTS[encoder.model_key] = bank
    return Calibration(logit_scale=encoder.logit_scale, content_free=_content_free(encoder), bank=bank,
                       model=encoder.model_key)


def calibration_for(db: str, encoder, storage_options: dict | None = None) -> Calibration:
    """The calibration for work outside the archive (`vidsift classify` of any clip): the one fitted
    on the archive at ``db`` when there is one, else the model's default."""
    import os

    store = None
    if "://" in db or os.path.isdir(db):
        from .store import VideoStore

        store = VideoStore(db, storage_options=storage_options)
    return load_calibration(store, encoder)


def is_match(confidence: float | None) -> bool | None:
    return None if confidence is None else bool(confidence > MATCH_THRESHOLD)
