"""Sampled frames on the CPU with PyAV, decoding only what the plan needs.

Why not decord's ``get_batch``: measured on shapes-world (``bench/decode.py``), the decode stage's
time went to three things decord cannot avoid: converting and then resizing full-size frames with
PIL (the model needs 398x224 or 64x64, not 640x360), decoding frames no sampled frame depends on,
and re-reading its own index; and decord reads ahead without bound (memory grows with the video's
length) and returned a garbage timestamp now and then on WebM/AVI. PyAV gives the controls:

- **Decoder-side resize**: the sampled frame is converted from YUV straight to RGB at the size the
  model's transform and the thumbnail need (``decode_size``: aspect kept, so the transform's
  crop or squash sees the same geometry; swscale bicubic; vectors within cosine 0.9999 of
  full-size decoding for ViT-B-32, 0.9994 for shapes-tiny).
- **Skipping frames nothing references**: every packet that is not a sampled frame is sent with
  ``skip_frame = NONREF``, so the decoder drops non-reference frames (H.264 B-frames) unread.
  Reference frames are decoded in full: the sampled frame's pixels are exactly what a full decode
  gives.
- **Seeking versus reading on**: before a sampled frame, the reader seeks to the keyframe that
  precedes it when that keyframe lies ahead of where the decoder is (everything in between is
  unneeded), and reads on otherwise. With 1 frame/s and a keyframe every second (MPEG-4 AVI) that
  decodes one frame per sample; with x264's ~8 s keyframe interval it reads on.

Timestamps are the packets' own presentation stamps (``StreamIndex.pts``) minus the stream's start,
and a sampled frame is matched to its plan by its stamp: a stored time is the true presentation time
of the frame whose pixels were decoded.
"""
from __future__ import annotations

from array import array
from bisect import bisect_left
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from . import video_libs
from .container import open_av, video_stream
from .errors import VideoError

SWS_INTERPOLATION = "BICUBIC"  # closest to PIL's antialiased bicubic of the measured swscale filters


@dataclass(frozen=True)
class StreamIndex:
    """Every frame of the video stream, from one sequential read of the packets (no decoding).

    Sequential demuxing needs no container index and reads what is really in the file, so the
    frames listed are the frames that exist (clamped to what is there, even when the header
    over-reports), the same way on every run."""

    pts: np.ndarray        # int64 presentation stamps in the stream's time base, ascending
    keyframe: np.ndarray   # bool, per frame: a packet a decoder can start from
    time_base: Fraction
    start_pts: int         # the stream's start: times are measured from it
    duration: float        # seconds, start of the first frame to end of the last
    video_end: float       # readable_span's two figures, for the truncation check
    file_end: float
    width: int
    height: int
    fps: float
    codec: str

    @property
    def starts(self) -> np.ndarray:
        """Presentation time of every frame, seconds from the stream's start."""
        return (self.pts - self.start_pts).astype(np.float64) * float(self.time_base)

    def __len__(self) -> int:
        return len(self.pts)


def scan(path: str) -> StreamIndex:
    """Read every packet once, in order: the frames' stamps, which are keyframes, and how far the
    video stream and the whole file really go (``truncation.readable_span``'s figures, computed the
    same way)."""
    av = video_libs.pyav()
    with open_av(path) as container:
        video = video_stream(container, path)
        stamps = array("q")  # compact: an hour at 25 fps is 90,000 frames
        keys = array("b")
        last_duration = 0
        end_ticks: dict[int, tuple[int, object]] = {}  # per stream: furthest stamp + duration, and the stream
        counts: dict[int, int] = {}
        video_index = video.index
        try:
            for packet in container.demux():
                stamp = packet.pts if packet.pts is not None else packet.dts
                stream = packet.stream
                index = stream.index
                counts[index] = counts.get(index, 0) + 1
                if stamp is None:
                    continue
                end = stamp + (packet.duration or 0)
                if end > end_ticks.get(index, (end - 1,))[0]:
                    end_ticks[index] = (end, stream)
                if index == video_index and packet.size > 0:
                    stamps.append(stamp)
                    keys.append(1 if packet.is_keyframe else 0)
                    if packet.duration and packet.duration > last_duration:
                        last_duration = packet.duration
        except (av.error.FFmpegError, OSError):
            pass  # the file ends (or breaks) here: what was read is what is there
        ends = {index: float(end * stream.time_base) - (float(stream.start_time * stream.time_base)
                                                         if stream.start_time is not None else 0.0)
                for index, (end, stream) in end_ticks.items() if stream.time_base is not None}
        rate = float(video.average_rate or video.guessed_rate or 0)
        if video.index not in ends and counts.get(video.index) and rate > 0:
            ends[video.index] = counts[video.index] / rate
        time_base = video.time_base or Fraction(1, 1)
        raw = np.frombuffer(stamps, dtype=np.int64) if len(stamps) else np.zeros(0, np.int64)
        order = np.argsort(raw, kind="stable")
        pts = raw[order]
        keyframe = (np.frombuffer(keys, dtype=np.int8) if len(keys) else np.zeros(0, np.int8))[order].astype(bool)
        pts, first = np.unique(pts, return_index=True)  # a stamp twice (broken muxers): one frame
        keyframe = keyframe[first]
        start_pts = int(video.start_time) if video.start_time is not None else (int(pts[0]) if len(pts) else 0)
        start_pts = min(start_pts, int(pts[0])) if len(pts) else start_pts
        if len(pts):
            frame_ticks = last_duration or (round(1 / (rate * float(time_base))) if rate > 0 else 0)
            duration = float((int(pts[-1]) + frame_ticks - start_pts) * time_base)
        else:
            duration = 0.0
        return StreamIndex(
            pts=pts, keyframe=keyframe, time_base=time_base, start_pts=start_pts, duration=duration,
            video_end=ends.get(video.index, 0.0), file_end=max(ends.values(), default=0.0),
            width=int(video.codec_context.width or 0), height=int(video.codec_context.height or 0),
            fps=rate, codec=video.codec_context.name)


def decode_size(transform, height: int, width: int, thumbnail_height: int) -> tuple[int, int] | None:
    """(height, width) to convert sampled frames to, or None for full size.

    The picture's aspect is kept, so the transform's own resize and crop (or squash) then see the
    same geometry as from the full frame; for ``shortest`` the size is exactly the transform's
    resize, whose step then does nothing. Big enough for the model's input and the thumbnail;
    never larger than the frame (no upscaling in the decoder)."""
    th, tw = transform.size
    if transform.resize_mode == "shortest":
        out_h, out_w = transform.resized_shape(height, width)
        if out_h < thumbnail_height:
            out_h, out_w = thumbnail_height, int(round(thumbnail_height * width / height))
    else:
        scale = max(th / height, tw / width, thumbnail_height / height)
        if transform.resize_mode == "longest":
            scale = max(thumbnail_height / height, min(th / height, tw / width))
        out_h, out_w = int(np.ceil(height * scale - 1e-9)), int(np.ceil(width * scale - 1e-9))
    if out_h >= height or out_w >= width:
        return None
    return out_h, out_w


def _to_rgb(frame, size: tuple[int, int] | None) -> np.ndarray:
    if size is None:
        return frame.to_ndarray(format="rgb24")
    return frame.to_ndarray(format="rgb24", width=size[1], height=size[0], interpolation=SWS_INTERPOLATION)


def read_sampled(path: str, index: StreamIndex, wanted: np.ndarray, size: tuple[int, int] | None = None,
                 threads: int = 1, seek: bool = True, skip_nonref: bool = True) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(frame number, RGB frame)`` for each of ``wanted`` (ascending frame numbers into
    ``index``), decoding only what they need.

    Sampled frames that never come out of the decoder at the very end of the stream (a last packet
    cut short) are left out: the plan is clamped to what really decodes. One missing before a frame
    that did decode is corrupt data and raises ``VideoError``."""
    av = video_libs.pyav()
    wanted = np.asarray(wanted, dtype=np.int64)
    if len(wanted) == 0:
        return
    frame_of = _FrameNumbers(index.pts)
    keyframes = np.nonzero(index.keyframe)[0]
    order = [int(index.pts[i]) for i in wanted]  # ascending
    pending = set(order)
    state = {"last": -1}  # the furthest frame the decoder gave back

    def matches(frames):
        for frame in frames:
            stamp = _stamp(frame)
            if stamp is None:
                continue
            state["last"] = max(state["last"], frame_of.get(stamp, -1))
            if stamp in pending:
                pending.discard(stamp)
                yield frame_of[stamp], _to_rgb(frame, size)

    with open_av(path) as container:
        stream = video_stream(container, path)
        codec = stream.codec_context
        codec.thread_count = max(1, int(threads))
        codec.thread_type = "AUTO" if threads > 1 else "SLICE"
        packets = container.demux(stream)
        position = -1    # furthest frame number sent to the decoder
        landing = None   # after a seek: the keyframe's stamp the first packet must not pass
        cursor = 0       # next entry of ``order`` still to come
        while cursor < len(order):
            target = frame_of[order[cursor]]
            if seek and len(keyframes) and keyframes[0] <= target:
                k = int(keyframes[np.searchsorted(keyframes, target, side="right") - 1])
                if k > position + 1:  # a keyframe ahead of the decoder: nothing before it is needed
                    try:
                        container.seek(int(index.pts[k]), stream=stream, backward=True, any_frame=False)
                    except av.error.FFmpegError:
                        seek = False
                        container.seek(0, stream=stream, backward=True)
                        k = 0
                    codec.flush_buffers()
                    packets = container.demux(stream)
                    position, landing = k - 1, int(index.pts[k]) if seek else None
            try:
                packet = next(packets)
            except StopIteration:
                break
            stamp = packet.pts if packet.pts is not None else packet.dts
            if landing is not None and stamp is not None:
                if int(stamp) > landing:  # the demuxer landed past the keyframe: its index is wrong
                    seek, landing = False, None
                    container.seek(0, stream=stream, backward=True)
                    codec.flush_buffers()
                    packets, position = container.demux(stream), -1
                    continue
                landing = None
            if stamp is not None:
                position = max(position, frame_of.get(int(stamp), position))
            if skip_nonref:
                codec.skip_frame = "DEFAULT" if stamp is not None and int(stamp) in pending else "NONREF"
            try:
                frames = codec.decode(packet) if packet.size else codec.decode(None)
            except av.error.FFmpegError:
                continue  # a damaged packet: its frame is missing, judged below
            yield from matches(frames)
            while cursor < len(order) and order[cursor] not in pending:
                cursor += 1
        if pending:
            codec.skip_frame = "DEFAULT"
            try:
                yield from matches(codec.decode(None))
            except av.error.FFmpegError:
                pass
    if pending and state["last"] < 0:
        raise VideoError(path, "decode", "no frame of it decodes: its video data is corrupt")
    if any(frame_of[p] < state["last"] for p in pending):
        raise VideoError(path, "decode", "its video data is corrupt: the decoder rejected it")


class _FrameNumbers:
    """Frame number of a stamp, by binary search in the sorted stamps (a compact array: a dict of an
    hour's 90,000 frames was ~10 MB, growing with the video's length; numpy's searchsorted per
    packet cost more than the bisection)."""

    def __init__(self, pts: np.ndarray):
        self.pts = array("q", pts.astype(np.int64).tobytes())

    def get(self, stamp: int, default: int) -> int:
        i = bisect_left(self.pts, stamp)
        return i if i < len(self.pts) and self.pts[i] == stamp else default

    def __getitem__(self, stamp: int) -> int:
        i = self.get(stamp, -1)
        if i < 0:
            raise KeyError(stamp)
        return i


def _stamp(frame) -> int | None:
    stamp = frame.pts if frame.pts is not None else frame.dts
    return None if stamp is None else int(stamp)
