"""Rival descriptions: the phrases a text is weighed against on each segment (``pipeline.confidence``).

Two banks, both without labels from the user:

- the *default* bank, for a bundled model of a closed world (shapes-tiny): the descriptions of its
  world (``models.registry.ClosedWorld``), with their prompt ensembles when a rule asks for them. It
  depends only on the model's weights, so it is embedded once per model and kept in a file cache
  (``BankCache``): a one-shot `vidsift search` would otherwise re-embed it on every run;
- a *fitted* bank (``fit_bank``, `vidsift calibrate`): the words and word pairs that describe the
  most segments of the user's own archive, from the model's vocabulary (stored in the archive by
  ``pipeline.confidence_fit``).
"""
from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .confidence_words import content_words, model_vocabulary, world_descriptions
from .prompt_templates import prompt_ensembles

INFORMATIVE_FRACTION = 0.1     # a word the model moves less than this x the median word is ignored
WORDS_PER_SEGMENT = 3          # each sampled segment is described by its 3 best words
MAX_PHRASES = 2048
BANK_RECIPE = 2                # bump when default_bank's phrases or vectors change: old cache files go stale


@dataclass
class RivalBank:
    """Rival descriptions with their (L2-normalised) embeddings, and where they come from."""

    phrases: list[str]
    vectors: np.ndarray                      # (n, dim) float32
    source: str                              # "fitted", "default" or "none"
    info: dict = field(default_factory=dict)
    ensembles: np.ndarray | None = None      # (n, dim): each phrase's prompt ensemble, when computed
    stems: list[frozenset] = field(init=False)
    _valid: dict = field(init=False, default_factory=dict, repr=False)

    def __post_init__(self):
        self.vectors = np.asarray(self.vectors, dtype=np.float32)
        if self.phrases:
            self.vectors = self.vectors.reshape(len(self.phrases), -1)
        if self.ensembles is not None:
            self.ensembles = np.asarray(self.ensembles, dtype=np.float32).reshape(self.vectors.shape)
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


def no_rivals(dim: int) -> RivalBank:
    """The bank of a model with no rival descriptions: confidence compares with content-free prompts only."""
    return RivalBank([], np.zeros((0, dim)), "none")


def encode_texts(encoder, texts: list[str], batch: int = 256, progress=None) -> np.ndarray:
    """``texts`` embedded in batches, L2-normalised, float32."""
    out = []
    for begin in range(0, len(texts), batch):
        out.append(encoder.encode_texts(texts[begin:begin + batch]))
        if progress:
            progress(min(begin + batch, len(texts)), len(texts))
    if not out:
        return np.zeros((0, encoder.embed_dim), dtype=np.float32)
    vectors = np.concatenate(out).astype(np.float32)
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


def informative_words(encoder, words: list[str], progress=None) -> tuple[list[str], np.ndarray]:
    """The words the model reacts to, with their vectors: a word's embedding must differ from the
    empty text's at least a tenth as much as the median word's (shapes-tiny ignores "background",
    "moving": ~0.01 against ~0.4)."""
    vectors = encode_texts(encoder, list(words), progress=progress)
    if not len(words):
        return [], vectors
    effect = 1.0 - vectors @ encode_texts(encoder, [""])[0]
    keep = effect >= INFORMATIVE_FRACTION * float(np.median(effect))
    return [w for w, ok in zip(words, keep) if ok], vectors[keep]


# ---- the default bank, cached per model ---------------------------------------------------------

def cache_root() -> Path:
    """Where vidsift keeps what it can recompute: ``$VIDSIFT_CACHE_DIR``, else
    ``$XDG_CACHE_HOME/vidsift``, else ``~/.cache/vidsift``."""
    explicit = os.environ.get("VIDSIFT_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "vidsift"


@dataclass(frozen=True)
class BankCache:
    """Default rival banks on disk, one file per (model weights, vocabulary, recipe).

    The key hashes ``spec.key`` (which holds a digest of a checkpoint's or bundled model's weights,
    or the open_clip pretrained tag), the bank's phrases and ``BANK_RECIPE``: new weights, new
    phrases or a new recipe make a new file, never a stale answer. A file that cannot be read, or
    does not hold what its key says, is recomputed and replaced (written to a temporary name, then
    renamed, so a reader never sees half a file)."""

    folder: Path

    @classmethod
    def default(cls) -> "BankCache":
        return cls(cache_root() / "rival-banks")

    def path(self, model_key: str, phrases: list[str], templates: tuple[str, ...] = ()) -> Path:
        key = json.dumps([BANK_RECIPE, model_key, phrases, list(templates)])
        digest = hashlib.sha256(key.encode()).hexdigest()[:24]
        return self.folder / f"{digest}.npz"

    def load(self, path: Path, model_key: str) -> RivalBank | None:
        try:
            with np.load(path, allow_pickle=False) as data:
                info = json.loads(str(data["info"]))
                phrases = [str(p) for p in data["phrases"]]
                vectors = np.asarray(data["vectors"], dtype=np.float32)
                ensembles = np.asarray(data["ensembles"], dtype=np.float32) if "ensembles" in data else None
        except (OSError, KeyError, ValueError, EOFError):
            return None
        if info.get("model") != model_key or len(phrases) != len(vectors) \
                or (ensembles is not None and ensembles.shape != vectors.shape):
            return None
        return RivalBank(phrases, vectors, "default", info, ensembles)

    def save(self, path: Path, bank: RivalBank) -> None:
        """Best effort: a folder that cannot be written only costs the next run the embedding."""
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_suffix(f".{os.getpid()}.partial.npz")
            extra = {} if bank.ensembles is None else {"ensembles": bank.ensembles}
            np.savez(partial, phrases=np.array(bank.phrases, dtype=str), vectors=bank.vectors,
                     info=np.array(json.dumps(bank.info)), **extra)
            os.replace(partial, path)
        except OSError:
            pass


def default_bank(encoder, cache: BankCache | None = None, templates: tuple[str, ...] = ()) -> RivalBank:
    """Without a fitted calibration: the descriptions of a bundled model's closed world (shapes-tiny's
    28 colour-shape phrases), with each phrase's prompt ensemble over ``templates`` when given; read
    from ``cache`` (``BankCache.default()``) when it was embedded before. Nothing for a model that
    reads English (its world cannot be listed: `vidsift calibrate` fits rivals on the archive)."""
    world = world_descriptions(encoder.spec)
    if world is None:
        return no_rivals(encoder.embed_dim)
    phrases, origin = world
    cache = cache or BankCache.default()
    path = cache.path(encoder.model_key, phrases, tuple(templates))
    found = cache.load(path, encoder.model_key)
    if found is not None:
        return found
    bank = RivalBank(phrases, encode_texts(encoder, phrases), "default",
                     {"vocabulary": origin, "model": encoder.model_key},
                     prompt_ensembles(encoder, phrases, templates) if templates else None)
    cache.save(path, bank)
    return bank


# ---- a bank fitted on an archive ---------------------------------------------------------------

def fit_bank(encoder, segment_vectors: np.ndarray, words: list[str] | None = None,
             words_per_segment: int = WORDS_PER_SEGMENT, max_phrases: int = MAX_PHRASES,
             progress=None, pairs: bool = True) -> RivalBank:
    """Rival phrases describing these segments, from the model's vocabulary, without labels: each
    segment's ``words_per_segment`` best words (scores centred on the segments' mean, so what sets
    a segment apart counts), and the words and ordered pairs of words describing the most segments.
    With ``pairs=False`` the ``words`` are whole descriptions (a closed world's), kept as they are."""
    origin = "the given words"
    if words is None:
        words, origin = model_vocabulary(encoder.spec)
    words, vectors = informative_words(encoder, list(words), progress=progress)
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
                if pairs:
                    counts.update((a, b) for a in chosen for b in chosen if a != b)
    phrases = [" ".join(p) for p, _ in counts.most_common(max_phrases)]
    return RivalBank(phrases, encode_texts(encoder, phrases), "fitted",
                     {"vocabulary": origin, "candidates": len(words), "segments_sampled": int(len(x))})
