"""Create an open_clip model from a ``ModelSpec``: check first (at once, offline-aware, one clear
line), then hand the tag or file to open_clip's factory, which resolves tags (download or cache),
merges the tag's preprocessing and loads the weights itself."""
from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass, field
from urllib.parse import urlparse

import open_clip
import torch
from open_clip.constants import HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME
from open_clip.transform import merge_preprocess_dict

from .errors import ModelUnavailableError
from .needs import check_needs, in_hub_cache, reachable
from .registry import bundled, register_bundled_configs
from .spec import ModelSpec

log = logging.getLogger(__name__)

OFFLINE_OPTIONS = (
    "Offline options: `--model shapes-tiny` (bundled demo model, no download), "
    "`--pretrained /path/to/checkpoint.safetensors` (a local open_clip checkpoint), or "
    "`--pretrained none` (random weights: plumbing only, meaningless results)."
)
# One vocabulary for precision, inference and training alike: the dtype autocast runs in (open_clip
# does not support pure fp16 inference). ``auto``: fp16 on CUDA, fp32 on CPU.
PRECISIONS = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}

__all__ = ["ModelUnavailableError", "LoadedModel", "Weights", "check_weights", "load_model", "model_outline",
           "preprocess_config", "pick_device", "pick_autocast", "resolve_precision", "autocast", "image_size",
           "OFFLINE_OPTIONS", "PRECISIONS"]


@dataclass
class LoadedModel:
    model: torch.nn.Module
    tokenizer: object
    preprocess_cfg: dict
    device: torch.device
    autocast_dtype: torch.dtype | None
    spec: ModelSpec


@dataclass(frozen=True)
class Weights:
    """What open_clip's factory is given for a spec, once checked.

    ``pretrained``: a tag, a checkpoint file, or None for seeded random weights. ``quick_gelu``:
    open_clip's factory only *warns* when a tag was trained with QuickGELU and the config lacks it
    (OpenAI's, MetaCLIP's, DFN's weights), and the vectors are then silently wrong (open_clip #771),
    so it is forced here from the tag's own config. ``preprocess``: a bundled model's own
    preprocessing (open_clip reads preprocessing from tags, never from model configs). ``tag_cfg``:
    the tag's open_clip config, for the outline, which must not download.
    """

    pretrained: str | None
    quick_gelu: bool = False
    preprocess: dict = field(default_factory=dict)
    tag_cfg: dict = field(default_factory=dict)

    def factory_kwargs(self) -> dict:
        """Keywords for ``open_clip.create_model``."""
        return {"pretrained": self.pretrained, "force_quick_gelu": self.quick_gelu,
                "force_preprocess_cfg": dict(self.preprocess)}

    def transform_kwargs(self) -> dict:
        """The same for ``open_clip.create_model_and_transforms`` (its preprocessing keywords are
        ``image_<key>``)."""
        return {"pretrained": self.pretrained, "force_quick_gelu": self.quick_gelu,
                **{f"image_{key}": value for key, value in self.preprocess.items()}}


def pick_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        picked = torch.device(device)
    except RuntimeError as exc:
        raise ModelUnavailableError(f"Unknown device {device!r}: {exc}") from None
    if picked.type == "cuda" and not torch.cuda.is_available():
        raise ModelUnavailableError(f"Device {device!r} was asked for but no CUDA GPU is available.")
    return picked


def resolve_precision(precision: str, device: torch.device) -> str:
    """A name of ``PRECISIONS`` for ``precision`` on ``device``: ``auto`` is fp16 on CUDA, fp32
    elsewhere (the one rule, for inference and training alike)."""
    if precision == "auto":
        return "fp16" if device.type == "cuda" else "fp32"
    if precision not in PRECISIONS:
        raise ModelUnavailableError(f"Unknown precision {precision!r}: choose auto, {', '.join(PRECISIONS)}.")
    return precision


def pick_autocast(precision: str, device: torch.device) -> torch.dtype | None:
    """fp16/bf16 through autocast only: open_clip does not support pure fp16 inference."""
    return PRECISIONS[resolve_precision(precision, device)]


def autocast(device: torch.device, dtype: torch.dtype | None):
    """The context a forward pass runs in: autocast to ``dtype``, or nothing for fp32 (None)."""
    return contextlib.nullcontext() if dtype is None else torch.autocast(device_type=device.type, dtype=dtype)


def image_size(preprocess_cfg: dict) -> tuple[int, int]:
    """(height, width) of the model's input: open_clip's ``size`` is an int for a square or a pair."""
    size = preprocess_cfg["size"]
    return (size, size) if isinstance(size, int) else tuple(size)


def load_model(spec: ModelSpec) -> LoadedModel:
    """Build the model in eval mode on its device. Downloads (real tags only) happen here, never at import."""
    weights = check_weights(spec)
    tokenizer = check_needs(spec.name)  # before the (slow) build: a missing tokenizer fails at once
    device = pick_device(spec.device)
    autocast_dtype = pick_autocast(spec.precision, device)
    if spec.is_random:
        torch.manual_seed(0)  # same random weights in every process, so index and search agree
    try:
        model = open_clip.create_model(spec.name, device=device, **weights.factory_kwargs())
    except Exception as exc:  # open_clip raises bare RuntimeErrors/KeyErrors for bad checkpoints
        raise ModelUnavailableError(
            f"Could not load weights {weights.pretrained or 'random'} into model {spec.name!r}: {exc}"
        ) from exc
    model.eval()
    return LoadedModel(model=model, tokenizer=tokenizer, preprocess_cfg=dict(model.visual.preprocess_cfg),
                       device=device, autocast_dtype=autocast_dtype, spec=spec)


def preprocess_config(spec: ModelSpec) -> dict:
    """The model's image preprocessing (size, resize mode, mean/std), exactly what ``load_model``
    gives, without reading the weights (see ``model_outline``)."""
    return model_outline(spec)[0]


def model_outline(spec: ModelSpec) -> tuple[dict, int]:
    """(image preprocessing, embedding width) of ``spec``'s model without reading its weights:
    open_clip builds the model on torch's ``meta`` device, where nothing is allocated or computed,
    and the width is the shape an image comes out with there. The weights and the model's other
    needs are still checked (a missing checkpoint, an unreachable tag or a missing tokenizer fails
    here, at once). The indexing job's driver needs only this: building ViT-B-32 there cost 1.7 s of
    CPU at every start-up, the real weights more.

    A tag's preprocessing is merged in with open_clip's own ``merge_preprocess_dict``, as its factory
    does when it loads the tag, because giving the tag to the factory here would download it."""
    weights = check_weights(spec)
    check_needs(spec.name)
    force = merge_preprocess_dict(weights.tag_cfg, weights.preprocess) if weights.tag_cfg else weights.preprocess
    with torch.device("meta"), _without_random_init_warning():
        model = open_clip.create_model(spec.name, pretrained=None, device="meta", force_quick_gelu=weights.quick_gelu,
                                       force_preprocess_cfg=dict(force))
        cfg = dict(model.visual.preprocess_cfg)
        width = int(model.encode_image(torch.empty(1, 3, *image_size(cfg), device="meta")).shape[-1])
    return cfg, width


class _DropRandomInitWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "No pretrained weights loaded" not in record.getMessage()


@contextlib.contextmanager
def _without_random_init_warning():
    """open_clip warns "No pretrained weights loaded ... initialized randomly" for a model built
    without weights. The outline is built that way on purpose (the weights are checked, then
    loaded where the frames are embedded), so the warning would be false."""
    root = logging.getLogger()
    dropped = _DropRandomInitWarning()
    root.addFilter(dropped)
    try:
        yield
    finally:
        root.removeFilter(dropped)


def check_weights(spec: ModelSpec) -> Weights:
    """What to give open_clip's factory for ``spec``, failing fast with a clear message when the
    model or its weights cannot be had. Reads no weights and downloads nothing."""
    register_bundled_configs()
    if open_clip.get_model_config(spec.name) is None:
        raise ModelUnavailableError(
            f"Unknown model {spec.name!r}. Known: shapes-tiny and open_clip's models "
            f"(`python -c 'import open_clip; print(open_clip.list_models())'`)."
        )
    info = bundled(spec.name)
    own = dict(info.preprocess) if info else {}
    if spec.is_random:
        return Weights(None)  # open_clip's default preprocessing, as random weights always had
    if not spec.pretrained:
        if info is None:
            raise ModelUnavailableError(f"Model {spec.name!r} has no bundled weights; give --pretrained.")
        if not info.weights_path.is_file():
            raise ModelUnavailableError(
                f"Bundled weights for {spec.name!r} are missing ({info.weights_path}). "
                "Reinstall vidsift or train them with `vidsift train`."
            )
        return Weights(str(info.weights_path), preprocess=own)
    if spec.is_local_file:
        if not os.path.isfile(spec.pretrained):
            raise ModelUnavailableError(f"Checkpoint {spec.pretrained!r} for model {spec.name!r} does not exist.")
        return Weights(spec.pretrained, preprocess=own)
    tag_cfg = open_clip.get_pretrained_cfg(spec.name, spec.pretrained)
    if not tag_cfg:
        tags = open_clip.list_pretrained_tags_by_model(spec.name)
        raise ModelUnavailableError(
            f"{spec.pretrained!r} is neither a pretrained tag of {spec.name!r} nor an existing file. "
            f"Tags: {', '.join(tags) or 'none'}. {OFFLINE_OPTIONS}"
        )
    _check_tag_reachable(spec, tag_cfg)
    return Weights(spec.pretrained, quick_gelu=bool(tag_cfg.get("quick_gelu")), preprocess=own, tag_cfg=tag_cfg)


def _check_tag_reachable(spec: ModelSpec, tag_cfg: dict) -> None:
    """A tag's weights must be in the cache or their host reachable. Without this, open_clip tries
    to download and an offline user waits, then reads a bare RuntimeError."""
    if _tag_cached(tag_cfg):
        return
    host = "huggingface.co" if tag_cfg.get("hf_hub") else _url_host(tag_cfg.get("url", ""))
    if not reachable(host):
        raise ModelUnavailableError(
            f"Cannot fetch weights {spec.pretrained!r} for model {spec.name!r}: {host} is unreachable "
            f"(no network?) and they are not in the local cache. {OFFLINE_OPTIONS}"
        )


def _tag_cached(tag_cfg: dict) -> bool:
    """Whether the file open_clip's ``download_pretrained`` would fetch for the tag is cached: from
    the hub (``org/repo/`` means open_clip's default file names, safetensors first) or a URL
    (open_clip keeps those in ``~/.cache/clip`` under their own name)."""
    hub = tag_cfg.get("hf_hub", "")
    if hub:
        repo_id, filename = os.path.split(hub)
        names = [filename] if filename else [HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME]
        return any(in_hub_cache(repo_id, name) for name in names)
    url = tag_cfg.get("url", "")
    return bool(url) and os.path.isfile(os.path.expanduser(f"~/.cache/clip/{os.path.basename(url)}"))


def _url_host(url: str) -> str:
    return urlparse(url).hostname or "the download host"
