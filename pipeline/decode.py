"""The decode stage's entry point and its hardening: file and header checks, errors that name the
file and cause in words, the truncation check; and decord's path, the default on a machine
without a GPU decoder.

``decode_video`` reads the header, then decodes with decord (decoder-side resize to the size the
model and the thumbnail need), or hands the video to ``pipeline.decoders`` when a GPU decoder is
there (or PyAV is asked for)."""
from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from .config import IndexConfig
from .errors import VideoError
from .frames import FrameTransform
from .pyav_decode import decode_size
from .sampling import plan_frame_indices


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
_DECODER_CAUSES = (
    (r"moov atom not found", "its MP4 index (moov atom) is missing: the file is truncated or was never finished"),
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
TRUNCATION_TOLERANCE_S = 0.5  # a file may end this much before its declared duration, no more


def plain_decoder_reason(text: str) -> str:
    """A decoder's message (decord's C++ check text, FFmpeg's, PyAV's) as a cause in words; never
    the raw text or its error numbers."""
    for pattern, cause in _DECODER_CAUSES:
        if re.search(pattern, text, re.IGNORECASE):
            return cause
    return "the decoder cannot read it (corrupt, or a format it does not support)"


def _clean_decord_message(exc: Exception) -> str:
    """decord's message in words (it prefixes its own with build paths and C++ check text)."""
    return plain_decoder_reason(str(exc) or type(exc).__name__)


@dataclass(frozen=True)
class ContainerFacts:
    """What a video's container declares, read with PyAV from its header (no decoding)."""

    declared_s: float | None  # the longest duration the header states (container or video stream)


def _open_av(path: str):
    """PyAV's container for ``path``, or ``VideoError`` with the cause in words (from the error
    number and the file's structure only: FFmpeg's log lines are not a reliable source, it skips
    repeats)."""
    import av

    try:
        return av.open(path, metadata_errors="ignore")
    except av.error.FFmpegError as exc:
        if _mp4_without_index(path):
            raise VideoError(path, "open", "its MP4 index (moov atom) is missing: the file is truncated or was "
                                           "never finished") from None
        raise VideoError(path, "open", plain_decoder_reason(f"{exc.strerror or ''} {exc.errno or ''}")) from None


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


def _video_stream(container, path: str):
    streams = [s for s in container.streams.video if not (s.disposition & 1024)]  # 1024: attached picture
    if not streams:
        raise VideoError(path, "open", "no video stream in the file")
    return streams[0]


def container_facts(path: str) -> ContainerFacts:
    """The durations a file's header declares, without decoding: the container's duration, the
    video stream's, and its frame count over its frame rate (an AVI's header keeps the frame
    count even when its index is gone). Raises ``VideoError`` when the file is no video."""
    with _open_av(path) as container:
        stream = _video_stream(container, path)
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


def readable_span(path: str) -> tuple[float, float]:
    """(end of the video stream, end of the whole file) in seconds, from reading every packet in
    order with PyAV (``pyav_decode.scan``). Sequential demuxing does not depend on an index and reads
    what is really in the file, the same way every time (decord, seeking in a file whose index is
    gone, does not)."""
    from .pyav_decode import scan

    index = scan(path)
    return index.video_end, index.file_end


def truncation_reason(path: str, facts: ContainerFacts | None = None) -> str | None:
    """The reason a file is recorded as damaged, when it ends well before the duration its header
    declares (an interrupted copy, download or recording), else None. Decided from the header and
    a sequential read only, so the same file always gets the same answer and the same words."""
    facts = facts or container_facts(path)
    if not facts.declared_s:
        return None
    video_end, file_end = readable_span(path)
    if file_end >= facts.declared_s - TRUNCATION_TOLERANCE_S:
        return None
    return (f"truncated or damaged: its video stops at {video_end:.1f} s but its header declares "
            f"{facts.declared_s:.1f} s; nothing of it was indexed (copy it again, or remux what is there, "
            f"e.g. ffmpeg -i IN -c copy OUT.mkv, and index that)")


def _check_file(path: str) -> None:
    if not os.path.exists(path):
        raise VideoError(path, "open", "file does not exist")
    if not os.path.isfile(path):
        raise VideoError(path, "open", "not a regular file")
    if not os.access(path, os.R_OK):
        raise VideoError(path, "open", "permission denied")
    if os.path.getsize(path) == 0:
        raise VideoError(path, "open", "empty file (0 bytes)")


def open_video(path: str):
    """Open a video with decord, turning every failure into a ``VideoError`` with the cause in
    words. The header is read with PyAV first: a file that is no video never reaches decord
    (which prints its own error lines before raising)."""
    _check_file(path)
    container_facts(path)
    return _open_decord(path)


def _open_decord(path: str, size: tuple[int, int] | None = None):
    """decord's reader; with ``size`` (height, width), frames are resized by the decoder."""
    import av  # noqa: F401 - PyAV's libraries before decord's (pipeline/synth.py: the libvpx clash)
    import decord

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
    whether it is truncated (``truncation_reason``): if so it is recorded as a failure with both
    durations, and otherwise decord's cause is given in words."""
    from . import faults

    faults.inject(path)  # tests only (VIDSIFT_TEST_FAULT); the Ray task applies it before this
    _check_file(path)
    facts = container_facts(path)
    from . import decoders

    reason = decoders.decord_reason(config, gpu_probe or decoders.DEFAULT_PROBE)
    if reason is None:
        return decoders.decode_sampled(path, facts, transform, config, gpu_probe or decoders.DEFAULT_PROBE)
    try:
        reader = _open_decord(path)
        info, starts = probe(reader, path)
    except VideoError:
        _raise_if_truncated(path, facts)
        raise
    if facts.declared_s and info.duration < facts.declared_s - TRUNCATION_TOLERANCE_S:
        _raise_if_truncated(path, facts)
    info = dataclasses.replace(info, decoder="decord", decoder_reason=reason)
    size = decode_size(transform, info.height, info.width, config.thumbnail_height) if config.decoder_resize else None
    if size is not None:  # decoder-side resize: frames come out at what the model and the thumbnail need
        reader = _open_decord(path, size)
    keyframes = None
    if config.sampling.keyframes:
        keyframes = np.zeros(len(starts), dtype=bool)
        keyframes[np.asarray(reader.get_key_indices(), dtype=np.int64)] = True
    indices = plan_frame_indices(starts, info.duration, config.sampling, keyframes=keyframes)
    return info, _truncation_checked(path, facts, iter_frame_chunks(reader, info, indices, starts, transform, config))


def _raise_if_truncated(path: str, facts: ContainerFacts) -> None:
    reason = truncation_reason(path, facts)
    if reason:
        raise VideoError(path, "decode", reason)


def _truncation_checked(path: str, facts: ContainerFacts, chunks: Iterator[FrameChunk]) -> Iterator[FrameChunk]:
    """Frames that fail to decode in a truncated file fail it as truncated, like any other way."""
    try:
        yield from chunks
    except VideoError:
        _raise_if_truncated(path, facts)
        raise


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
