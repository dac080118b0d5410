"""vidsift's frame vectors equal open_clip's reference path: PIL image -> preprocess -> encode_image."""
import io
import numpy as np
import open_clip
import pytest
import torch
from PIL import Image

from vidsift.pipeline.config import IndexConfig, SamplingConfig
from vidsift.pipeline.indexing import embed_video
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


@pytest.mark.parametrize("resize_mode", ["shortest", "squash"])
@pytest.mark.parametrize("height,width", [(360, 640), (241, 321), (320, 240), (720, 1280)])
def test_frame_squares_are_pixel_identical_to_open_clip_transform(resize_mode, height, width):
    """The fast path (one PIL resize per frame + a numpy crop, thumbnails from the same image)
    gives exactly the pixels of open_clip's transform before ToTensor/Normalize."""
    from open_clip.transform import PreprocessCfg, image_transform_v2

    from vidsift.pipeline.frames import FrameTransform

    cfg = {"size": 224, "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5), "interpolation": "bicubic",
           "resize_mode": resize_mode}
    reference = image_transform_v2(PreprocessCfg(**cfg), is_train=False)
    geometric = [t for t in reference.transforms if type(t).__name__ in ("Resize", "CenterCrop")]
    frames = np.random.default_rng(height).integers(0, 256, (3, height, width, 3), dtype=np.uint8)
    squares, thumbnails = FrameTransform.from_preprocess_cfg(cfg).squares_and_thumbnails(frames, 108)
    for frame, square in zip(frames, squares):
        image = Image.fromarray(frame)
        for step in geometric:
            image = step(image)
        np.testing.assert_array_equal(square, np.asarray(image))
    assert [Image.open(io.BytesIO(t)).height for t in thumbnails] == [108] * 3


def test_an_empty_batch_of_frames_gives_empty_squares():
    from vidsift.pipeline.frames import FrameTransform

    squares, thumbnails = FrameTransform(size=(224, 224)).squares_and_thumbnails(np.zeros((0, 360, 640, 3), np.uint8), 108)
    assert squares.shape == (0, 224, 224, 3) and thumbnails == []


@pytest.mark.parametrize("name,pretrained", [("shapes-tiny", ""), ("ViT-B-32", "none"), ("RN50", "none"),
                                             ("shapes-tiny", "BUNDLED_FILE")])
def test_the_drivers_preprocess_config_is_the_loaded_models(name, pretrained):
    """The job's driver learns the preprocessing without reading the weights (a model built on
    torch's meta device); the decode tasks resize with it, so it must be exactly what the model the
    actors load says (shapes-tiny squashes, open_clip's models crop the shortest side)."""
    from vidsift.models.loading import load_model, preprocess_config
    from vidsift.models.registry import bundled
    from vidsift.models.spec import resolve_spec

    if pretrained == "BUNDLED_FILE":  # a local checkpoint of a model with our own preprocessing
        pretrained = str(bundled("shapes-tiny").weights_path)
    spec = resolve_spec(name, pretrained)
    assert preprocess_config(spec) == load_model(spec).preprocess_cfg
    if name == "shapes-tiny":
        assert preprocess_config(spec)["resize_mode"] == "squash"


def test_the_drivers_preprocess_config_fails_fast_on_missing_weights(tmp_path):
    from vidsift.models.loading import ModelUnavailableError, preprocess_config
    from vidsift.models.spec import resolve_spec

    with pytest.raises(ModelUnavailableError, match="does not exist"):
        preprocess_config(resolve_spec("ViT-B-32", str(tmp_path / "nope.safetensors")))
    with pytest.raises(ModelUnavailableError, match="Unknown model"):
        preprocess_config(resolve_spec("no-such-model", "none"))


def test_both_runners_store_identical_rows_and_the_same_index_state(tmp_path, small_archive):
    """The default local pipeline and the Ray job (``--address local``) run the same per-video
    code and the same job rules: the same files give the same rows (vectors within 1e-5, every
    other column equal but the commit time), the same failure records and the same index state."""
    import json

    from vidsift.pipeline.store import VideoStore
    from tests.conftest import run_cli

    folder = tmp_path / "in"
    for path in small_archive.rglob("*.*"):
        target = folder / path.relative_to(small_archive)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(path)
    (folder / "notes.mp4").write_text("not a video\n")
    stores = {}
    for runner, extra in (("local", []), ("ray", ["--address", "local"])):
        result = run_cli("index", folder, "--db", tmp_path / runner, "--model", "shapes-tiny", "--json", *extra)
        assert result.returncode == 3, result.stderr
        assert json.loads(result.stdout)["runner"] == runner
        stores[runner] = VideoStore(str(tmp_path / runner))
    local, ray = stores["local"], stores["ray"]
    (model,) = local.archive_models()
    local_tables, ray_tables = local.model(model), ray.model(model)
    for name, key in (("videos", "video_id"), ("segments", "segment_id"), ("frames", "frame_id")):
        got = {r[key]: r for r in getattr(local_tables, name)().to_arrow().to_pylist()}
        want = {r[key]: r for r in getattr(ray_tables, name)().to_arrow().to_pylist()}
        assert got.keys() == want.keys() and len(got) >= 3, name
        for k, row in got.items():
            assert np.allclose(row["vector"], want[k]["vector"], atol=1e-5), (name, k)
            assert {c: v for c, v in row.items() if c not in ("vector", "indexed_at")} == \
                {c: v for c, v in want[k].items() if c not in ("vector", "indexed_at")}, (name, k)
    assert [(f["path"], f["stage"], f["reason"]) for f in local.failures()] == \
        [(f["path"], f["stage"], f["reason"]) for f in ray.failures()]
    assert local_tables.has_vector_index() == ray_tables.has_vector_index()
    assert len(local_tables.segments().to_lance().get_fragments()) == \
        len(ray_tables.segments().to_lance().get_fragments())  # both compacted the same way


def test_an_upload_gets_the_same_rows_from_the_app_and_from_the_cli(tmp_path, small_archive):
    """The app's "add to archive" (the upload copied into its uploads folder, then indexed), and the
    copy indexed from the shell with ``--no-ray`` and with the default runner, give the same rows
    (vectors within 1e-5, every other column equal but the commit time) and the same index state.
    With the test above (default runner against the Ray job), the four ways to index a file agree."""
    import json

    from vidsift.app.app_config import AppConfig
    from vidsift.app.service import VidsiftService
    from vidsift.models.spec import resolve_spec
    from vidsift.pipeline.store import VideoStore
    from tests.conftest import run_cli

    spec = resolve_spec("shapes-tiny")
    service = VidsiftService(AppConfig(db=str(tmp_path / "app"), spec=spec, work_dir=str(tmp_path / "work")))
    added = service.add_to_archive(str(small_archive / "a.mp4"), tags=[])
    assert not added.already and added.frames > 0
    stores = {"app": service.store}
    for runner, extra in (("no-ray", ["--no-ray"]), ("local", [])):
        result = run_cli("index", added.dest, "--db", tmp_path / runner, "--model", "shapes-tiny", "--json", *extra)
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["exit_status"] == 0
        stores[runner] = VideoStore(str(tmp_path / runner))
    tables = {name: store.model(spec) for name, store in stores.items()}
    app = tables.pop("app")
    for name, key in (("videos", "video_id"), ("segments", "segment_id"), ("frames", "frame_id")):
        want = {r[key]: r for r in getattr(app, name)().to_arrow().to_pylist()}
        assert len(want) >= 1, name
        for runner, other in tables.items():
            got = {r[key]: r for r in getattr(other, name)().to_arrow().to_pylist()}
            assert got.keys() == want.keys(), (runner, name)
            for k, row in got.items():
                assert np.allclose(row["vector"], want[k]["vector"], atol=1e-5), (runner, name, k)
                assert {c: v for c, v in row.items() if c not in ("vector", "indexed_at")} == \
                    {c: v for c, v in want[k].items() if c not in ("vector", "indexed_at")}, (runner, name, k)
            assert other.has_vector_index() == app.has_vector_index(), runner
            assert len(other.segments().to_lance().get_fragments()) == \
                len(app.segments().to_lance().get_fragments()), runner
