"""Decoding sampled frames with decord, in bounded chunks, with errors that name the file and cause."""
from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from .config import IndexConfig
from .errors import VideoError
from .frames import FrameTransform
from .sampling import plan_frame_indices


@dataclass(frozen=True)
class VideoInfo:
    path: str
    duration: float
    fps: float
    width: int
    height: int
    n_frames: int


@dataclass
class FrameChunk:
    """Consecutive sampled frames of one video, ready for the encoder."""

    pixels: np.ndarray        # uint8 (n, S, S, 3) model-ready squares
    times: np.ndarray         # float64 (n,) presentation time of each frame, seconds
    thumbnails: list[bytes]   # one small JPEG per frame


def _clean_decord_message(exc: Exception) -> str:
    """decord prefixes messages with its build path and C++ check text; keep the human part."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    text = re.sub(r"^\[[\d:]+\]\s*\S+:\d+:\s*", "", text)
    text = re.sub(r"^Check failed: .*?\)\s*", "", text)
    return text[:300]


def open_video(path: str):
    """Open a video with decord, turning every failure into a ``VideoError`` with the cause."""
    if not os.path.exists(path):
        raise VideoError(path, "open", "file does not exist")
    if not os.path.isfile(path):
        raise VideoError(path, "open", "not a regular file")
    if not os.access(path, os.R_OK):
        raise VideoError(path, "open", "permission denied")
    if os.path.getsize(path) == 0:
        raise VideoError(path, "open", "empty file (0 bytes)")
    import decord

    decord.logging.set_level(decord.logging.QUIET)  # FFmpeg's own stderr chatter; we report the cause
    try:
        reader = decord.VideoReader(path, num_threads=1)
    except Exception as exc:  # decord raises RuntimeError / DECORDError with C++ noise
        message = _clean_decord_message(exc)
        if "video stream" in message:
            reason = "no video stream in the file"
        else:
            reason = f"not a readable video (corrupt, truncated or not a video): {message}"
        raise VideoError(path, "open", reason) from None
    return reader


def probe(reader, path: str) -> tuple[VideoInfo, np.ndarray]:
    """Video metadata plus every frame's start time, from the container's index."""
    n = len(reader)
    if n == 0:
        raise VideoError(path, "open", "the video stream has no frames")
    try:
        stamps = np.asarray(reader.get_frame_timestamp(np.arange(n)), dtype=np.float64)
    except Exception as exc:
        raise VideoError(path, "open", f"cannot read frame timestamps: {_clean_decord_message(exc)}") from None
    starts = stamps[:, 0]
    duration = float(stamps[-1, 1])
    height, width = _frame_shape(reader, path)
    fps = float(reader.get_avg_fps() or 0.0)
    if duration <= 0 or not np.isfinite(duration):
        raise VideoError(path, "open", f"invalid duration {duration!r}")
    return VideoInfo(path=path, duration=duration, fps=fps, width=width, height=height, n_frames=n), starts


def _frame_shape(reader, path: str) -> tuple[int, int]:
    try:
        shape = reader.next().shape
        reader.seek(0)
    except Exception as exc:
        raise VideoError(path, "decode", f"first frame does not decode: {_clean_decord_message(exc)}") from None
    return int(shape[0]), int(shape[1])


def iter_frame_chunks(
    reader, info: VideoInfo, indices: np.ndarray, frame_starts: np.ndarray,
    transform: FrameTransform, config: IndexConfig,
) -> Iterator[FrameChunk]:
    """Decode ``indices`` ``config.decode_chunk`` frames at a time, so memory stays flat however
    long the video is; a frame that does not decode fails the whole video (truncated files)."""
    for begin in range(0, len(indices), config.decode_chunk):
        chunk_idx = indices[begin:begin + config.decode_chunk]
        try:
            frames = reader.get_batch(chunk_idx.tolist()).asnumpy()
        except Exception as exc:
            raise VideoError(
                info.path, "decode",
                f"frames {int(chunk_idx[0])}-{int(chunk_idx[-1])} of {info.n_frames} do not decode "
                f"(truncated or corrupt?): {_clean_decord_message(exc)}",
            ) from None
        squares, thumbs = transform.squares_and_thumbnails(frames, config.thumbnail_height)
        yield FrameChunk(pixels=squares, times=frame_starts[chunk_idx], thumbnails=thumbs)


def decode_video(path: str, transform: FrameTransform, config: IndexConfig) -> tuple[VideoInfo, Iterator[FrameChunk]]:
    """Open, probe and plan; return the info and a lazy iterator over decoded chunks."""
    reader = open_video(path)
    info, starts = probe(reader, path)
    indices = plan_frame_indices(starts, info.duration, config.sampling)
    return info, iter_frame_chunks(reader, info, indices, starts, transform, config)


def refine_cuts(path: str, intervals: list[tuple[float, float]], probe_width: int = 64,
                frame_size: tuple[int, int] | None = None) -> list[float]:
    """Place each cut on the frame where the picture changes most, between the two sampled frames
    that bracket it: the frames in between are decoded small (decoder-side resize) and compared by
    mean absolute pixel difference. A cut found this way is exact to one frame; if the video cannot
    be read again, the midpoint is kept. ``frame_size`` (height, width), when known, saves opening
    the file a second time just to read it."""
    midpoints = [0.5 * (a + b) for a, b in intervals]
    if not intervals:
        return midpoints
    import decord

    try:
        if frame_size is None:
            probe_reader = decord.VideoReader(path, num_threads=1)
            frame_size = probe_reader[0].shape[:2]
            del probe_reader
        height, width = frame_size
        small_h = max(2, int(round(probe_width * height / width / 2)) * 2)
        reader = decord.VideoReader(path, num_threads=1, width=probe_width, height=small_h)
        stamps = np.asarray(reader.get_frame_timestamp(np.arange(len(reader))), dtype=np.float64)[:, 0]
    except Exception:
        return midpoints
    refined = []
    for (before, after), midpoint in zip(intervals, midpoints):
        first = int(np.searchsorted(stamps, before + 1e-6, side="right") - 1)
        last = int(np.searchsorted(stamps, after + 1e-6, side="right") - 1)
        if last - first < 1:
            refined.append(midpoint)
            continue
        try:
            frames = reader.get_batch(list(range(first, last + 1))).asnumpy().astype(np.int16)
        except Exception:
            refined.append(midpoint)
            continue
        jumps = np.abs(np.diff(frames, axis=0)).mean(axis=(1, 2, 3))
        refined.append(float(stamps[first + 1 + int(np.argmax(jumps))]))
    return refined
