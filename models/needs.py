"""What an open_clip model needs beyond open_clip itself, checked before the model is built.

Most families need nothing more: CLIP ViT/ResNet, ConvNeXt, EVA, PE-Core, MobileCLIP/MobileCLIP2
and ViTamin build their image tower from timm (an open_clip dependency) and tokenize with the BPE
vocabulary open_clip ships, so they work offline. SigLIP/SigLIP2, CLIPA, the "worldwide" and the
multilingual models tokenize with a Hugging Face tokenizer (the RoBERTa/mT5/NLLB ones also build
their text tower from a Hugging Face configuration). Those need the ``transformers`` package and
files that open_clip fetches from the Hugging Face hub on first use, with no offline fallback
(open_clip#1056). Left alone, a missing package is a ``ModuleNotFoundError`` from deep inside
open_clip, and a missing network is a minute of transformers' retries ending in a bare OSError
(both measured here with transformers 5.24). Here each becomes one line, at once, naming the model,
what is missing and what to do.
"""
from __future__ import annotations

import os
import socket

import open_clip
import timm
from huggingface_hub import constants as hub_constants  # read at call time: the cache folder can change
from huggingface_hub import try_to_load_from_cache

from .errors import ModelUnavailableError

HUB_HOST = "huggingface.co"
INSTALL_TRANSFORMERS = "pip install 'vidsift[families]' (or: pip install transformers)"
OFFLINE_FAMILIES = ("ViT-B-32, PE-Core-B-16, MobileCLIP2-S0, EVA02-B-16, convnext_base_w or the bundled "
                    "shapes-tiny")


def _text_cfg(name: str) -> dict:
    return (open_clip.get_model_config(name) or {}).get("text_cfg", {})


def hub_files(name: str) -> list[tuple[str, str]]:
    """(what, Hugging Face repo) that model ``name`` fetches from the hub to tokenize or to be built."""
    text = _text_cfg(name)
    files = [("tokenizer", text["hf_tokenizer_name"])] if text.get("hf_tokenizer_name") else []
    if text.get("hf_model_name"):
        files.append(("text-tower configuration", text["hf_model_name"]))
    return files


def check_needs(name: str):
    """Check that model ``name`` can be built here and return its tokenizer.

    Costs no network when everything is present: an image tower timm knows, the ``transformers``
    package where a hub file is needed, and each hub file in the Hugging Face cache (or the hub
    reachable to fetch it). Raises ``ModelUnavailableError`` with one line otherwise.
    """
    _check_image_tower(name)
    for what, repo in hub_files(name):
        _require_transformers(name, what, repo)
        if what != "tokenizer" and not in_hub_cache(repo, "config.json") and not reachable(HUB_HOST):
            raise ModelUnavailableError(_not_cached(name, what, repo))
    return load_tokenizer(name)


def load_tokenizer(name: str):
    """open_clip's tokenizer for ``name``; a Hugging Face one from the cache without touching the
    network when it is there, else downloaded when the hub is reachable."""
    repo = _text_cfg(name).get("hf_tokenizer_name")
    if not repo:
        return open_clip.get_tokenizer(name)  # open_clip's own vocabulary: always offline
    _require_transformers(name, "tokenizer", repo)
    try:  # open_clip passes extra keywords on to transformers' AutoTokenizer.from_pretrained
        return open_clip.get_tokenizer(name, local_files_only=True)
    except OSError:
        pass  # not in the cache
    if not reachable(HUB_HOST):
        raise ModelUnavailableError(_not_cached(name, "tokenizer", repo))
    try:
        return open_clip.get_tokenizer(name)
    except Exception as exc:  # gated, renamed or a failed transfer: transformers raises OSError/ValueError
        raise ModelUnavailableError(
            f"Model {name!r} needs the tokenizer {repo}, which could not be downloaded from {HUB_HOST}: "
            f"{_first_line(exc)}"
        ) from exc


def reachable(host: str, timeout: float = 3.0) -> bool:
    """Whether a TCP connection to ``host`` opens; ``HF_HUB_OFFLINE=1`` means no without trying."""
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        return False
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def _check_image_tower(name: str) -> None:
    tower = ((open_clip.get_model_config(name) or {}).get("vision_cfg") or {}).get("timm_model_name")
    if tower and not timm.is_model(tower):
        raise ModelUnavailableError(
            f"Model {name!r} needs timm's image tower {tower!r}, which the installed timm "
            f"{timm.__version__} does not have: pip install -U timm"
        )


def _require_transformers(name: str, what: str, repo: str) -> None:
    try:  # an optional extra: importing it is the check that it is installed
        import transformers  # noqa: F401
    except ImportError:
        raise ModelUnavailableError(
            f"Model {name!r} needs the Python package transformers for its {what} {repo}: "
            f"{INSTALL_TRANSFORMERS}"
        ) from None


def in_hub_cache(repo: str, filename: str) -> bool:
    """Whether the Hugging Face cache holds ``filename`` of ``repo`` (no network)."""
    return isinstance(try_to_load_from_cache(repo, filename), str)


def _not_cached(name: str, what: str, repo: str) -> str:
    return (
        f"Model {name!r} needs the {what} {repo}, which is not in the Hugging Face cache and cannot be "
        f"downloaded: {HUB_HOST} is unreachable (no network, or HF_HUB_OFFLINE=1). Run it once where the "
        f"hub is reachable, or copy models--{repo.replace('/', '--')} into {hub_constants.HF_HUB_CACHE} from a "
        f"machine that has it; or use a model whose tokenizer ships with open_clip ({OFFLINE_FAMILIES})."
    )


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
