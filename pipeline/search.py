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


def format_timestamp(seconds: float) -> str:
    """m:ss.ss, how results show a moment's bounds."""
    minutes, secs = divmod(float(seconds), 60)
    return f"{int(minutes)}:{secs:05.2f}"


def require_indexed(store: VideoStore, spec) -> None:
    """Refuse to search a model that has no vectors, naming those that do."""
    keys = [m["model"] for m in store.models()]
    if spec.key not in keys:
        known = ", ".join(keys) if keys else "none (run `vidsift index` first)"
        raise InputError(f"Nothing is indexed in {store.uri} with model {spec.key}. Indexed models: {known}")


def merge_scene_pieces(rows: list[dict]) -> list[dict]:
    """Fold hits that are pieces of one scene (a long scene split at ``max_scene_s``) into one hit
    spanning them, with the best score; rows come best first and stay in that order."""
    kept: list[dict] = []
    for row in rows:
        for hit in kept:
            if hit["video_id"] != row["video_id"]:
                continue
            joins_after = row["segment_index"] == hit["last_index"] + 1 and not row["starts_scene"]
            joins_before = row["segment_index"] == hit["first_index"] - 1 and not hit["first_starts_scene"]
            if joins_after or joins_before:
                hit["start"], hit["end"] = min(hit["start"], row["start"]), max(hit["end"], row["end"])
                hit["n_frames"] += row["n_frames"]
                if joins_after:
                    hit["last_index"] = row["segment_index"]
                else:
                    hit["first_index"], hit["first_starts_scene"] = row["segment_index"], row["starts_scene"]
                break
        else:
            kept.append({**row, "first_index": row["segment_index"], "last_index": row["segment_index"],
                         "first_starts_scene": row["starts_scene"]})
    return kept


POOLINGS = ("mean", "qs")
QS_TEMPERATURE = 0.05


def query_scored(store: VideoStore, suffix: str, vector: np.ndarray, rows: list[dict],
                 temperature: float = QS_TEMPERATURE) -> list[dict]:
    """Re-score candidate segments by query-scored pooling (Bain et al., "A CLIP-Hitchhiker's guide
    to long video retrieval"): the segment vector is the softmax(q.f / T)-weighted mean of its frame
    vectors, so frames that match the query dominate. Uses the stored frames; segments without
    stored frames keep their mean-pooled score. Returns rows re-sorted best first."""
    frames: dict[str, list[dict]] = {}
    for row in store.frame_rows(suffix, sorted({r["video_id"] for r in rows}), ["video_id", "time", "vector"]):
        frames.setdefault(row["video_id"], []).append(row)
    query = vector / max(np.linalg.norm(vector), 1e-12)
    for row in rows:
        inside = [f["vector"] for f in frames.get(row["video_id"], [])
                  if row["start"] - 1e-6 <= f["time"] < row["end"] - 1e-6]
        if not inside:
            continue
        f = np.asarray(inside, dtype=np.float32)
        sims = f @ query
        weights = np.exp((sims - sims.max()) / temperature)
        pooled = (weights[:, None] * f).sum(axis=0)
        row["score"] = float(pooled @ query / max(np.linalg.norm(pooled), 1e-12))
    return sorted(rows, key=lambda r: -r["score"])


def search_vector(store: VideoStore, suffix: str, vector: np.ndarray, k: int = 10, per_video: bool = False,
                  where: str | None = None, exact: bool = False, pooling: str = "mean",
                  thumbnails: bool = True) -> list[SearchHit]:
    """Top-k moments for a query vector, best first; with ``per_video`` only each video's best.

    Pieces of one scene are merged into one moment; we over-fetch and widen until k moments are
    found or the table is exhausted. ``pooling="qs"`` re-ranks the mean-pooled candidates with
    query-scored pooling of their frames. With ``thumbnails=False`` no thumbnail is read (hits
    carry ``b""``): the CLI without ``--thumbnails`` and evaluation need none.
    """
    if not isinstance(k, int) or not 1 <= k <= MAX_K:
        raise InputError(f"k must be an integer between 1 and {MAX_K}, got {k!r}")
    if pooling not in POOLINGS:
        raise InputError(f"pooling must be one of {', '.join(POOLINGS)}, got {pooling!r}")
    fetch = k * (8 if per_video else 2) * (4 if pooling == "qs" else 1)
    while True:
        try:
            rows = store.search_segments(suffix, vector, fetch, where=where, exact=exact, thumbnails=thumbnails)
        except Exception as exc:
            if where:
                raise InputError(f"Bad filter {where!r}: {str(exc).splitlines()[0][:200]}") from None
            raise
        if pooling == "qs":
            rows = query_scored(store, suffix, vector, rows)
        hits = merge_scene_pieces(rows)
        if per_video:
            best: dict[str, dict] = {}
            for hit in hits:
                best.setdefault(hit["video_id"], hit)
            hits = list(best.values())
        if len(hits) >= k or len(rows) < fetch:
            break
        fetch *= 4
    return [SearchHit(rank=i + 1, score=round(float(r["score"]), 6), path=r["path"], start=float(r["start"]),
                      end=float(r["end"]), video_id=r["video_id"], segment_index=int(r["first_index"]),
                      n_frames=int(r["n_frames"]), tags=list(r["tags"] or []), thumbnail=r.get("thumbnail") or b"")
            for i, r in enumerate(hits[:k])]


def search_text(store: VideoStore, encoder, query: str, k: int = 10, per_video: bool = False,
                where: str | None = None, exact: bool = False, pooling: str = "mean",
                thumbnails: bool = True) -> list[SearchHit]:
    query = (query or "").strip()
    if not query:
        raise InputError("The search query is empty: describe what you are looking for.")
    require_indexed(store, encoder.spec)
    vector = encoder.encode_texts([query])[0]
    return search_vector(store, encoder.spec.table_suffix, vector, k=k, per_video=per_video, where=where,
                         exact=exact, pooling=pooling, thumbnails=thumbnails)
