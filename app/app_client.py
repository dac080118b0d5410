"""Ask a running `vidsift app` for a text search, with the standard library only.

A one-shot `vidsift search` spends seconds importing torch, open_clip and LanceDB and loading the
model before a search of milliseconds; an app serving the same database has all of it loaded. This
is Gradio's plain HTTP API (``POST /gradio_api/call/search`` returns an event id, ``GET
/gradio_api/call/search/<id>`` streams server-sent events until ``event: complete`` with the
outputs as a JSON array), spoken with ``urllib`` so the CLI imports neither gradio_client nor httpx.

Any failure (refused connection, timeout, an ``error`` event, an answer of the wrong shape) is an
``AppUnavailable``: the caller then searches in its own process.

The app's ``/search`` answers with the CLI's ``--json`` (``pipeline.search.search_report``) with
one name changed on the way, by ``to_wire`` here and back by ``from_wire``: a hit's ``path``
travels as ``video_path``. gradio_client (2.x, whose servers speak the ``sse_v3`` protocol) takes
every JSON dict with a string ``"path"`` for a file of the server and downloads it
(``gradio_client.utils.is_file_obj``), which the app refuses (videos are not served by path), so a
client would fail on every hit.
"""
from __future__ import annotations

import json
import urllib.request

TIMEOUT_S = 30.0  # an app still loading its model answers within this even on a loaded machine

# The /search endpoint's inputs, in app.web's order: query, example image, example clip, tags,
# folder, min duration, max duration, per video, top-k. Its outputs: gallery, result (JSON), state.
SEARCH_API = "search"
RESULT_OUTPUT = 1
WIRE_PATH = "video_path"  # a hit's "path" on the wire (see the module's note)


class AppUnavailable(Exception):
    """The app could not answer this request (the reason is the message)."""


def to_wire(payload: dict) -> dict:
    """A search's JSON as the app's ``/search`` sends it: each hit's ``path`` as ``video_path``."""
    return {**payload, "results": [_renamed(row, "path", WIRE_PATH) for row in payload["results"]]}


def from_wire(result: dict) -> dict:
    """The app's ``/search`` answer as the CLI's ``--json`` (the inverse of ``to_wire``)."""
    return {**result, "results": [_renamed(row, WIRE_PATH, "path") for row in result["results"]]}


def _renamed(row: dict, old: str, new: str) -> dict:
    return {(new if key == old else key): value for key, value in row.items()}


def search_text(url: str, query: str, k: int, per_video: bool, timeout: float = TIMEOUT_S) -> dict:
    """The app's /search result for a text query, as the CLI's ``--json`` (``query``, ``model``,
    ``results``, ``matches``, ``calibration``)."""
    data = [query, None, None, [], "", 0, 0, bool(per_video), int(k)]
    outputs = call(url, SEARCH_API, data, timeout)
    try:
        result = outputs[RESULT_OUTPUT]
        if not isinstance(result, dict) or not isinstance(result.get("results"), list):
            raise TypeError(type(result).__name__)
        return from_wire(result)
    except (IndexError, KeyError, TypeError, AttributeError) as exc:
        raise AppUnavailable(f"unexpected answer from {url}/{SEARCH_API}: {exc}") from None


def call(url: str, api_name: str, data: list, timeout: float = TIMEOUT_S) -> list:
    """One call of a named Gradio endpoint; its outputs."""
    base = f"{url.rstrip('/')}/gradio_api/call/{api_name}"
    request = urllib.request.Request(base, data=json.dumps({"data": data}).encode(),
                                     headers={"Content-Type": "application/json"})
    try:
        with _no_proxy().open(request, timeout=timeout) as response:
            event_id = json.load(response)["event_id"]
        with _no_proxy().open(f"{base}/{event_id}", timeout=timeout) as response:
            return _complete(response)
    except AppUnavailable:
        raise
    except (OSError, ValueError, KeyError, TypeError) as exc:  # URLError, timeouts and resets are OSErrors
        raise AppUnavailable(f"{url}: {type(exc).__name__}: {exc}") from None


def _complete(stream) -> list:
    """The data of the ``complete`` event of a server-sent event stream (``error``: AppUnavailable)."""
    event = None
    for raw in stream:
        line = raw.decode("utf-8").rstrip("\r\n")
        if line.startswith("event:"):
            event = line[len("event:"):].strip()
        elif line.startswith("data:") and event in ("complete", "error"):
            payload = json.loads(line[len("data:"):])
            if event == "error":
                raise AppUnavailable(f"the app answered with an error: {payload}")
            if not isinstance(payload, list):
                raise AppUnavailable(f"unexpected outputs: {type(payload).__name__}")
            return payload
    raise AppUnavailable("the event stream ended without a result")


def _no_proxy() -> urllib.request.OpenerDirector:
    """An opener that ignores *_proxy variables: the app is on this machine (its loopback URL)."""
    return urllib.request.build_opener(urllib.request.ProxyHandler({}))
