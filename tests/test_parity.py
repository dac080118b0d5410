"""vidsift's frame vectors equal open_clip's reference path: PIL image -> preprocess -> encode_image."""
import numpy as np
import open_clip
import pytest
import torch
from PIL import Image

from pipeline.config import IndexConfig, SamplingConfig
from pipeline.indexing import embed_video
from tests.conftest import make_video


@pytest.mark.parametrize("size", [(640, 360), (320, 240)])
def test_frame_vectors_match_open_clip_reference(tmp_path, random_vit, size):
    import decord

    path = tmp_path / "v.mp4"
    make_video(path, fps=24, durations=(2.0, 2.0), size=size)
    config = IndexConfig(sampling=SamplingConfig(fps=2.0))
    ours = embed_video(str(path), random_vit, config)

    _, _, preprocess = open_clip.create_model_and_transforms("ViT-B-32", pretrained=None)
    reader = decord.VideoReader(str(path))
    stamps = np.asarray(reader.get_frame_timestamp(np.arange(len(reader))))[:, 0]
    indices = [int(np.nonzero(np.isclose(stamps, t))[0][0]) for t in ours.times]
    frames = reader.get_batch(indices).asnumpy()
    batch = torch.stack([preprocess(Image.fromarray(frame)) for frame in frames])
    with torch.inference_mode():
        reference = random_vit.model.encode_image(batch, normalize=True).numpy()

    cosine = (reference * ours.vectors).sum(axis=1)
    assert len(cosine) == 8
    assert cosine.min() >= 0.999, cosine
