"""Text (or vector) -> best-matching segments, best first."""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from .errors import InputError
from .store import VideoStore

MAX_K = 10_000


@dataclass
class SearchHit:
    rank: int
    score: float
    path: str
    start: float
    end: float
    video_id: str
    segment_index: int
    n_frames: int
    tags: list[str]
    thumbnail: bytes

    def to_dict(self, with_thumbnail: bool = False) -> dict:
        out = asdict(self)
        if not with_thumbnail:
            out.pop("thumbnail")
        return out


def require_indexed(store: VideoStore, spec) -> None:
    """Refuse to search a model that has no vectors, naming those that do."""
    keys = [m["model"] for m in store.models()]
    if spec.key not in keys:
        known = ", ".join(keys) if keys else "none (run `vidsift index` first)"
        raise InputError(f"Nothing is indexed in {store.uri} with model {spec.key}. Indexed models: {known}")


def search_vector(store: VideoStore, suffix: str, vector: np.ndarray, k: int = 10, per_video: bool = False,
                  where: str | None = None, exact: bool = False) -> list[SearchHit]:
    """Top-k segments for a query vector; with ``per_video`` only each video's best segment.

    Per video, we over-fetch and widen until k distinct videos are found or the table is exhausted.
    """
    if not isinstance(k, int) or not 1 <= k <= MAX_K:
        raise InputError(f"k must be an integer between 1 and {MAX_K}, got {k!r}")
    fetch = k * 8 if per_video else k
    while True:
        try:
            rows = store.search_segments(suffix, vector, fetch, where=where, exact=exact)
        except Exception as exc:
            if where:
                raise InputError(f"Bad filter {where!r}: {str(exc).splitlines()[0][:200]}") from None
            raise
        if per_video:
            best: dict[str, dict] = {}
            for row in rows:
                best.setdefault(row["video_id"], row)
            picked = list(best.values())[:k]
            if len(picked) >= k or len(rows) < fetch:
                rows = picked
                break
            fetch *= 4
        else:
            break
    return [SearchHit(rank=i + 1, score=round(float(r["score"]), 6), path=r["path"], start=float(r["start"]),
                      end=float(r["end"]), video_id=r["video_id"], segment_index=int(r["segment_index"]),
                      n_frames=int(r["n_frames"]), tags=list(r["tags"] or []), thumbnail=r["thumbnail"])
            for i, r in enumerate(rows)]


def search_text(store: VideoStore, encoder, query: str, k: int = 10, per_video: bool = False,
                where: str | None = None, exact: bool = False) -> list[SearchHit]:
    query = (query or "").strip()
    if not query:
        raise InputError("The search query is empty: describe what you are looking for.")
    require_indexed(store, encoder.spec)
    vector = encoder.encode_texts([query])[0]
    return search_vector(store, encoder.spec.table_suffix, vector, k=k, per_video=per_video, where=where,
                         exact=exact)
