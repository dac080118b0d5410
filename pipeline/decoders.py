"""Which decoder reads a video, and the decode stage built on it: plan, decode, transform, chunk.

Selection (``choose_decoder``, ``decoder="auto"``): the GPU decoder (NVDEC through torchcodec,
``pipeline.gpu_decode``) when a CUDA device is there, torchcodec imports, and it opens this file on
the device; with no CUDA device or no torchcodec, decord (``pipeline.decode``, with decoder-side
resize), the project's decoder; when torchcodec is there but cannot open this file, PyAV
(``pipeline.pyav_decode``). The reason is recorded on the video's ``VideoInfo.decoder_reason``.
A GPU decoder that fails or returns other frames mid-video hands the rest of the plan to PyAV,
from the first frame it did not deliver; each chunk says which decoder made it
(``FrameChunk.decoder``). ``decoder="cpu"`` asks for PyAV, ``"decord"`` for decord.

What every path keeps: file checks and the header read first (``pipeline.container``), errors in
words naming the file and cause, the truncation check from a sequential read
(``pipeline.truncation``), and a plan clamped to the frames that really exist and decode.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np

from . import gpu_decode, pyav_decode, video_libs
from .config import DECODERS, IndexConfig
from .container import FrameChunk, VideoInfo, ffmpeg_reason
from .errors import VideoError
from .frames import FrameTransform
from .sampling import plan_frame_indices
from .truncation import raise_if_truncated

log = logging.getLogger("vidsift.decode")


@dataclass(frozen=True)
class DecoderChoice:
    """The decoder a video gets, and why (shown with the video's record)."""

    name: str    # "gpu" | "cpu" | "decord"
    reason: str


@dataclass(frozen=True)
class GpuProbe:
    """How the selection asks for the GPU decoder. The defaults ask torch and torchcodec; tests
    pass stand-ins, so the selection and the fallback are tested on machines with no GPU."""

    installed: Callable[[], bool] = gpu_decode.torchcodec_installed
    cuda_available: Callable[[], bool] = gpu_decode.cuda_available
    open_decoder: Callable[[str, int], object] = gpu_decode.open_gpu_decoder
    read: Callable[..., Iterator[tuple[int, np.ndarray]]] = gpu_decode.read_sampled


DEFAULT_PROBE = GpuProbe()


def choose_decoder(path: str, config: IndexConfig, probe: GpuProbe = DEFAULT_PROBE) -> tuple[DecoderChoice, object]:
    """(choice, the opened GPU decoder or None). Never raises for a missing GPU or library: the
    CPU decoder is the answer, with the reason."""
    if config.decoder not in DECODERS:
        raise ValueError(f"decoder must be one of {', '.join(DECODERS)}, got {config.decoder!r}")
    decord = decord_reason(config, probe)
    if decord is not None:
        return DecoderChoice("decord", decord), None
    if config.decoder == "cpu":
        return DecoderChoice("cpu", "CPU decoder asked for"), None
    if not probe.installed():
        return _cpu(config, "torchcodec is not installed (pip install 'vidsift[gpu]')"), None
    if not probe.cuda_available():
        return _cpu(config, "no CUDA device"), None
    try:
        decoder = probe.open_decoder(path, config.decode_threads)
    except ImportError as exc:
        return _cpu(config, f"torchcodec cannot load ({_short(exc)})"), None
    except Exception as exc:  # torchcodec's errors: the codec has no NVDEC support, a broken file...
        return _cpu(config, f"torchcodec cannot open it on the GPU ({_short(exc)})"), None
    return DecoderChoice("gpu", "CUDA device, torchcodec opened it"), decoder


def decord_reason(config: IndexConfig, probe: GpuProbe = DEFAULT_PROBE) -> str | None:
    """Why decord decodes this job (the default on a machine without a usable GPU decoder), or None
    when the GPU decoder (or PyAV, asked for with ``cpu``) does. Asks for no file."""
    if config.decoder not in DECODERS:
        raise ValueError(f"decoder must be one of {', '.join(DECODERS)}, got {config.decoder!r}")
    if config.decoder == "decord":
        return "decord asked for"
    if config.decoder != "auto":
        return None
    if not probe.installed():
        return "decord: no GPU decoder (torchcodec is not installed: pip install 'vidsift[gpu]')"
    if not probe.cuda_available():
        return "decord: no GPU decoder (no CUDA device)"
    return None


def _cpu(config: IndexConfig, why: str) -> DecoderChoice:
    choice = DecoderChoice("cpu", f"CPU decoder: {why}")
    (log.warning if config.decoder == "gpu" else log.debug)("%s", choice.reason)
    return choice


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:160]


@dataclass
class SampledReader:
    """The frames of one plan: from the GPU decoder while it delivers, then from the CPU decoder.
    ``fallback`` says why the CPU took over mid-video (None while it has not)."""

    path: str
    index: pyav_decode.StreamIndex
    size: tuple[int, int] | None
    threads: int
    gpu: object = None
    probe: GpuProbe = DEFAULT_PROBE
    fallback: str | None = field(default=None, init=False)

    def frames(self, wanted: np.ndarray) -> Iterator[tuple[str, int, np.ndarray]]:
        """Yield (decoder name, frame number, RGB frame) for each of ``wanted``, in order."""
        wanted = np.asarray(wanted, dtype=np.int64)
        done = -1
        if self.gpu is not None and self.fallback is None:
            try:
                for i, frame in self.probe.read(self.gpu, self.index, wanted, self.size):
                    done = i
                    yield "gpu", i, frame
                return
            except Exception as exc:  # any GPU failure: the CPU decodes what is left
                self.fallback = f"GPU decoding stopped ({_short(exc)}); the rest decoded on the CPU"
                log.warning("%s: %s", self.path, self.fallback)
        for i, frame in pyav_decode.read_sampled(self.path, self.index, wanted[wanted > done], self.size,
                                                 threads=self.threads):
            yield "cpu", i, frame


def stream_info(path: str, index: pyav_decode.StreamIndex):
    """``VideoInfo`` fields from the scan, or ``VideoError`` for a stream nothing can be made of."""
    if len(index) == 0:
        raise VideoError(path, "open", "the video stream has no frames")
    duration = index.duration
    if duration <= 0 or not np.isfinite(duration):
        raise VideoError(path, "open", f"invalid duration {duration!r}")
    return duration


def decode_sampled(path: str, facts, transform: FrameTransform, config: IndexConfig,
                   probe: GpuProbe = DEFAULT_PROBE):
    """The decode stage without decord: scan, check, plan, then a lazy iterator of chunks.
    ``facts`` is the header's ``ContainerFacts`` (already read by ``decode.decode_video``)."""
    index = pyav_decode.scan(path)  # reads every packet: the truncation check needs no other read
    raise_if_truncated(path, facts, span=(index.video_end, index.file_end))
    duration = stream_info(path, index)
    choice, gpu = choose_decoder(path, config, probe)
    size = None
    if config.decoder_resize and index.height > 0 and index.width > 0:
        size = pyav_decode.decode_size(transform, index.height, index.width, config.thumbnail_height)
    info = VideoInfo(path=path, duration=duration, fps=index.fps, width=index.width, height=index.height,
                     n_frames=len(index), decoder=choice.name, decoder_reason=choice.reason)
    indices = plan_frame_indices(index.starts, duration, config.sampling, keyframes=index.keyframe)
    reader = SampledReader(path, index, size, config.decode_threads, gpu, probe)
    starts = index.starts

    def chunks() -> Iterator[FrameChunk]:
        av = video_libs.pyav()
        batch: list[tuple[str, int, np.ndarray]] = []
        try:
            for item in reader.frames(indices):
                batch.append(item)
                if len(batch) == config.decode_chunk:
                    yield _chunk(batch, starts, transform, config)
                    batch = []
        except av.error.FFmpegError as exc:
            raise VideoError(path, "decode", ffmpeg_reason(exc)) from None
        if batch:
            yield _chunk(batch, starts, transform, config)

    return info, chunks()  # truncation was decided from the scan above, whatever decoding meets


def _chunk(batch, starts: np.ndarray, transform: FrameTransform, config: IndexConfig) -> FrameChunk:
    names = {name for name, _, _ in batch}
    idx = np.array([i for _, i, _ in batch], dtype=np.int64)
    frames = np.stack([frame for _, _, frame in batch])
    squares, thumbs = transform.squares_and_thumbnails(frames, config.thumbnail_height)
    return FrameChunk(pixels=squares, times=starts[idx], thumbnails=thumbs, decoder="+".join(sorted(names)))
