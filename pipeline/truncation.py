"""Whether a damaged file is truncated: decided from its header and one sequential read, so the same
file always gets the same answer and the same words, whichever decoder met it and whatever that
decoder made of it (decord's results on a file whose index is gone vary from run to run)."""
from __future__ import annotations

from collections.abc import Iterator

from .container import ContainerFacts, FrameChunk, container_facts
from .errors import VideoError
from .pyav_decode import scan

TRUNCATION_TOLERANCE_S = 0.5  # a file may end this much before its declared duration, no more


def readable_span(path: str) -> tuple[float, float]:
    """(end of the video stream, end of the whole file) in seconds, from reading every packet in
    order with PyAV (``pyav_decode.scan``). Sequential demuxing does not depend on an index and reads
    what is really in the file, the same way every time (decord, seeking in a file whose index is
    gone, does not)."""
    index = scan(path)
    return index.video_end, index.file_end


def truncation_reason(path: str, facts: ContainerFacts | None = None,
                      span: tuple[float, float] | None = None) -> str | None:
    """The reason a file is recorded as damaged, when it ends well before the duration its header
    declares (an interrupted copy, download or recording), else None. ``span``: ``readable_span``'s
    two figures when the caller has just read them (a full read of the file, not to be done twice)."""
    facts = facts or container_facts(path)
    if not facts.declared_s:
        return None
    video_end, file_end = span or readable_span(path)
    if file_end >= facts.declared_s - TRUNCATION_TOLERANCE_S:
        return None
    return (f"truncated or damaged: its video stops at {video_end:.1f} s but its header declares "
            f"{facts.declared_s:.1f} s; nothing of it was indexed (copy it again, or remux what is there, "
            f"e.g. ffmpeg -i IN -c copy OUT.mkv, and index that)")


def shorter_than_declared(facts: ContainerFacts, seen_s: float) -> bool:
    """Whether a decoder saw less of the video than its header declares (then ``raise_if_truncated``
    decides)."""
    return bool(facts.declared_s) and seen_s < facts.declared_s - TRUNCATION_TOLERANCE_S


def raise_if_truncated(path: str, facts: ContainerFacts, span: tuple[float, float] | None = None) -> None:
    reason = truncation_reason(path, facts, span)
    if reason:
        raise VideoError(path, "decode", reason)


def truncation_checked(path: str, facts: ContainerFacts, chunks: Iterator[FrameChunk]) -> Iterator[FrameChunk]:
    """Frames that fail to decode in a truncated file fail it as truncated, like any other way."""
    try:
        yield from chunks
    except VideoError:
        raise_if_truncated(path, facts)
        raise
