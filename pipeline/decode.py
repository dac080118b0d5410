"""The decode stage's entry point, and decord's path, the default on a machine without a GPU decoder.

``decode_video`` checks the file and reads its header (``pipeline.container``), then decodes with
decord (decoder-side resize to the size the model and the thumbnail need), or hands the video to
``pipeline.decoders`` when a GPU decoder is there (or PyAV is asked for). Either way a damaged file
is judged by ``pipeline.truncation``, and errors name the file and the cause in words."""
from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import numpy as np

from . import decoders, faults, video_libs
from .config import IndexConfig
from .container import FrameChunk, VideoInfo, check_file, container_facts, plain_decoder_reason
from .errors import VideoError
from .frames import FrameTransform
from .pyav_decode import decode_size
from .sampling import plan_frame_indices
from .truncation import raise_if_truncated, shorter_than_declared, truncation_checked

__all__ = ["FrameChunk", "VideoInfo", "decode_video", "iter_frame_chunks", "open_video", "plain_decoder_reason",
           "probe", "refine_cuts"]


def _clean_decord_message(exc: Exception) -> str:
    """decord's message in words (it prefixes its own with build paths and C++ check text)."""
    return plain_decoder_reason(str(exc) or type(exc).__name__)


def open_video(path: str):
    """Open a video with decord, turning every failure into a ``VideoError`` with the cause in
    words. The header is read with PyAV first: a file that is no video never reaches decord
    (which prints its own error lines before raising)."""
    check_file(path)
    container_facts(path)
    return _open_decord(path)


def _open_decord(path: str, size: tuple[int, int] | None = None):
    """decord's reader; with ``size`` (height, width), frames are resized by the decoder."""
    decord = video_libs.decord()
    decord.logging.set_level(decord.logging.QUIET)  # FFmpeg's own stderr chatter; we report the cause
    resize = {} if size is None else {"height": int(size[0]), "width": int(size[1])}
    try:
        reader = decord.VideoReader(path, num_threads=1, **resize)
    except Exception as exc:  # decord raises RuntimeError / DECORDError with C++ noise
        raise VideoError(path, "open", _clean_decord_message(exc)) from None
    return reader


def probe(reader, path: str) -> tuple[VideoInfo, np.ndarray]:
    """Video metadata plus every frame's start time, from the container's index."""
    n = len(reader)
    if n == 0:
        raise VideoError(path, "open", "the video stream has no frames")
    try:
        stamps = np.asarray(reader.get_frame_timestamp(np.arange(n)), dtype=np.float64)
    except Exception as exc:
        raise VideoError(path, "open", f"cannot read its frame timestamps: {_clean_decord_message(exc)}") from None
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
        raise VideoError(path, "decode", f"its first frame does not decode: {_clean_decord_message(exc)}") from None
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
                _clean_decord_message(exc),  # no frame numbers: decord's varied from run to run
            ) from None
        squares, thumbs = transform.squares_and_thumbnails(frames, config.thumbnail_height)
        yield FrameChunk(pixels=squares, times=frame_starts[chunk_idx], thumbnails=thumbs)


def decode_video(path: str, transform: FrameTransform, config: IndexConfig,
                 gpu_probe=None) -> tuple[VideoInfo, Iterator[FrameChunk]]:
    """Open, probe and plan; return the info and a lazy iterator over decoded chunks.

    The header is read here for every decoder; then decord decodes (``decoders.decord_reason``: no
    GPU decoder here, or decord asked for), or ``pipeline.decoders`` does the rest (GPU or PyAV;
    ``gpu_probe``: its ``GpuProbe``, for tests).

    A damaged file gets one answer, whatever decord makes of it (its results on a file whose
    index is gone vary from run to run: an error, part of the video, a single frame): the file's
    header is read first (PyAV; a file that is no video never reaches decord), and when decord
    then sees less than the header declares, or fails, a sequential read of the file decides
    whether it is truncated (``truncation.truncation_reason``): if so it is recorded as a failure with both
    durations, and otherwise decord's cause is given in words."""
    faults.inject(path)  # tests only (VIDSIFT_TEST_FAULT); the Ray task applies it before this
    check_file(path)
    facts = container_facts(path)
    reason = decoders.decord_reason(config, gpu_probe or decoders.DEFAULT_PROBE)
    if reason is None:
        return decoders.decode_sampled(path, facts, transform, config, gpu_probe or decoders.DEFAULT_PROBE)
    try:
        reader = _open_decord(path)
        info, starts = probe(reader, path)
    except VideoError:
        raise_if_truncated(path, facts)
        raise
    if shorter_than_declared(facts, info.duration):
        raise_if_truncated(path, facts)
    info = dataclasses.replace(info, decoder="decord", decoder_reason=reason)
    size = decode_size(transform, info.height, info.width, config.thumbnail_height) if config.decoder_resize else None
    if size is not None:  # decoder-side resize: frames come out at what the model and the thumbnail need
        reader = _open_decord(path, size)
    keyframes = None
    if config.sampling.keyframes:
        keyframes = np.zeros(len(starts), dtype=bool)
        keyframes[np.asarray(reader.get_key_indices(), dtype=np.int64)] = True
    indices = plan_frame_indices(starts, info.duration, config.sampling, keyframes=keyframes)
    return info, truncation_checked(path, facts, iter_frame_chunks(reader, info, indices, starts, transform, config))


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
    decord = video_libs.decord()
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
