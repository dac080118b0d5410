"""A video file before any decoder sees it, and what the decode stage hands on.

Every decoder (decord in ``pipeline.decode``, PyAV in ``pipeline.pyav_decode``, the GPU in
``pipeline.gpu_decode``) starts here: the file checks, the container opened with PyAV and its
header read (a file that is no video never reaches decord, which prints its own error lines before
raising), and a decoder's failure put in words. The records the decoders build (``VideoInfo``,
``FrameChunk``) are defined here too, below all of them, so each decoder builds the same ones.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass

import numpy as np

from . import video_libs
from .errors import VideoError


@dataclass(frozen=True)
class VideoInfo:
    path: str
    duration: float
    fps: float
    width: int
    height: int
    n_frames: int
    decoder: str = "decord"     # which decoder read it: "gpu", "cpu" (PyAV) or "decord"
    decoder_reason: str = ""   # why that one (e.g. "CPU decoder: no CUDA device")


@dataclass
class FrameChunk:
    """Consecutive sampled frames of one video, ready for the encoder."""

    pixels: np.ndarray        # uint8 (n, S, S, 3) model-ready squares
    times: np.ndarray         # float64 (n,) presentation time of each frame, seconds
    thumbnails: list[bytes]   # one small JPEG per frame
    decoder: str = "decord"   # the decoder that made these frames ("gpu+cpu" across a fallback)


# What FFmpeg and decord say, in words. Their raw text (C++ check expressions, build paths, AVERROR
# numbers such as 1094995529) is never a reason a user sees (README: what a damaged file gets).
_AVERROR_INVALIDDATA, _AVERROR_EOF = 1094995529, 541478725
_NO_MP4_INDEX = "its MP4 index (moov atom) is missing: the file is truncated or was never finished"
_DECODER_CAUSES = (
    (r"moov atom not found", _NO_MP4_INDEX),
    (r"cannot find video stream|no video stream|video stream not found", "no video stream in the file"),
    (r"Decoder not found|decoder .* not found|Unsupported codec|codec not (?:currently )?supported",
     "its video codec is not supported"),
    (r"Cannot allocate memory|out of memory|std::bad_alloc", "out of memory while decoding it"),
    (r"Permission denied", "permission denied"),
    (r"End of file|" + str(_AVERROR_EOF), "the file ends unexpectedly (truncated)"),
    (r"avcodec_send_packet|Error sending packet|avcodec_receive_frame|Error while decoding|decode_slice|"
     r"concealing|corrupt", "its video data is corrupt: the decoder rejected it"),
    (r"Invalid data found when processing input|" + str(_AVERROR_INVALIDDATA),
     "not a readable video: unrecognised or corrupt data (it is not a video, or it is damaged)"),
)


def plain_decoder_reason(text: str) -> str:
    """A decoder's message (decord's C++ check text, FFmpeg's, PyAV's) as a cause in words; never
    the raw text or its error numbers."""
    for pattern, cause in _DECODER_CAUSES:
        if re.search(pattern, text, re.IGNORECASE):
            return cause
    return "the decoder cannot read it (corrupt, or a format it does not support)"


def ffmpeg_reason(exc) -> str:
    """PyAV's ``FFmpegError`` as a cause in words (from its error text and number)."""
    return plain_decoder_reason(f"{exc.strerror or ''} {exc.errno or ''}")


def check_file(path: str) -> None:
    if not os.path.exists(path):
        raise VideoError(path, "open", "file does not exist")
    if not os.path.isfile(path):
        raise VideoError(path, "open", "not a regular file")
    if not os.access(path, os.R_OK):
        raise VideoError(path, "open", "permission denied")
    if os.path.getsize(path) == 0:
        raise VideoError(path, "open", "empty file (0 bytes)")


def open_av(path: str):
    """PyAV's container for ``path``, or ``VideoError`` with the cause in words (from the error
    number and the file's structure only: FFmpeg's log lines are not a reliable source, it skips
    repeats)."""
    av = video_libs.pyav()
    try:
        return av.open(path, metadata_errors="ignore")
    except av.error.FFmpegError as exc:
        if _mp4_without_index(path):
            raise VideoError(path, "open", _NO_MP4_INDEX) from None
        raise VideoError(path, "open", ffmpeg_reason(exc)) from None


def _mp4_without_index(path: str) -> bool:
    """An MP4/MOV file (it starts with an ``ftyp`` box) whose top-level boxes hold no ``moov``:
    the index an MP4 writer adds when it finishes, so the file was cut short or never closed."""
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            offset, first = 0, True
            while offset + 8 <= size:
                fh.seek(offset)
                header = fh.read(16)
                length, kind = int.from_bytes(header[:4], "big"), header[4:8]
                if first and kind != b"ftyp":
                    return False
                first = False
                if kind == b"moov":
                    return False
                if length == 1 and len(header) == 16:
                    length = int.from_bytes(header[8:16], "big")
                elif length == 0:
                    break
                if length < 8:
                    break
                offset += length
            return not first
    except OSError:
        return False


def video_stream(container, path: str):
    streams = [s for s in container.streams.video if not (s.disposition & 1024)]  # 1024: attached picture
    if not streams:
        raise VideoError(path, "open", "no video stream in the file")
    return streams[0]


@dataclass(frozen=True)
class ContainerFacts:
    """What a video's container declares, read with PyAV from its header (no decoding)."""

    declared_s: float | None  # the longest duration the header states (container or video stream)


def container_facts(path: str) -> ContainerFacts:
    """The durations a file's header declares, without decoding: the container's duration, the
    video stream's, and its frame count over its frame rate (an AVI's header keeps the frame
    count even when its index is gone). Raises ``VideoError`` when the file is no video."""
    with open_av(path) as container:
        stream = video_stream(container, path)
        rate = float(stream.average_rate or stream.guessed_rate or 0)
        candidates = []
        if container.duration:
            candidates.append(container.duration / 1e6)
        if stream.duration and stream.time_base:
            candidates.append(float(stream.duration * stream.time_base))
        if stream.frames and rate > 0:
            candidates.append(stream.frames / rate)
        candidates = [c for c in candidates if np.isfinite(c) and c > 0]
        return ContainerFacts(declared_s=max(candidates) if candidates else None)
