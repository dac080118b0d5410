"""The app's HTML and Markdown, from plain data: a hit's caption and confidence badge, the search
status, the player, the classification's verdict and timeline, the Library's summary and tables.

Pure functions without Gradio, so the page's text can be tested (and changed) without a server,
and the service (``app.service``) stays free of presentation. Everything a user typed or a file
name is escaped.
"""
from __future__ import annotations

import html
import os
import zlib

from vidsift.pipeline.search import format_timestamp

_PALETTE = ("#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#9a6324",
            "#469990", "#808000", "#000075", "#800000")

VIDEO_COLUMNS = ["path", "duration (s)", "segments", "tags", "indexed"]
FAILURE_COLUMNS = ["path", "stage", "reason", "model", "time"]


def colour(label: str) -> str:
    """A label's colour in the timeline: the same label, the same colour, in every clip."""
    return _PALETTE[zlib.crc32(label.encode()) % len(_PALETTE)]


# ---- search -------------------------------------------------------------------------------------
def badge(confidence: float | None, match: bool | None) -> str:
    """The confidence badge of a hit's caption: " · ✓ 97%" for a match, " · weak 3%" otherwise."""
    if confidence is None:
        return ""
    return f" · {'✓' if match else 'weak'} {100 * confidence:.0f}%"


def caption(hit) -> str:
    """A gallery item's caption (``hit``: a ``SearchHit``)."""
    return (f"{os.path.basename(hit.path)} · {format_timestamp(hit.start)}–{format_timestamp(hit.end)} · "
            f"{hit.score:.3f}{badge(hit.confidence, hit.match)}")


def search_status(result: dict | None) -> str:
    """Above the gallery: the "No match" state (the closest candidates below it, dimmed), or how
    many results match; weak results are dimmed by their place in the gallery. ``result``: a
    search's JSON (``pipeline.search.search_report``)."""
    result = result or {}
    rows = result.get("results") or []
    if not rows or result.get("matches") is None:
        return ""
    weak = [i for i, row in enumerate(rows, 1) if not row.get("match")]
    css = "".join(f"#search-results .grid-container > div:nth-child({i}) button.thumbnail-item{{opacity:.35}}"
                  for i in weak)
    query = html.escape(result.get("query") or "")
    if result["matches"] == 0:
        text = (f"<div class='vs-nomatch' style='padding:10px 14px;border-radius:8px;background:#fff4e5;"
                f"border:1px solid #f0b35b'><b>No match</b> for “{query}”: nothing in the archive shows it. "
                f"The closest segments are shown below, dimmed.</div>")
    else:
        text = (f"<div class='vs-matches' style='padding:6px 2px'><b>{result['matches']}</b> of {len(rows)} "
                f"results match “{query}”" + (", the weak ones are dimmed." if weak else ".") + "</div>")
    cal = result.get("calibration") or {}
    note = "" if cal.get("source") in (None, "fitted") else \
        f"<div class='vs-calibration' style='font-size:12px;color:#666'>Confidence calibration: " \
        f"{html.escape(cal.get('note', ''))}</div>"
    return (f"<style>{css}</style>" if css else "") + text + note


def player(hit: dict, src: str) -> str:
    """HTML5 player for one hit (a row of a search's JSON) from ``src``, starting at the segment's
    start (the media fragment ``#t=`` is in ``src``)."""
    start, end = float(hit["start"]), float(hit["end"])
    name = html.escape(os.path.basename(hit["path"]))
    tags = f" · tags: {html.escape(', '.join(hit['tags']))}" if hit.get("tags") else ""
    return (f"<div class='vs-player' data-start='{start:.3f}' data-end='{end:.3f}'>"
            f"<video id='vs-video' src='{src}' controls autoplay muted playsinline preload='auto' "
            f"style='width:100%;max-height:60vh;background:#000'></video>"
            f"<p><b>{name}</b> · {format_timestamp(start)}–{format_timestamp(end)} · score {float(hit['score']):.3f}"
            f"{badge(hit.get('confidence'), hit.get('match'))}{tags}</p></div>")


def refused(message: str) -> str:
    return f"<p class='vs-refused'>{html.escape(message)}</p>"


# ---- classification -----------------------------------------------------------------------------
def timeline(result: dict) -> str:
    """One coloured block per segment, as wide as the segment is long, with its label."""
    segments = result.get("segments") or []
    if not segments:
        return ""
    blocks = []
    for seg in segments:
        best = seg["labels"][0]
        span = f"{format_timestamp(seg['start'])}–{format_timestamp(seg['end'])}"
        width = max(float(seg["end"]) - float(seg["start"]), 0.05)
        if "label" in seg and seg["label"] is None:  # calibrated: none of the labels is shown here
            label, shade = "none of these labels", "#9e9e9e"
            value = f"closest: {html.escape(best['label'])} {100 * best['confidence']:.0f}%"
        else:
            chosen = next((r for r in seg["labels"] if r["label"] == seg.get("label")), best)
            label, shade = html.escape(chosen["label"]), colour(chosen["label"])
            value = f"{100 * chosen.get('confidence', chosen['probability']):.0f}%"
        blocks.append(
            f"<div class='vs-seg' title='{span} {label} ({value})' "
            f"style='flex:{width:.3f} 1 0;min-width:2px;background:{shade};color:#fff;"
            f"padding:4px 6px;overflow:hidden;white-space:nowrap;text-overflow:ellipsis;"
            f"border-right:1px solid #fff;font-size:12px'>{label}<br><small>{span} · "
            f"{value}</small></div>")
    return ("<div class='vs-timeline-wrap'><div style='font-size:13px;margin-bottom:4px'>Per segment "
            f"({len(segments)} segments, {float(result.get('duration', 0)):.1f} s)</div>"
            "<div class='vs-timeline' style='display:flex;width:100%;border-radius:6px;overflow:hidden'>"
            + "".join(blocks) + "</div></div>")


def verdict(result: dict) -> str:
    """The answer above the chart: the label shown (and any other label shown in some scene), or
    "None of these labels" with the closest one and its confidence."""
    result = result or {}
    if "calibration" not in result:
        return ""
    if result.get("label") is None:
        closest = max(result.get("labels") or [{}], key=lambda r: r.get("confidence", 0.0))
        hint = (f" (closest: {html.escape(closest['label'])}, confidence {100 * closest['confidence']:.0f}%)"
                if closest.get("label") else "")
        return (f"<div class='vs-verdict vs-none' style='padding:8px 12px;border-radius:8px;background:#fff4e5;"
                f"border:1px solid #f0b35b'><b>None of these labels</b> fits this clip{hint}.</div>")
    shown = ", ".join(f"{html.escape(m['label'])} ({100 * m['confidence']:.0f}%)"
                      for m in result.get("matches", []))
    return (f"<div class='vs-verdict vs-label' style='padding:8px 12px;border-radius:8px;background:#e8f5e9;"
            f"border:1px solid #81c784'><b>{html.escape(result['label'])}</b> · shown: {shown}</div>")


def chart(result: dict) -> tuple[dict, list[str], list[str], str]:
    """The label chart's values and title, the tag picker's choices and picked tags: the labels
    shown (calibrated), else the top label."""
    result = result or {}
    labels = {row["label"]: float(row["probability"]) for row in result.get("labels", [])}
    choices = list(labels)
    matched = [m["label"] for m in result.get("matches", [])]
    choices += [label for label in matched if label not in choices]
    calibrated = "calibration" in result
    chosen = matched if calibrated else choices[:1]
    title = "Top labels" if not calibrated else (
        "Probability among these labels (none of them fits)" if result.get("label") is None
        else "Probability among these labels")
    return labels, choices, chosen, title


# ---- writes -------------------------------------------------------------------------------------
def added(outcome) -> str:
    """What adding an upload did (``app.writes.Added``)."""
    name = html.escape(outcome.name)
    if outcome.already:
        return f"**{name}** is already in the archive; nothing was added."
    return (f"Added **{name}** to the archive as `{html.escape(outcome.dest)}` with tags: "
            f"{html.escape(outcome.tag_text)} ({outcome.frames} frames).")


def indexed_folder(outcome) -> str:
    """What indexing a folder did (``app.writes.FolderIndexed``)."""
    report = outcome.report
    lines = [f"Indexed **{report.indexed}**, already indexed {report.skipped}, failed {len(report.failures)} "
             f"of {report.total} videos in `{html.escape(outcome.folder)}` ({report.frames} frames, "
             f"{report.seconds:.1f} s)."]
    lines += [f"- failed `{html.escape(f.path)}`: {f.stage}: {html.escape(f.reason)}" for f in report.failures]
    if outcome.outside:
        lines.append(f"- {outcome.outside} file(s) skipped: links leading outside the allowed folders")
    return "\n".join(lines)


# ---- library ------------------------------------------------------------------------------------
def header(db: str, model_key: str) -> str:
    return f"## vidsift · `{html.escape(db)}` · model `{html.escape(model_key)}`"


def library_summary(view) -> str:
    """The Library's summary (``app.service.LibraryView``): database, model, failures, scans."""
    lines = [f"**Database** `{html.escape(view.db)}` · **serving model** `{html.escape(view.model)}`"]
    if view.problem:
        lines.append(f"- the archive's default model cannot be served: {html.escape(view.problem)}")
    if not view.has_models:
        lines.append("- nothing indexed yet")
    lines.append(f"- failures: {len(view.failures)}")
    lines += [f"- folder `{html.escape(scan['folder'])}` last scanned "
              f"{scan['scanned_at'].isoformat(timespec='seconds')} ({scan['kind']}: {scan['added']} added, "
              f"{scan['changed']} changed, {scan['removed']} removed, {scan['failed']} failed)"
              for scan in view.scans]
    return "\n".join(lines)


def video_rows(rows: list[dict]) -> list[dict]:
    """The Library's videos, by path (columns ``VIDEO_COLUMNS``)."""
    return [{"path": r["path"], "duration (s)": round(float(r["duration"]), 2), "segments": r["n_segments"],
             "tags": ", ".join(r["tags"] or []),
             "indexed": r["indexed_at"].isoformat(timespec="seconds") if r["indexed_at"] else ""}
            for r in sorted(rows, key=lambda r: r["path"])]


def failure_rows(failures: list[dict]) -> list[dict]:
    """The Library's failures (columns ``FAILURE_COLUMNS``)."""
    return [{"path": f["path"], "stage": f["stage"], "reason": f["reason"], "model": f["model"],
             "time": f["time"].isoformat(timespec="seconds")} for f in failures]
