"""Every open_clip model family indexes and classifies through the real CLI, or says in one line
what it needs (issue 19).

Random weights (`--pretrained none`) and the smallest config of each family: plumbing only, never
quality. The CLI runs in this process (`app.cli.main`), on one tiny shapes-world video, a few
frames, `--no-ray`. The Hugging Face cache is a fresh empty folder for each test and the hub is
unreachable, as on a machine without network, whatever the developer's own cache holds.

The SigLIP tests need ``transformers`` (vidsift's ``families`` extra, which the README's test
command installs); the message that tells a user to install it is tested with it hidden. The last two
tests cover issue 18 item 5: a pretrained tag goes to open_clip's factory as a tag.
"""
from __future__ import annotations

import json
import sys

import numpy as np
import open_clip
import pytest
import torch
from huggingface_hub import constants
from safetensors.torch import save_file

from vidsift.app.cli import main
from vidsift.models.loading import ModelUnavailableError, check_weights, load_model, model_outline, preprocess_config
from vidsift.models.spec import resolve_spec
from vidsift.pipeline.store import VideoStore
from tests.conftest import make_video

LABELS = "a red circle,a blue square,a white star"

# family -> the smallest open_clip config of that family; each tokenizes with open_clip's own
# vocabulary, so it must work offline.
OFFLINE_FAMILIES = {
    "CLIP ViT": "ViT-S-32",
    "ConvNeXt": "convnext_tiny",
    "EVA": "EVA02-B-16",
    "PE-Core": "PE-Core-T-16-384",
    "MobileCLIP2": "MobileCLIP2-S0",
}
SIGLIP = "ViT-B-16-SigLIP"        # smallest SigLIP (32k-token vocabulary)
SIGLIP2 = "ViT-B-32-SigLIP2-256"  # smallest SigLIP2 (Gemma's 256k-token vocabulary)


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    path = tmp_path_factory.mktemp("families") / "clip.mp4"
    make_video(path, fps=10, durations=(2.0, 2.0), size=(160, 120))
    return path


@pytest.fixture
def offline_hub(tmp_path, monkeypatch):
    """An empty Hugging Face cache and no hub: huggingface_hub (and transformers through it) read
    the cache folder and the offline switch at call time; vidsift's own probe reads the variable."""
    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return cache


def cli(capfd, *argv):
    """`vidsift ARGV` in this process: (exit status, stdout, non-blank stderr lines)."""
    code = main([str(a) for a in argv])
    out, err = capfd.readouterr()
    return code, out, [line for line in err.splitlines() if line.strip()]


def index_and_classify(capfd, tmp_path, clip, model):
    """Index the clip and classify it with ``model``'s random weights; check what each wrote."""
    db = tmp_path / "db"
    common = ["--model", model, "--pretrained", "none", "--frames", "3"]
    code, out, err = cli(capfd, "index", clip, "--db", db, *common, "--no-ray", "--segments", "fixed",
                         "--window", "2", "--json")
    assert code == 0, err
    assert json.loads(out)["indexed"] == 1
    store = VideoStore(str(db))
    rows = store.model(resolve_spec(model, "none")).segments().to_arrow().to_pylist()
    vectors = np.array([row["vector"] for row in rows], dtype=np.float32)
    assert len(rows) == 2 and np.all(np.isfinite(vectors))
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-3)

    code, out, err = cli(capfd, "classify", clip, *common, "--labels", LABELS, "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["model"] == f"{model}|random"
    assert sorted(item["label"] for item in result["labels"]) == sorted(LABELS.split(","))
    assert sum(item["probability"] for item in result["labels"]) == pytest.approx(1.0, abs=1e-4)
    return vectors


@pytest.mark.parametrize("family", sorted(OFFLINE_FAMILIES))
def test_each_family_indexes_and_classifies_offline(family, tmp_path, clip, capfd, offline_hub):
    model = OFFLINE_FAMILIES[family]
    vectors = index_and_classify(capfd, tmp_path, clip, model)
    assert vectors.shape[1] == open_clip.get_model_config(model)["embed_dim"]  # the model's own space


@pytest.mark.parametrize("command", ["index", "classify"])
def test_siglip2_without_transformers_says_what_to_install(command, tmp_path, clip, capfd, monkeypatch):
    """Before: `ModuleNotFoundError: No module named 'transformers'` from inside open_clip (imported
    as usual first, at the top, whatever it finds)."""
    monkeypatch.setitem(sys.modules, "transformers", None)  # `import transformers` now fails
    argv = [command, clip, "--model", SIGLIP2, "--pretrained", "none", "--frames", "3"]
    argv += ["--db", tmp_path / "db", "--no-ray"] if command == "index" else ["--labels", LABELS]
    code, out, err = cli(capfd, *argv)
    assert code == 1
    assert len(err) == 1 and "Traceback" not in err[0], err
    assert f"Model '{SIGLIP2}' needs the Python package transformers" in err[0]
    assert "pip install 'vidsift[families]'" in err[0] and "pip install transformers" in err[0]


def test_siglip2_tokenizer_not_in_the_cache_fails_at_once_offline(tmp_path, clip, capfd, offline_hub):
    """Before: about a minute of transformers' retries, then a bare OSError."""
    import transformers  # noqa: F401 - lazy: the `families` extra (the test command installs it)
    for argv in (["index", clip, "--db", tmp_path / "db", "--no-ray"], ["classify", clip, "--labels", LABELS]):
        code, out, err = cli(capfd, *argv, "--model", SIGLIP2, "--pretrained", "none", "--frames", "3")
        assert code == 1
        assert len(err) == 1 and "Traceback" not in err[0], err
        assert (f"Model '{SIGLIP2}' needs the tokenizer timm/{SIGLIP2}, which is not in the Hugging Face "
                "cache and cannot be downloaded: huggingface.co is unreachable") in err[0]
        assert "ViT-B-32" in err[0] and "PE-Core-B-16" in err[0]  # models that work offline


def test_siglip_with_its_tokenizer_in_the_cache_works_offline(tmp_path, clip, capfd, offline_hub):
    """A SigLIP tokenizer that is in the Hugging Face cache is used without the network. The cached
    tokenizer here is a small word-level one built on the spot (the real one is a download); what
    is tested is that vidsift finds it in the cache offline and the model indexes and classifies."""
    import transformers  # noqa: F401 - lazy: the `families` extra (the test command installs it)
    cache_tokenizer(offline_hub, f"timm/{SIGLIP}", LABELS.replace(",", " ").split())
    index_and_classify(capfd, tmp_path, clip, SIGLIP)


def cache_tokenizer(cache, repo: str, words: list[str]) -> None:
    """Lay out a fast tokenizer for ``repo`` as huggingface_hub caches a download."""
    # lazy: ``tokenizers`` comes with the ``families`` extra, as transformers does (see the tests)
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2}
    for word in words + "a photo video of frame showing close-up low resolution".split():
        vocab.setdefault(word, len(vocab))
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    revision = "0" * 40
    folder = cache / ("models--" + repo.replace("/", "--"))
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(revision)
    snapshot = folder / "snapshots" / revision
    snapshot.mkdir(parents=True)
    tokenizer.save(str(snapshot / "tokenizer.json"))
    (snapshot / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "pad_token": "<pad>", "eos_token": "</s>",
        "unk_token": "<unk>", "model_max_length": 64}))
    (snapshot / "config.json").write_text("{}")  # transformers 5 reads a config before the tokenizer


# ---- issue 18 item 5: the tag goes to open_clip's factory, which resolves it ----------------------
def cache_weights(cache, name: str, tag: str, seed: int = 1) -> dict:
    """Random weights of ``name`` laid out in the Hugging Face cache as the download of ``tag``
    (fp16 to keep the file small); returns the state dict."""
    hub = open_clip.get_pretrained_cfg(name, tag)["hf_hub"].rstrip("/")
    revision = "1" * 40
    folder = cache / ("models--" + hub.replace("/", "--"))
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(revision)
    (folder / "snapshots" / revision).mkdir(parents=True)
    torch.manual_seed(seed)
    state = {k: v.half().contiguous() for k, v in open_clip.create_model(name, pretrained=None).state_dict().items()}
    save_file(state, str(folder / "snapshots" / revision / "open_clip_model.safetensors"))
    return state


def test_a_cached_tag_loads_offline_with_the_tags_preprocessing(offline_hub):
    """PE-Core's tag squashes frames with mean/std 0.5 and bilinear resizing, none of which is in
    the model config: open_clip's factory applies them when it is given the tag. The driver's
    outline (no weights read) must agree with the loaded model, and the weights must be the file's."""
    state = cache_weights(offline_hub, "PE-Core-T-16-384", "meta")
    spec = resolve_spec("PE-Core-T-16-384", "meta")
    loaded = load_model(spec)
    cfg = loaded.preprocess_cfg
    assert (cfg["resize_mode"], cfg["interpolation"], tuple(cfg["mean"]), tuple(cfg["std"])) == (
        "squash", "bilinear", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    assert preprocess_config(spec) == cfg
    for key in ("logit_scale", "visual.trunk.patch_embed.proj.weight"):
        torch.testing.assert_close(loaded.model.state_dict()[key], state[key].float())


def test_quickgelu_tags_are_forced_and_an_uncached_tag_fails_at_once_offline(offline_hub):
    """open_clip only warns when a QuickGELU-trained tag (OpenAI's) meets a GELU config, and the
    vectors are then wrong (open_clip #771): the check forces it from the tag's own config."""
    hub = open_clip.get_pretrained_cfg("RN50", "openai")["hf_hub"].rstrip("/")
    with pytest.raises(ModelUnavailableError, match=r"'openai' for model 'RN50': huggingface.co is unreachable"):
        check_weights(resolve_spec("RN50", "openai"))
    snapshot = offline_hub / ("models--" + hub.replace("/", "--")) / "snapshots" / ("2" * 40)
    snapshot.mkdir(parents=True)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("2" * 40)
    (snapshot / "open_clip_model.safetensors").write_bytes(b"not read by the check")
    weights = check_weights(resolve_spec("RN50", "openai"))
    assert (weights.pretrained, weights.quick_gelu) == ("openai", True)
    assert check_weights(resolve_spec("RN50", "none")).quick_gelu is False
    assert model_outline(resolve_spec("RN50", "openai"))[1] == 1024
