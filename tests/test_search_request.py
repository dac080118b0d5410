"""``pipeline.search_request``: the one check of a search's query, k and filters, shared by
`vidsift search` and the app (``app.service``). Pure functions: no model, no server."""
from __future__ import annotations

import math

import pytest

from vidsift.pipeline.errors import InputError
from vidsift.pipeline.search_request import (
    EMPTY_QUERY, MAX_K, SearchFilters, check_filters, check_k, clean_tags, search_request,
)


def test_a_request_is_stripped_and_typed():
    request = search_request("  a red circle ", "7", per_video=1)
    assert (request.text, request.k, request.per_video, request.where, request.by_text) == \
        ("a red circle", 7, True, None, True)
    assert check_k(12.0, 100) == 12  # the app's slider sends floats
    by_example = search_request("whatever was typed", 3, by_example=True)
    assert by_example.text is None and not by_example.by_text


@pytest.mark.parametrize("text", ["", "   ", None])
def test_an_empty_query_is_refused_unless_searching_by_example(text):
    with pytest.raises(InputError, match="query is empty"):
        search_request(text)
    assert search_request(text, by_example=True).text is None
    assert EMPTY_QUERY.startswith("The search query is empty")


@pytest.mark.parametrize("k", [0, -1, 101, 2.5, "x", None, math.nan, math.inf, True])
def test_a_bad_k_names_the_value_and_the_limit(k):
    with pytest.raises(InputError, match="between 1 and 100") as raised:
        check_k(k, 100)
    assert str(raised.value).endswith(f"got {k!r}")
    with pytest.raises(InputError, match=f"between 1 and {MAX_K}"):
        search_request("x", MAX_K + 1)


def test_a_bad_filter_is_refused_before_any_search():
    assert search_request("x", where="path LIKE '%a%'").where == "path LIKE '%a%'"  # as typed: the store wraps it
    for garbage in ("1=1; DROP TABLE x", "(path = 'a'", "path = 'unterminated"):
        with pytest.raises(InputError, match=r"^Bad filter "):
            search_request("x", where=garbage)


def test_the_apps_filters_are_checked_and_become_escaped_sql():
    assert clean_tags([" a ", "", "b", "a"]) == ("a", "b")
    with pytest.raises(InputError, match="At most 32 tags"):
        clean_tags([str(i) for i in range(33)])
    filters = check_filters(["it's", " "], " /sub/ ", 0, None)
    assert filters == SearchFilters(("it's",), "/sub/", 0.0, 0.0)
    where, possible = filters.where(lambda columns: pytest.fail("no duration filter: no read"))
    assert possible and where == "array_has(tags, 'it''s') AND strpos(path, '/sub/') > 0"
    assert check_filters().where(lambda columns: []) == (None, True)
    with pytest.raises(InputError, match="above the maximum"):
        check_filters(min_duration=5, max_duration=2)
    with pytest.raises(InputError, match="positive"):
        check_filters(min_duration=-1)


def test_a_duration_filter_keeps_the_videos_in_range():
    rows = [{"video_id": "short", "duration": 2.0}, {"video_id": "long", "duration": 6.0}]
    where, possible = check_filters(min_duration=5).where(lambda columns: rows)
    assert possible and where == "video_id IN ('long')"
    assert check_filters(max_duration=1).where(lambda columns: rows) == (None, False)
