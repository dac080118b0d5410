"""Tests of the contrastive trainer (models/train.py), its data (pipeline/training_data.py,
pipeline/shapes/training_data.py) and the
bundled shapes-tiny weights it produced (scripts/train_shapes_tiny.py).

The last test is the semantic one: freshly rendered shapes-world videos, decoded and preprocessed
exactly as indexing does (decord -> FrameTransform -> ClipEncoder), must be recognised zero-shot
over all 28 labels by the bundled model.
"""
from __future__ import annotations

import json
import math

import numpy as np
import open_clip
import pytest
import torch
from open_clip import ClipLoss
from PIL import Image
from safetensors.torch import load_file

# shapes.archive loads PyAV before decord (see pipeline/video_libs.py on libvpx).
from vidsift.pipeline.shapes.archive import synthesize_archive
from vidsift.pipeline.shapes.draw import render_frame
from vidsift.pipeline.shapes.manifest import manifest_scenes
from vidsift.pipeline.shapes.spec import SceneSpec, VideoSpec
from vidsift.pipeline.shapes.training_data import ShapesWorldFrames, load_training_set, shapes_val_set
from vidsift.pipeline.shapes.world import HELDOUT, all_labels, caption_variants, label
from vidsift.pipeline.classify import ZeroShotClassifier
from vidsift.pipeline.frames import FrameTransform
from vidsift.pipeline.training_data import CaptionCSVFrames, decode_at, scene_times
from vidsift.models.encoder import ClipEncoder
from vidsift.models.registry import bundled
from vidsift.models.spec import ModelSpec
from vidsift.models.train import (
    Collate,
    DistinctGroupBatchSampler,
    TrainConfig,
    ValData,
    build_model,
    checkpoint_paths,
    evaluate,
    lr_at,
    make_optimizer,
    train,
)
from tests.conftest import run_cli

SEEN = [("red", "circle"), ("red", "star"), ("blue", "square"), ("green", "triangle"),
        ("white", "circle"), ("yellow", "star"), ("orange", "square"), ("purple", "triangle")]


@pytest.fixture(autouse=True)
def _few_threads():
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(threads)


def _frame(colour: str, shape: str, k: int, size=(160, 120)) -> np.ndarray:
    rng = np.random.default_rng(k)
    scene = SceneSpec(colour, shape, 2.0, size_frac=float(rng.uniform(0.25, 0.45)),
                            x0=float(rng.uniform(0.2, 0.8)), y0=float(rng.uniform(0.2, 0.8)),
                            rotation0=float(rng.uniform(0, 6.28)))
    video = VideoSpec([scene], width=size[0], height=size[1], background=("black", "gray")[k % 2])
    return render_frame(video, scene, 0.0)


class TinySet(torch.utils.data.Dataset):
    """Two frames of each of eight labels, captioned with a random phrasing; ``groups`` = label."""

    def __init__(self):
        self.items = [(_frame(c, s, k), c, s) for c, s in SEEN for k in range(2)]
        self.groups = [label(c, s) for _, c, s in self.items]

    def __len__(self):
        return len(self.items)

    def __getitem__(self, index):
        frame, colour, shape = self.items[index]
        return frame, caption_variants(colour, shape)[index % 5]


def _tiny_val() -> ValData:
    labels = all_labels()
    images = [_frame(c, s, 10 + k)[:64, :64] for k, (c, s) in enumerate(SEEN)]
    return ValData(images=images, labels=[labels.index(label(c, s)) for c, s in SEEN], classnames=labels,
                   templates=("{}", "a photo of {}."), splits={"heldout": [labels.index(label(*p)) for p in HELDOUT]})


def _cfg(tmp_path, **kw) -> TrainConfig:
    base = dict(out_dir=str(tmp_path / "run"), epochs=2, steps_per_epoch=3, batch_size=8, lr=1e-3,
                warmup_steps=2, seed=3, progress=False, export_dtype="fp16")
    return TrainConfig(**{**base, **kw})


def test_steps_decrease_loss(tmp_path):
    """Repeated steps on one batch: the loss is finite and falls (the model and loss are wired right)."""
    cfg = _cfg(tmp_path)
    model, train_tf, _, tokenizer = build_model(cfg, torch.device("cpu"))
    optimizer = make_optimizer(model, cfg)
    decayed = {id(p) for p in optimizer.param_groups[1]["params"]}
    named = dict(model.named_parameters())
    assert id(named["logit_scale"]) not in decayed and id(named["token_embedding.weight"]) not in decayed
    assert id(named["transformer.resblocks.0.mlp.c_fc.bias"]) not in decayed
    assert id(named["visual.bn1.weight"]) not in decayed and id(named["visual.conv1.weight"]) in decayed
    assert id(named["transformer.resblocks.0.mlp.c_fc.weight"]) in decayed
    data = TinySet()
    images, texts = Collate(train_tf, tokenizer)([data[i] for i in range(0, 16, 2)])
    assert images.shape == (8, 3, 64, 64) and texts.shape == (8, 32)
    loss_fn, losses = ClipLoss(), []
    for _ in range(8):
        out = model(images, texts)
        loss = loss_fn(out["image_features"], out["text_features"], out["logit_scale"])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < losses[0] - 0.3, losses


def test_schedule_and_sampler():
    cfg = TrainConfig(lr=1.0, warmup_steps=10, min_lr=0.0)
    assert lr_at(0, 110, cfg) == pytest.approx(0.1) and lr_at(9, 110, cfg) == pytest.approx(1.0)
    assert lr_at(60, 110, cfg) == pytest.approx(0.5) and lr_at(110, 110, cfg) == pytest.approx(0.0)
    groups = ["a"] * 5 + ["b"] * 3 + ["c"] * 2
    sampler = DistinctGroupBatchSampler(groups, batch_size=5, n_batches=20, seed=0)
    batches = list(sampler)
    assert len(batches) == 20 and all(len(b) == 3 for b in batches)  # capped at the number of groups
    assert all(len({groups[i] for i in b}) == len(b) for b in batches)
    assert {i for b in batches for i in b} == set(range(10))


def test_train_checkpoint_resume_export(tmp_path):
    """A run interrupted after epoch 1 and resumed ends bit-identical to an uninterrupted run; the
    export loads through open_clip and through vidsift's own loader."""
    data, val = TinySet(), _tiny_val()
    full = train(_cfg(tmp_path), data, val)
    out = tmp_path / "run"
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2] and [r["step"] for r in records] == [3, 6]
    assert all(math.isfinite(r["loss"]) for r in records)
    assert {"all/zs_top1", "all/zs_top1_bare", "all/r1"} <= set(records[0])
    assert [p.name for p in checkpoint_paths(out)] == ["epoch_0001.pt", "epoch_0002.pt"]
    assert full["export_cosine"] > 0.999

    # Crash during epoch 2: its checkpoint never got written. Resume redoes epoch 2 only.
    reference = load_file(full["weights"])
    checkpoint_paths(out)[-1].unlink()
    resumed = train(_cfg(tmp_path, resume=True, export_path=str(tmp_path / "resumed.safetensors")), data, val)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [3, 6, 6]
    again = load_file(resumed["weights"])
    assert reference.keys() == again.keys()
    assert all(torch.equal(reference[k], again[k]) for k in reference)

    model, _, _ = open_clip.create_model_and_transforms("shapes-tiny", pretrained=full["weights"])
    encoder = ClipEncoder.from_spec(ModelSpec("shapes-tiny", full["weights"]))
    assert encoder.image_size == (64, 64) and encoder.preprocess_cfg["resize_mode"] == "squash"
    pixels = np.stack(val.images[:2])
    assert encoder.encode_pixels(pixels).shape == (2, 128)
    tokens = open_clip.get_tokenizer("shapes-tiny")(["a red circle"])
    with torch.no_grad():
        direct = model.encode_text(tokens, normalize=True).numpy()
    assert np.allclose(direct, encoder.encode_texts(["a red circle"]), atol=1e-5)


def test_evaluate_reports_splits():
    cfg = TrainConfig(pretrained=None)
    model, _, val_tf, tokenizer = build_model(cfg, torch.device("cpu"))
    metrics = evaluate(model, tokenizer, _tiny_val(), val_tf, torch.device("cpu"), "fp32")
    assert metrics["all/n"] == len(SEEN)
    assert 0.0 <= metrics["all/zs_top1"] <= 1.0 and 0.0 <= metrics["all/r1"] <= 1.0
    assert "heldout/zs_top1" not in metrics  # no held-out frame in this set


def test_training_data_from_archive_and_csv(tmp_path):

    manifest = synthesize_archive(tmp_path / "a", 2, seed=5, n_scenes=2, scene_len=(2.0, 2.5),
                                        fps_choices=(10,), formats=("mp4",), max_size=(320, 240))
    times = scene_times(2.0, 4.0, 4)
    assert times.min() >= 2.25 and times.max() <= 3.75
    data = ShapesWorldFrames(tmp_path / "a", frames_per_scene=3, cache_size=32)
    assert len(data) == 12 and data.frames.shape == (12, 32, 32, 3)
    image, caption = data[0]
    scene = manifest["videos"][0]["scenes"][0]
    assert image.size == (32, 32) and f"{scene['colour']} {scene['shape']}" in caption
    assert data.groups[0] == scene["label"]
    assert len(data.pairs()) >= 2

    val = shapes_val_set(tmp_path / "a", 64, frames_per_scene=2)
    assert len(val.images) == 8 and val.images[0].shape == (64, 64, 3)
    assert [val.classnames[i] for i in val.labels[:2]] == [scene["label"]] * 2

    video = manifest["videos"][0]["path"]
    image_path = tmp_path / "still.png"
    Image.fromarray(_frame("red", "star", 0)).save(image_path)
    csv_path = tmp_path / "captions.csv"
    csv_path.write_text(f"path,start,end,caption\na/{video},0.5,1.5,a thing\n{image_path},,,a red star\n")
    rows = CaptionCSVFrames(csv_path, frames_per_row=3, cache_size=48)
    assert len(rows) == 4 and rows.groups == ["a thing"] * 3 + ["a red star"]
    assert rows[3][0].size == (48, 48) and rows[3][1] == "a red star"
    assert len(load_training_set(csv_path, cache_size=48, frames_per_row=3)) == 4
    assert len(load_training_set(tmp_path / "a", cache_size=32, frames_per_scene=1)) == 4


BUNDLED = bundled("shapes-tiny")


def test_bundled_weights_recognise_fresh_shapes(tmp_path):
    """Fresh renders (a seed never used in training) through the real decode + preprocessing path."""

    assert BUNDLED.weights_path.stat().st_size < 30e6
    synthesize_archive(tmp_path / "fresh", 8, seed=424242, n_scenes=4, scene_len=(2.0, 2.5),
                             fps_choices=(10, 25), max_size=(640, 480))
    encoder = ClipEncoder.from_spec(ModelSpec("shapes-tiny", ""))
    transform = FrameTransform.from_preprocess_cfg(encoder.preprocess_cfg)
    labels = all_labels()
    text = encoder.encode_texts(labels)
    pixels, truth = [], []
    for scene in manifest_scenes(tmp_path / "fresh"):
        middle = (scene["start"] + scene["end"]) / 2
        pixels.append(decode_at(scene["path"], [middle], transform)[0])
        truth.append(labels.index(label(scene["colour"], scene["shape"])))
    predicted = (encoder.encode_pixels(np.stack(pixels)) @ text.T).argmax(1)
    truth = np.array(truth)
    heldout = np.isin(truth, [labels.index(label(*p)) for p in HELDOUT])
    seen_acc = float((predicted == truth)[~heldout].mean())
    assert (~heldout).sum() >= 20 and seen_acc >= 0.9, (seen_acc, predicted, truth)
    # Never-trained colour-shape pairs (6 scenes at this seed): composed from seen words and looks.
    assert heldout.sum() >= 4 and float((predicted == truth)[heldout].mean()) >= 0.5

    # The app's zero-shot path (prompt-template ensemble) agrees.
    ensemble = ZeroShotClassifier(encoder, labels).probabilities(encoder.encode_pixels(np.stack(pixels)))
    assert float((ensemble.argmax(1) == truth)[~heldout].mean()) >= 0.9

    # Text -> frame retrieval: every label with a frame here finds one of its own frames first.
    image_vecs = encoder.encode_pixels(np.stack(pixels))
    for k in set(truth[~heldout].tolist()):
        best = int((image_vecs @ text[k]).argmax())
        assert truth[best] == k, (labels[k], labels[truth[best]])


def test_train_command_writes_weights_that_index_and_search(tmp_path):
    """`vidsift synth` -> `vidsift train` -> `vidsift index/search --pretrained <weights>`, as a user runs it."""
    data = tmp_path / "shapes"
    assert run_cli("synth", data, "--videos", "3", "--seed", "5", "--max-size", "320", "--json").returncode == 0
    result = run_cli("train", data, "--out", tmp_path / "run", "--epochs", "1", "--batch-size", "8", "--json")
    assert result.returncode == 0, result.stderr[-2000:]
    weights = json.loads(result.stdout)["weights"]
    assert weights.endswith(".safetensors")
    common = ["--db", tmp_path / "db", "--model", "shapes-tiny", "--pretrained", weights]
    assert run_cli("index", data, *common, "--no-ray").returncode == 0
    found = run_cli("search", "a red circle", *common, "--json")
    assert found.returncode == 0 and len(json.loads(found.stdout)["results"]) > 0
