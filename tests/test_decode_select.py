"""Which decoder a video gets, and the fallback from the GPU decoder to the CPU one, on a machine
with no GPU: the GPU side is played by stand-ins (``GpuProbe``) that decode on the CPU, or by a
fake torchcodec decoder feeding the real ``gpu_decode.read_sampled`` CPU tensors. Needs neither a
GPU nor torchcodec."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from vidsift.pipeline import decoders, gpu_decode, pyav_decode
from vidsift.pipeline.config import IndexConfig, SamplingConfig
from vidsift.pipeline.decode import decode_video
from vidsift.pipeline.decoders import GpuProbe, choose_decoder
from vidsift.pipeline.frames import FrameTransform
from vidsift.pipeline.video_libs import pyav
from tests.conftest import make_video

TRANSFORM = FrameTransform(size=(64, 64), resize_mode="squash")
CONFIG = IndexConfig(sampling=SamplingConfig(fps=4.0), decode_chunk=4)


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    path = tmp_path_factory.mktemp("select") / "v.mp4"
    make_video(path, fps=24, durations=(2.0, 2.0), size=(320, 240))
    return str(path)


def _never(*_args, **_kwargs):
    raise AssertionError("the GPU side must not be asked")


class CpuStandIn:
    """Plays torchcodec's decoder: frames by index from a full PyAV decode, as CPU tensors."""

    def __init__(self, path: str, shift_s: float = 0.0):
        with pyav().open(path) as container:
            stream = container.streams.video[0]
            frames = sorted(container.decode(stream), key=lambda f: f.pts)
            self.pixels = [f.to_ndarray(format="rgb24") for f in frames]
            self.stamps = [float(f.pts * stream.time_base) + shift_s for f in frames]

    def get_frames_at(self, indices):
        class Batch:
            data = torch.from_numpy(np.stack([self.pixels[i] for i in indices]))
            pts_seconds = torch.tensor([self.stamps[i] for i in indices], dtype=torch.float64)
        return Batch()


def _decode(video, config=CONFIG, probe=None):
    info, chunks = decode_video(video, TRANSFORM, config, gpu_probe=probe)
    chunks = list(chunks)
    return info, chunks, np.concatenate([c.times for c in chunks]), np.concatenate([c.pixels for c in chunks])


@pytest.mark.parametrize("probe,name,reason", [
    # No GPU decoder on this machine: decord, the project's decoder (decoder-side resize).
    (GpuProbe(installed=lambda: False, cuda_available=_never, open_decoder=_never), "decord",
     "torchcodec is not installed"),
    (GpuProbe(installed=lambda: True, cuda_available=lambda: False, open_decoder=_never), "decord", "no CUDA device"),
    # A GPU decoder that cannot take this file: PyAV, the GPU path's own fallback.
    (GpuProbe(installed=lambda: True, cuda_available=lambda: True,
              open_decoder=lambda p, t: (_ for _ in ()).throw(ImportError("libavutil.so.58: cannot open"))),
     "cpu", "torchcodec cannot load (libavutil.so.58: cannot open)"),
    (GpuProbe(installed=lambda: True, cuda_available=lambda: True,
              open_decoder=lambda p, t: (_ for _ in ()).throw(RuntimeError("Unsupported codec for NVDEC"))),
     "cpu", "torchcodec cannot open it on the GPU (Unsupported codec for NVDEC)"),
])
def test_without_a_usable_gpu_decoder_the_cpu_decodes_and_the_reason_is_recorded(video, probe, name, reason):
    choice, gpu = choose_decoder(video, CONFIG, probe)
    assert (choice.name, gpu) == (name, None) and reason in choice.reason
    info, chunks, times, _ = _decode(video, probe=probe)
    assert info.decoder == name and reason in info.decoder_reason
    assert {c.decoder for c in chunks} == {name} and len(times) == 16


def test_the_cpu_and_decord_choices_never_ask_for_a_gpu(video):
    never = GpuProbe(installed=_never, cuda_available=_never, open_decoder=_never)
    for name in ("cpu", "decord"):
        choice, gpu = choose_decoder(video, IndexConfig(decoder=name), never)
        assert (choice.name, gpu) == (name, None)
    info, chunks, _, _ = _decode(video, IndexConfig(sampling=SamplingConfig(fps=4.0), decoder="decord"), never)
    assert info.decoder == "decord" and {c.decoder for c in chunks} == {"decord"}
    with pytest.raises(ValueError, match="decoder must be one of"):
        choose_decoder(video, IndexConfig(decoder="nvdec"), never)


def test_this_machines_own_answer_is_a_decoder_with_a_reason(video):
    choice, gpu = choose_decoder(video, CONFIG)
    usable = gpu_decode.torchcodec_installed() and gpu_decode.cuda_available()
    assert choice.reason and choice.name in (("gpu", "cpu") if usable else ("decord",))
    assert (gpu is not None) == (choice.name == "gpu")


def test_a_working_gpu_decoder_is_chosen_and_gives_the_cpu_paths_frames_and_times(video):
    probe = GpuProbe(installed=lambda: True, cuda_available=lambda: True, open_decoder=lambda p, t: CpuStandIn(p))
    info, chunks, times, pixels = _decode(video, probe=probe)
    assert info.decoder == "gpu" and {c.decoder for c in chunks} == {"gpu"}
    cpu_info, _, cpu_times, cpu_pixels = _decode(video, IndexConfig(sampling=SamplingConfig(fps=4.0), decoder="cpu"))
    np.testing.assert_array_equal(times, cpu_times)
    # the stand-in resizes with torch's antialiased bicubic, the CPU path with swscale's bicubic
    assert np.abs(pixels.astype(int) - cpu_pixels).mean() < 2.0


def test_a_gpu_decoder_failing_mid_video_hands_the_rest_to_the_cpu(video):
    def failing_read(decoder, index, wanted, size):
        for n, item in enumerate(gpu_decode.read_sampled(decoder, index, wanted, size, batch=4)):
            if n == 6:
                raise RuntimeError("CUDA error: an illegal memory access was encountered")
            yield item

    probe = GpuProbe(installed=lambda: True, cuda_available=lambda: True, open_decoder=lambda p, t: CpuStandIn(p),
                     read=failing_read)
    info, chunks, times, pixels = _decode(video, probe=probe)
    assert info.decoder == "gpu"
    assert [c.decoder for c in chunks] == ["gpu", "cpu+gpu", "cpu", "cpu"]
    _, _, cpu_times, _ = _decode(video, IndexConfig(sampling=SamplingConfig(fps=4.0), decoder="cpu"))
    np.testing.assert_array_equal(times, cpu_times)  # every sampled frame once, in order


def test_gpu_frames_at_other_times_than_planned_are_refused(video):
    """The real read_sampled checks each frame's stamp against the plan; a decoder whose frames are
    a frame off is not trusted, and the CPU decodes the video."""
    index = pyav_decode.scan(video)
    wanted = np.arange(0, len(index), 6)
    shifted = CpuStandIn(video, shift_s=1 / 24)
    with pytest.raises(gpu_decode.GpuMismatch):
        list(gpu_decode.read_sampled(shifted, index, wanted, None))
    probe = GpuProbe(installed=lambda: True, cuda_available=lambda: True, open_decoder=lambda p, t: shifted)
    reader = decoders.SampledReader(video, index, None, 1, shifted, probe)
    got = list(reader.frames(wanted))
    assert [name for name, _, _ in got] == ["cpu"] * len(wanted) and "GPU decoding stopped" in reader.fallback


def test_gpu_resize_keeps_the_shape_asked_for():
    frames = torch.randint(0, 256, (2, 240, 320, 3), dtype=torch.uint8)
    small = gpu_decode.resize_on_device(frames, (108, 144))
    assert small.shape == (2, 108, 144, 3) and small.dtype == torch.uint8
    assert gpu_decode.resize_on_device(frames, None) is frames
