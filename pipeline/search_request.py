"""One search, checked once: the query, how many results, and the filters, for the CLI and the app alike.

`vidsift search`, the app's ``/search`` and ``pipeline.search.search_vector`` used to check the
query, k and the filter each in their own words. They now build a ``SearchRequest`` through
``search_request`` (or ``check_k`` alone), so a bad value gets the same message whichever way it
came. Messages name the bad value, never a command-line flag: flags belong to ``app/``.

Standard library only (``pipeline.sql_filters`` included): `vidsift search` builds its request
before deciding whether a running app answers it, and must not load pyarrow or LanceDB to do so.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from .errors import InputError
from .sql_filters import check_filter, sql_in, sql_str

MAX_K = 10_000  # the most results one search returns (the app's own limit, ``AppConfig.max_k``, is lower)
MAX_TAGS, MAX_TAG_CHARS = 32, 200

EMPTY_QUERY = "The search query is empty: describe what you are looking for."


@dataclass(frozen=True)
class SearchFilters:
    """The app's filters on whole videos: every tag, a folder (or any part of the path), a duration
    range in seconds (0: no limit). Checked by ``search_request``; ``where`` turns them into SQL."""

    tags: tuple[str, ...] = ()
    folder: str = ""
    min_duration: float = 0.0
    max_duration: float = 0.0

    @property
    def by_duration(self) -> bool:
        return bool(self.min_duration or self.max_duration)

    def where(self, video_rows) -> tuple[str | None, bool]:
        """The LanceDB SQL filter of these filters, and whether anything can match them.
        ``video_rows(columns)``: the searched model's videos (read only for a duration filter)."""
        clauses = [f"array_has(tags, {sql_str(tag)})" for tag in self.tags]
        if self.folder:
            clauses.append(f"strpos(path, {sql_str(self.folder)}) > 0")
        if self.by_duration:
            low, high = self.min_duration, self.max_duration
            ids = [r["video_id"] for r in video_rows(["video_id", "duration"])
                   if r["duration"] >= low and (not high or r["duration"] <= high)]
            if not ids:
                return None, False
            clauses.append(sql_in("video_id", ids))
        return " AND ".join(clauses) or None, True


@dataclass(frozen=True)
class SearchRequest:
    """A checked search: ``text`` (stripped; None for a search by example), ``k`` results,
    ``per_video`` (each video's best only) and ``where`` (a user's SQL filter, made safe). The
    app's filters on whole videos are a ``SearchFilters`` beside it."""

    text: str | None
    k: int = 10
    per_video: bool = False
    where: str | None = None

    @property
    def by_text(self) -> bool:
        return self.text is not None


def check_k(k, max_k: int = MAX_K) -> int:
    """``k`` as a whole number between 1 and ``max_k`` (a whole float or numeric text is accepted:
    the app's slider sends 12.0), or ``InputError`` naming the value."""
    try:
        number = int(k) if not isinstance(k, bool) and float(k) == int(float(k)) else None
    except (TypeError, ValueError, OverflowError):
        number = None
    if number is None or not 1 <= number <= max_k:
        raise InputError(f"k must be a whole number between 1 and {max_k} (how many results), got {k!r}")
    return number


def check_where(where: str) -> str:
    """A user's SQL filter as typed, once ``pipeline.sql_filters.check_filter`` finds nothing wrong
    with it that can be told without the table (else ``InputError`` naming it), before any model
    loads. The store wraps it when it runs it, and messages show it as the user typed it."""
    try:
        check_filter(where)
    except InputError as exc:
        raise InputError(f"Bad filter {where!r}: {exc}") from None
    return where


def clean_tags(tags) -> tuple[str, ...]:
    """Tags as stored and searched: stripped, blank ones dropped, each once, in order; at most
    ``MAX_TAGS`` of at most ``MAX_TAG_CHARS`` characters (``InputError``)."""
    cleaned = tuple(dict.fromkeys(str(t).strip() for t in (tags or []) if str(t).strip()))
    if len(cleaned) > MAX_TAGS or any(len(t) > MAX_TAG_CHARS for t in cleaned):
        raise InputError(f"At most {MAX_TAGS} tags of at most {MAX_TAG_CHARS} characters each.")
    return cleaned


def check_filters(tags=(), folder: str = "", min_duration=0, max_duration=0) -> SearchFilters:
    """The app's filters cleaned (blank tags dropped, text stripped) and checked."""
    cleaned = clean_tags(tags)
    try:
        low, high = float(min_duration or 0), float(max_duration or 0)
    except (TypeError, ValueError):
        raise InputError(f"Durations are numbers of seconds, got {min_duration!r} and {max_duration!r}.") from None
    if not (math.isfinite(low) and math.isfinite(high)) or low < 0 or high < 0:
        raise InputError("Durations must be positive (0 = no limit).")
    if high and low > high:
        raise InputError(f"The minimum duration ({low:g} s) is above the maximum ({high:g} s).")
    return SearchFilters(cleaned, (folder or "").strip(), low, high)


def search_request(text: str | None, k=10, *, per_video: bool = False, where: str | None = None,
                   by_example: bool = False, max_k: int = MAX_K) -> SearchRequest:
    """The one check of a search: a query that says something (unless it searches by example, when
    the text is ignored), ``k`` within ``max_k``, a filter LanceDB will read whole."""
    query = None if by_example else (text or "").strip()
    if query == "":
        raise InputError(EMPTY_QUERY)
    return SearchRequest(text=query, k=check_k(k, max_k), per_video=bool(per_video),
                         where=None if where is None else check_where(where))
