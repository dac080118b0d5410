"""Shapes-world frames to a real video file, with PyAV, in the four containers the spec requires.

The files are real MP4/H.264, MKV/H.264, WebM/VP9 and AVI/MPEG-4, so the decode path the tests
exercise is the one users' archives take. Encoding is reproducible: the same spec and seed give
the same bytes (bitexact muxing, x264 without MB-tree, one thread by default).

PyAV is loaded when this module is imported, on purpose: decord loads its own, older libvpx, and
PyAV's VP9 encoder only opens when PyAV's libraries were loaded first (``pipeline/video_libs.py``).
Importing a renderer is the signal that VP9 will be needed. When decord still won the race in this
process, ``render_video`` notices (``_vp9_encoder_usable``) and encodes in a fresh interpreter.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import subprocess
import sys
from fractions import Fraction

from ..video_libs import pyav
from .draw import iter_frames
from .manifest import manifest_entry
from .spec import CONTAINERS, VideoSpec, fps_fraction, video_spec_from_dict, video_spec_to_dict

av = pyav()  # at import on purpose: before anything loads decord (see the module's note)


def _even(n: int) -> int:
    return n - (n % 2)


def _encoder_options(container: str) -> dict[str, str]:
    """Quality settings that keep flat colours within a few levels while encoding fast.

    x264's MB-tree rate control is off: on CPUs with AVX-512, x264's AVX-512 MB-tree propagation
    works on whole vectors of macroblocks past the end of a row (no tail mask), so its result
    depends on heap memory x264 never initialised, and the same frames encoded twice gave
    different bytes. Without MB-tree that code never runs; crf 23 keeps the file sizes and the
    error on flat colours about where crf 20 with MB-tree had them.
    """
    if container in ("mp4", "mkv"):
        return {"crf": "23", "preset": "veryfast", "mbtree": "0"}
    if container == "webm":
        return {"crf": "30", "b": "0", "deadline": "realtime", "cpu-used": "8", "row-mt": "0"}
    return {}


def open_stream(out, video: VideoSpec, fps: Fraction, threads: int):
    """Add the video stream with an exact 1/fps time base (so pts = frame index)."""
    muxer_codec = CONTAINERS[video.container][1]
    stream = out.add_stream(muxer_codec, rate=fps)
    stream.width, stream.height = video.width, video.height
    stream.pix_fmt = "yuv420p"
    stream.time_base = 1 / fps
    stream.codec_context.time_base = 1 / fps
    stream.codec_context.thread_count = threads
    if video.container == "avi":
        # MPEG-4 Part 2 has no CRF; bits per pixel chosen so flat colours survive.
        stream.codec_context.bit_rate = max(400_000, int(video.width * video.height * float(fps) * 0.5))
        stream.codec_context.gop_size = max(1, round(float(fps)))
    stream.codec_context.options = _encoder_options(video.container)
    return stream


@functools.lru_cache(maxsize=1)
def _vp9_encoder_usable() -> bool:
    """Whether libvpx-vp9 can be opened in this process.

    It cannot when decord was imported before PyAV (decord's bundled libvpx shadows PyAV's; the
    ABI check in libvpx then makes avcodec_open2 fail with EINVAL). Cached: the answer cannot
    change within a process.
    """
    cc = av.CodecContext.create("libvpx-vp9", "w")
    cc.width, cc.height, cc.pix_fmt = 64, 64, "yuv420p"
    cc.time_base, cc.framerate = Fraction(1, 25), Fraction(25)
    try:
        cc.open()
    except av.error.FFmpegError:
        return False
    return True


def _encode(path: str | os.PathLike, video: VideoSpec, seed: int, threads: int) -> None:
    """Encode every frame with pts = frame index in a 1/fps time base."""
    fps = fps_fraction(video.fps)
    muxer = CONTAINERS[video.container][0]
    # bitexact: no muxing date or random segment UIDs, so the same spec gives the same bytes
    with av.open(str(path), mode="w", format=muxer, container_options={"fflags": "+bitexact"}) as out:
        stream = open_stream(out, video, fps, threads)
        for i, arr in enumerate(iter_frames(video, seed)):
            frame = av.VideoFrame.from_ndarray(arr, format="rgb24")
            frame.pts = i
            frame.time_base = 1 / fps
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))


def _encode_in_subprocess(path: str | os.PathLike, video: VideoSpec, seed: int, threads: int) -> None:
    """Run _encode in a fresh interpreter (no decord loaded) when this one cannot encode VP9."""
    payload = json.dumps({"path": str(path), "video": video_spec_to_dict(video), "seed": seed, "threads": threads})
    code = "import sys; from vidsift.pipeline.shapes.encode import _encode_from_json; _encode_from_json(sys.stdin.read())"
    proc = subprocess.run([sys.executable, "-c", code], input=payload, text=True, capture_output=True)
    if proc.returncode != 0:
        raise RuntimeError(f"VP9 encode in subprocess failed for {path}:\n{proc.stderr[-2000:]}")


def _encode_from_json(payload: str) -> None:
    """Entry point of _encode_in_subprocess."""
    job = json.loads(payload)
    _encode(job["path"], video_spec_from_dict(job["video"]), job["seed"], job["threads"])


def render_video(path: str | os.PathLike, video: VideoSpec, seed: int = 0, *, threads: int = 1) -> dict:
    """Render `video` to `path` and return its manifest entry.

    Frame i gets pts i in a 1/fps time base, so decoders see an exact constant frame rate and
    n_frames = round(total duration * fps). Odd sizes are cut down to even (yuv420p needs it);
    the manifest reports the size actually encoded. Noise comes from one rng seeded by `seed`,
    so the same (video, seed) always gives the same frames. `threads=1` keeps the encoders' CPU
    use low and output reproducible; parallelise across videos instead.
    """
    video = dataclasses.replace(video, width=_even(video.width), height=_even(video.height))
    if video.container == "webm" and not _vp9_encoder_usable():
        _encode_in_subprocess(path, video, seed, threads)
    else:
        _encode(path, video, seed, threads)
    return manifest_entry(path, video)
