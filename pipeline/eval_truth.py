"""What every evaluation figure is counted against: a labelled archive's ground truth and tallies.

Ground truth is a list of videos, each ``{"abspath", "scenes": [{"label", "start", "end"}, ...]}``
(a shapes-world manifest read by ``pipeline.shapes.manifest.load_manifest`` has this form). The
label set and the splits figures are reported in come from the caller as a ``Vocabulary``: the
product measures any labelled archive and knows nothing of how one was made.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from .search import search_vector
from .sql_filters import sql_in
from .store import VideoStore


@dataclass(frozen=True)
class Vocabulary:
    """The labels zero-shot classification chooses from, and the split each label is counted in.

    ``splits`` names every split in report order: each appears in a report even when empty, so a
    report's keys do not depend on which labels an archive happens to show.
    """

    labels: tuple[str, ...]
    splits: tuple[str, ...]
    split_of: Callable[[str], str]


@dataclass
class Tally:
    hits: int = 0
    total: int = 0

    def add(self, ok: bool) -> None:
        self.hits += int(ok)
        self.total += 1

    @property
    def rate(self) -> float | None:
        return self.hits / self.total if self.total else None

    def to_dict(self) -> dict:
        return {"rate": None if self.rate is None else round(self.rate, 4), "hits": self.hits, "n": self.total}


@dataclass
class SplitTally:
    """One ``Tally`` per split of a vocabulary; ``add`` counts a label in its own split."""

    vocab: Vocabulary
    tallies: dict[str, Tally] = field(init=False)

    def __post_init__(self) -> None:
        self.tallies = {split: Tally() for split in self.vocab.splits}

    def add(self, label: str, ok: bool) -> None:
        self.tallies[self.vocab.split_of(label)].add(ok)

    def to_dict(self) -> dict:
        return {split: tally.to_dict() for split, tally in self.tallies.items()}


def labels_of(video: dict) -> set[str]:
    return {scene["label"] for scene in video["scenes"]}


def overlap(a0: float, a1: float, b0: float, b1: float) -> float:
    """Seconds that [a0, a1] and [b0, b1] share."""
    return max(0.0, min(a1, b1) - max(a0, b0))


def iou(a0: float, a1: float, b0: float, b1: float) -> float:
    inter = overlap(a0, a1, b0, b1)
    union = max(a1, b1) - min(a0, b0)
    return inter / union if union > 0 else 0.0


def shows(video: dict, label: str, start: float, end: float) -> bool:
    """The scene overlapping [start, end] the most is one of ``label``."""
    best = max(video["scenes"], key=lambda s: overlap(start, end, s["start"], s["end"]), default=None)
    return best is not None and best["label"] == label and overlap(start, end, best["start"], best["end"]) > 0


def id_filter(ids) -> str:
    """The store filter that keeps the given videos (searches are restricted to the evaluated set)."""
    return sql_in("video_id", sorted(ids))


def indexed_rows(store: VideoStore, suffix: str, columns=("video_id", "path")) -> dict[str, dict]:
    """The model's video rows by path (ground truth names videos by path, the store by id)."""
    return {r["path"]: r for r in store.model_by_suffix(suffix).video_rows(list(columns))}


@dataclass(frozen=True)
class Scope:
    """The videos of a ground truth that are indexed in one store with one model.

    Every figure searches only these videos, exhaustively (``exact``: an approximate index would
    make the figures depend on its state), without thumbnails.
    """

    store: VideoStore
    suffix: str
    truth: dict[str, dict]  # video_id -> the video's ground truth
    pooling: str = "mean"

    @classmethod
    def of(cls, store: VideoStore, encoder, videos: list[dict], pooling: str = "mean",
           rows: dict[str, dict] | None = None) -> "Scope":
        suffix = encoder.spec.table_suffix
        rows = indexed_rows(store, suffix) if rows is None else rows
        return cls(store, suffix, {rows[v["abspath"]]["video_id"]: v for v in videos if v["abspath"] in rows},
                   pooling)

    @property
    def tables(self):
        """This model's tables in the store (``pipeline.model_store.ModelTables``)."""
        return self.store.model_by_suffix(self.suffix)

    @property
    def where(self) -> str:
        return id_filter(self.truth)

    def search(self, vector: np.ndarray, k: int, where: str | None = None, **options) -> list:
        """Top-``k`` moments among these videos (or those ``where`` selects)."""
        return search_vector(self.store, self.suffix, vector, k=k, where=where or self.where, exact=True,
                             pooling=self.pooling, thumbnails=False, **options)
