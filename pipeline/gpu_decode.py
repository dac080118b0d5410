"""Sampled frames decoded on the GPU (NVDEC) through torchcodec's CUDA build.

Why torchcodec: it is maintained (PyTorch's own), decodes with NVDEC when given ``device="cuda"``
and returns frames as CUDA tensors with their presentation stamps, so the resize to the model's
size runs on the GPU and only small frames cross to the host. It needs FFmpeg 4-9 on the system
(Debian ``ffmpeg``) and its PyPI wheels are CUDA builds matching torch 2.14.1; it is an optional
extra (``pip install 'vidsift[gpu]'``), never needed by the tests.

The frames to decode are planned from the CPU scan (``pyav_decode.scan``), and every frame that
comes back is checked against the plan by its presentation stamp: a mismatch raises
``GpuMismatch`` and the caller decodes the rest on the CPU (``pipeline.decoders``). NVDEC converts
YUV to RGB with its own arithmetic, so pixels differ from swscale's by a few levels;
``bench/gpu.py`` measures the difference and the vectors' cosine on a GPU machine.
"""
from __future__ import annotations

import importlib.util
from collections.abc import Iterator

import numpy as np

from .pyav_decode import StreamIndex

BATCH = 16  # frames asked of the GPU decoder at once (one chunk of the pipeline)


class GpuMismatch(RuntimeError):
    """The GPU decoder returned other frames than the plan's (stamps differ): use the CPU."""


def torchcodec_installed() -> bool:
    """Whether torchcodec is there at all, without importing it (or torch): the common answer on
    a CPU machine costs nothing."""
    return importlib.util.find_spec("torchcodec") is not None


def cuda_available() -> bool:
    """A CUDA device torch can use (False when torch has no CUDA or sees no device)."""
    try:  # lazy: asked only when torchcodec is installed; a CPU decoding process never loads torch (~3 s)
        import torch
    except ImportError:
        return False
    try:
        return bool(torch.cuda.is_available())
    except Exception:  # a broken driver install raises from inside torch
        return False


def open_gpu_decoder(path: str, threads: int = 1):
    """torchcodec's decoder of ``path`` on the current CUDA device. Raises ImportError when
    torchcodec (or its FFmpeg) is missing, and its own error when it cannot open the file there."""
    from torchcodec.decoders import VideoDecoder  # lazy: an optional extra; its ImportError is the answer

    return VideoDecoder(path, device="cuda", dimension_order="NHWC", seek_mode="exact",
                        num_ffmpeg_threads=max(1, int(threads)))


def resize_on_device(frames, size: tuple[int, int] | None):
    """uint8 (N,H,W,3) tensor -> uint8 (N,h,w,3) at ``size`` (h, w): bicubic with antialias (PIL's
    filter, as the CPU path's swscale bicubic approximates it), on the frames' device."""
    if size is None or tuple(frames.shape[1:3]) == tuple(size):
        return frames
    import torch.nn.functional as F  # lazy: loaded already when frames are CUDA tensors (see cuda_available)

    x = frames.permute(0, 3, 1, 2).float()
    x = F.interpolate(x, size=size, mode="bicubic", antialias=True, align_corners=False)
    return x.round_().clamp_(0, 255).to(frames.dtype).permute(0, 2, 3, 1)


def read_sampled(decoder, index: StreamIndex, wanted: np.ndarray, size: tuple[int, int] | None = None,
                 batch: int = BATCH) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(frame number, RGB frame)`` for ``wanted`` (frame numbers into ``index``), decoded
    on the GPU ``batch`` at a time; each frame's stamp must be the plan's."""
    tick = float(index.time_base)
    rate = index.fps or 30.0
    tolerance = max(0.5 / rate, 1.5 * tick)
    for begin in range(0, len(wanted), batch):
        chunk = [int(i) for i in wanted[begin:begin + batch]]
        got = decoder.get_frames_at(chunk)
        stamps = np.asarray(got.pts_seconds.cpu(), dtype=np.float64)
        expected = index.pts[chunk].astype(np.float64) * tick
        if len(stamps) != len(chunk) or np.abs(stamps - expected).max() > tolerance:
            raise GpuMismatch(f"GPU frames at {stamps[:3].round(3).tolist()} s, the plan's at "
                              f"{expected[:3].round(3).tolist()} s")
        pixels = resize_on_device(got.data, size).cpu().numpy()
        yield from zip(chunk, pixels)
