"""Text (or vector) -> best-matching segments, best first, each with a calibrated confidence that
it shows what the text describes (``pipeline.confidence``)."""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .config import IndexConfig
from .errors import InputError, VideoError
from .segments import mean_pool
from .search_request import check_k, search_request
from .sql_filters import sql_in

if TYPE_CHECKING:  # the store (pyarrow, LanceDB) loads with the first search, not with this module:
    from .model_store import ModelTables  # a bad example file is refused before either loads
    from .store import VideoStore



@dataclass
class SearchHit:
    """One search result: a moment of a video (one segment, or pieces of one scene merged). The
    CLI's ``--json`` and the app's /search both serialise it with ``to_dict``."""

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
    confidence: float | None = None  # how likely the segment shows the query (text queries only)
    match: bool | None = None        # confidence > 0.5

    @classmethod
    def from_row(cls, row: dict, rank: int, score: float | None = None,
                 confidence: float | None = None) -> SearchHit:
        """The one place a segment row (a catalog row from ``ModelTables.search_segments``, maybe
        merged by ``merge_scene_pieces``) becomes a hit. ``score`` and ``confidence`` default to
        the row's; a merged row's ``first_index`` is its segment index."""
        from .confidence import is_match  # lazy: pipeline.confidence imports this module (require_indexed)

        score = row["score"] if score is None else score
        confidence = row.get("confidence") if confidence is None else confidence
        return cls(rank=rank, score=round(float(score), 6), path=row["path"], start=float(row["start"]),
                   end=float(row["end"]), video_id=row["video_id"],
                   segment_index=int(row.get("first_index", row["segment_index"])), n_frames=int(row["n_frames"]),
                   tags=list(row["tags"] or []), thumbnail=row.get("thumbnail") or b"",
                   confidence=None if confidence is None else round(float(confidence), 4),
                   match=is_match(confidence))

    def to_dict(self, with_thumbnail: bool = False) -> dict:
        """The hit's fields, as ``vidsift search --json`` prints them and the app's ``/search`` sends
        them (there through ``app.app_client.to_wire``); the thumbnail only when asked."""
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


def query_scored(tables: ModelTables, vector: np.ndarray, rows: list[dict],
                 temperature: float = QS_TEMPERATURE) -> list[dict]:
    """Re-score candidate segments by query-scored pooling (Bain et al., "A CLIP-Hitchhiker's guide
    to long video retrieval"): the segment vector is the softmax(q.f / T)-weighted mean of its frame
    vectors, so frames that match the query dominate. Uses the stored frames; segments without
    stored frames keep their mean-pooled score. Returns rows re-sorted best first."""
    frames = tables.frames_by_video(sorted({r["video_id"] for r in rows}))
    query = vector / max(np.linalg.norm(vector), 1e-12)
    for row in rows:
        video = frames.get(row["video_id"])
        f = video.vectors_between(row["start"], row["end"]) if video is not None else None
        if f is None or not len(f):
            continue
        sims = f @ query
        weights = np.exp((sims - sims.max()) / temperature)
        pooled = (weights[:, None] * f).sum(axis=0)
        row["score"] = float(pooled @ query / max(np.linalg.norm(pooled), 1e-12))
    return sorted(rows, key=lambda r: -r["score"])


def segment_vectors(store: VideoStore, suffix: str, keys: list[tuple[str, int]]) -> dict[tuple[str, int], np.ndarray]:
    """The stored (mean-pooled) vectors of segments by (video id, segment index), read through the
    video_id B-tree that comes with the ANN index (a few milliseconds for a page of hits)."""
    table = store.model_by_suffix(suffix).segments()
    wanted = set(keys)
    if table is None or not wanted:
        return {}
    data = (table.search().where(sql_in("video_id", sorted({vid for vid, _ in wanted})))
            .select(["video_id", "segment_index", "vector"]).limit(None).to_arrow())
    vectors = np.asarray(data.column("vector").combine_chunks().flatten().to_numpy(zero_copy_only=False),
                         dtype=np.float32).reshape(data.num_rows, -1)
    return {(vid, int(index)): vectors[i] for i, (vid, index) in
            enumerate(zip(data.column("video_id").to_pylist(), data.column("segment_index").to_pylist()))
            if (vid, int(index)) in wanted}


def attach_confidence(store: VideoStore, suffix: str, hits: list[dict], text: str, vector: np.ndarray,
                      calibration) -> None:
    """Set ``confidence`` on each hit for the query ``text``: that of its best-scoring segment (a hit
    merged from pieces of one scene keeps the best piece's row). The vectors come with the hits when
    the store returns them, else from one read by video id."""
    missing = [(h["video_id"], int(h["segment_index"])) for h in hits if h.get("vector") is None]
    found = segment_vectors(store, suffix, missing) if missing else {}
    vectors = [h["vector"] if h.get("vector") is not None else found.get((h["video_id"], int(h["segment_index"])))
               for h in hits]
    present = [i for i, v in enumerate(vectors) if v is not None]
    scores = calibration.confidences(text, vector, np.stack([np.asarray(vectors[i], dtype=np.float32)
                                                             for i in present])) if present else []
    for hit in hits:
        hit["confidence"] = None
    for i, score in zip(present, scores):
        hits[i]["confidence"] = float(score)


def search_vector(store: VideoStore, suffix: str, vector: np.ndarray, k: int = 10, per_video: bool = False,
                  where: str | None = None, exact: bool = False, pooling: str = "mean",
                  thumbnails: bool = True, text: str | None = None, calibration=None) -> list[SearchHit]:
    """Top-k moments for a query vector, best first; with ``per_video`` only each video's best.

    Pieces of one scene are merged into one moment; we over-fetch and widen until k moments are
    found or the table is exhausted. ``pooling="qs"`` re-ranks the mean-pooled candidates with
    query-scored pooling of their frames. With ``thumbnails=False`` no thumbnail is read (hits
    carry ``b""``): the CLI without ``--thumbnails`` and evaluation need none. With the query's
    ``text`` and a ``calibration`` (``pipeline.confidence.load_calibration``), each hit carries its
    ``confidence`` and ``match``; without them both are None (a search by example image).
    """
    k = check_k(k)
    if pooling not in POOLINGS:
        raise InputError(f"pooling must be one of {', '.join(POOLINGS)}, got {pooling!r}")
    fetch = k * (8 if per_video else 2) * (4 if pooling == "qs" else 1)
    tables = store.model_by_suffix(suffix)
    with_vectors = text is not None and calibration is not None  # confidence scores the hits' vectors
    while True:
        try:
            rows = tables.search_segments(vector, fetch, where=where, exact=exact, thumbnails=thumbnails,
                                          vectors=with_vectors)
        except Exception as exc:
            if where:
                raise InputError(f"Bad filter {where!r}: {str(exc).splitlines()[0][:200]}") from None
            raise
        if pooling == "qs":
            rows = query_scored(tables, vector, rows)
        hits = merge_scene_pieces(rows)
        if per_video:
            best: dict[str, dict] = {}
            for hit in hits:
                best.setdefault(hit["video_id"], hit)
            hits = list(best.values())
        if len(hits) >= k or len(rows) < fetch:
            break
        fetch *= 4
    hits = hits[:k]
    if text is not None and calibration is not None and hits:
        attach_confidence(store, suffix, hits, text, vector, calibration)
    return [SearchHit.from_row(row, rank=i + 1) for i, row in enumerate(hits)]


def search_text(store: VideoStore, encoder, query: str, k: int = 10, per_video: bool = False,
                where: str | None = None, exact: bool = False, pooling: str = "mean",
                thumbnails: bool = True, calibration=None, confidence: bool = True) -> list[SearchHit]:
    """Search by text. Hits carry ``confidence``/``match`` (``calibration``: the model's, loaded
    here when not given; ``confidence=False`` skips them)."""
    query = search_request(query, k).text
    require_indexed(store, encoder.spec)
    vector = encoder.encode_texts([query])[0]
    if confidence and calibration is None:
        from .confidence import load_calibration  # lazy: pipeline.confidence imports this module

        calibration = load_calibration(store, encoder)
    return search_vector(store, encoder.spec.table_suffix, vector, k=k, per_video=per_video, where=where,
                         exact=exact, pooling=pooling, thumbnails=thumbnails, text=query if confidence else None,
                         calibration=calibration if confidence else None)


# ---- search by example (an image or a clip) -----------------------------------------------------
# The app and the CLI search by example through these: an image is embedded exactly as an indexed
# frame (``FrameTransform`` + ``encode_pixels``), a clip exactly as an indexed video is
# (``embed_video``), then mean-pooled as a one-segment video. Its hits carry no confidence: the
# calibration (``pipeline.confidence``) weighs a *text* against rival descriptions, and an example
# has no words to weigh.

def read_image(path: str) -> np.ndarray:
    """An example image file as uint8 RGB (H, W, 3). A missing or undecodable file is one
    ``VideoError`` line naming it (the same shape as a bad ``--clip``'s), found before any model loads."""
    from PIL import Image, UnidentifiedImageError  # lazy: only a search by image reads one

    if not os.path.exists(path):
        raise VideoError(path, "open", "file does not exist")
    if not os.path.isfile(path):
        raise VideoError(path, "open", "not a regular file")
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except UnidentifiedImageError:
        raise VideoError(path, "open", "not an image (no image format recognised)") from None
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise VideoError(path, "open", f"the image does not decode: {str(exc).splitlines()[0][:200]}") from None


def image_vector(encoder, pixels) -> np.ndarray:
    """The vector of one example image (uint8 grey, RGB or RGBA array), embedded as an indexed frame."""
    from .frames import FrameTransform  # lazy: PIL, only for a search by image

    pixels = np.asarray(pixels)
    if pixels.ndim == 2:
        pixels = np.repeat(pixels[..., None], 3, axis=2)
    if pixels.ndim != 3 or pixels.shape[2] not in (3, 4) or min(pixels.shape[:2]) < 2:
        raise InputError(f"The example image has an unusable shape {pixels.shape}.")
    pixels = np.ascontiguousarray(pixels[..., :3].astype(np.uint8))
    squares, _ = FrameTransform.from_preprocess_cfg(encoder.preprocess_cfg)(pixels[None])
    return encoder.encode_pixels(squares)[0]


def check_clip(path: str) -> None:
    """Refuse a clip that is missing or no video (``VideoError``, one line naming it), cheaply:
    before the model loads."""
    from .decode import open_video, probe  # lazy: the decoders load only for a search by clip

    probe(open_video(path), path)


def clip_vector(encoder, path: str, config=None) -> np.ndarray:
    """A clip's pooled vector: its frames sampled and embedded as indexing does (``config``: an
    ``IndexConfig``, 1 frame/s by default), mean-pooled as a one-segment video."""
    from .indexing import embed_video  # lazy: decoding and writing modules (~1 s), only for a search by clip

    embedded = embed_video(path, encoder, config or IndexConfig())
    if len(embedded.vectors) == 0:
        raise VideoError(path, "decode", "no frame of the clip decoded")
    return mean_pool(np.asarray(embedded.vectors, dtype=np.float32))


# ---- what `vidsift search` prints ---------------------------------------------------------------

def visible_hits(hits: list[SearchHit], matches_only: bool = False) -> list[SearchHit]:
    """The hits shown: all of them, or (``--matches-only``) those that match."""
    return [h for h in hits if h.match] if matches_only else list(hits)


def search_report(query: str | None, model_key: str, hits: list[SearchHit], calibration=None,
                  matches_only: bool = False, thumbnail_dir: str | None = None,
                  example: dict | None = None) -> tuple[dict, str]:
    """`vidsift search`'s output: the ``--json`` payload and the human text.

    JSON: ``query``, ``model``, ``results`` (each hit's fields, with ``match`` and ``confidence``;
    ``thumbnail_file`` when ``thumbnail_dir`` is given), ``matches`` (results with match true) and
    ``calibration`` (where the confidence comes from). Human: one line per result, marked ``match``
    or ``weak``; when nothing matches, a first line ``no match for "<query>"`` and the closest
    segments, weak (``matches_only`` drops every weak result); a last line says when the
    calibration is not one fitted on this archive.

    A search by example (``example``: ``{"kind": "image"|"clip", "path": ...}``, added to the JSON)
    has the same fields with ``query`` null, and ``matches``, ``calibration`` and each result's
    ``confidence``/``match`` null: nothing says whether a segment "is" an example, only how close it is.
    """
    shown = visible_hits(hits, matches_only)
    results = [hit.to_dict() for hit in shown]
    if thumbnail_dir:
        folder = Path(thumbnail_dir)
        folder.mkdir(parents=True, exist_ok=True)
        for hit, row in zip(shown, results):
            target = folder / f"{hit.rank:03d}_{hit.video_id[:12]}_{hit.segment_index:05d}.jpg"
            target.write_bytes(hit.thumbnail)
            row["thumbnail_file"] = str(target)
    described = calibration.describe() if calibration is not None else None
    payload = {"query": query, "model": model_key, "results": results,
               "matches": sum(1 for h in shown if h.match), "calibration": described}
    if example is not None:
        payload.update(query=None, example=dict(example), matches=None, calibration=None)
    return payload, format_search(query or "", hits, described, matches_only)


def format_search(query: str, hits: list[SearchHit], calibration: dict | None = None,
                  matches_only: bool = False) -> str:
    """The human text of a search (see ``search_report``)."""
    if not hits:
        return "no results"
    lines = []
    any_match = any(h.match for h in hits)
    if not any_match and any(h.match is not None for h in hits):
        lines.append(f'no match for "{query}"' + ("" if matches_only else "; the closest segments (weak):"))
    for h in visible_hits(hits, matches_only):
        mark = "" if h.match is None else ("  match" if h.match else "  weak ")
        conf = "" if h.confidence is None else f"  {100 * h.confidence:5.1f}%"
        lines.append(f"{h.rank:>3}  {h.score:+.4f}{conf}{mark}  {format_timestamp(h.start)}-{format_timestamp(h.end)}"
                     f"  {h.path}")
    if calibration and calibration["source"] != "fitted":
        lines.append(f"confidence calibration: {calibration['note']}")
    return "\n".join(lines)
