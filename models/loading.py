"""Create an open_clip model from a ``ModelSpec``, failing fast and clearly when weights are missing."""
from __future__ import annotations

import contextlib
import logging
import os
import socket
from dataclasses import dataclass

import torch

from .registry import bundled, register_bundled_configs
from .spec import ModelSpec

log = logging.getLogger(__name__)

OFFLINE_OPTIONS = (
    "Offline options: `--model shapes-tiny` (bundled demo model, no download), "
    "`--pretrained /path/to/checkpoint.safetensors` (a local open_clip checkpoint), or "
    "`--pretrained none` (random weights: plumbing only, meaningless results)."
)


class ModelUnavailableError(RuntimeError):
    """The model or its weights cannot be had; the message names the model, the cause and what to do."""


@dataclass
class LoadedModel:
    model: torch.nn.Module
    tokenizer: object
    preprocess_cfg: dict
    device: torch.device
    autocast_dtype: torch.dtype | None
    spec: ModelSpec


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


def pick_autocast(precision: str, device: torch.device) -> torch.dtype | None:
    """fp16/bf16 through autocast only: open_clip does not support pure fp16 inference."""
    if precision == "auto":
        return torch.float16 if device.type == "cuda" else None
    table = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}
    if precision not in table:
        raise ModelUnavailableError(f"Unknown precision {precision!r}: choose auto, fp32, fp16 or bf16.")
    return table[precision]


def load_model(spec: ModelSpec) -> LoadedModel:
    """Build the model in eval mode on its device. Downloads (real tags only) happen here, never at import."""
    import open_clip

    checkpoint, overrides = resolve_weights(spec)
    device = pick_device(spec.device)
    autocast_dtype = pick_autocast(spec.precision, device)
    if spec.is_random:
        torch.manual_seed(0)  # same random weights in every process, so index and search agree
    try:
        model, _, _ = open_clip.create_model_and_transforms(
            spec.name, pretrained=checkpoint, device=device, **overrides
        )
    except Exception as exc:  # open_clip raises bare RuntimeErrors/KeyErrors for bad checkpoints
        raise ModelUnavailableError(
            f"Could not load weights {checkpoint or 'random'} into model {spec.name!r}: {exc}"
        ) from exc
    model.eval()
    return LoadedModel(
        model=model,
        tokenizer=open_clip.get_tokenizer(spec.name),
        preprocess_cfg=dict(model.visual.preprocess_cfg),
        device=device,
        autocast_dtype=autocast_dtype,
        spec=spec,
    )


def preprocess_config(spec: ModelSpec) -> dict:
    """The model's image preprocessing (size, resize mode, mean/std), exactly what ``load_model``
    gives, without reading the weights (see ``model_outline``)."""
    return model_outline(spec)[0]


def model_outline(spec: ModelSpec) -> tuple[dict, int]:
    """(image preprocessing, embedding width) of ``spec``'s model without reading its weights:
    open_clip builds the model on torch's ``meta`` device, where nothing is allocated or computed,
    and the width is the shape an image comes out with there. The weights are still checked (a
    missing checkpoint or an unreachable tag fails here, at once). The indexing job's driver
    needs only this: building ViT-B-32 there cost 1.7 s of CPU at every start-up, the real
    weights more."""
    import open_clip

    _checked_not_read, overrides = resolve_weights(spec)
    with torch.device("meta"), _without_random_init_warning():
        model = open_clip.create_model(spec.name, pretrained=None, device="meta", **_create_model_overrides(overrides))
        cfg = dict(model.visual.preprocess_cfg)
        size = cfg["size"] if isinstance(cfg["size"], int) else cfg["size"][0]
        width = int(model.encode_image(torch.empty(1, 3, size, size, device="meta")).shape[-1])
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


def _create_model_overrides(overrides: dict) -> dict:
    """``create_model_and_transforms``' image_* keywords as ``create_model``'s force_preprocess_cfg."""
    from open_clip.transform import merge_preprocess_kwargs

    kwargs = dict(overrides)
    force = merge_preprocess_kwargs({}, mean=kwargs.pop("image_mean", None), std=kwargs.pop("image_std", None),
                                    interpolation=kwargs.pop("image_interpolation", None),
                                    resize_mode=kwargs.pop("image_resize_mode", None))
    return {**kwargs, "force_preprocess_cfg": force}


def resolve_weights(spec: ModelSpec) -> tuple[str | None, dict]:
    """(checkpoint file or None for random weights, open_clip keyword overrides) for ``spec``,
    failing fast with a clear message when the model or its weights cannot be had."""
    import open_clip

    register_bundled_configs()
    if open_clip.get_model_config(spec.name) is None:
        raise ModelUnavailableError(
            f"Unknown model {spec.name!r}. Known: shapes-tiny and open_clip's models "
            f"(`python -c 'import open_clip; print(open_clip.list_models())'`)."
        )
    if spec.is_random:
        return None, {}
    if not spec.pretrained:
        model_info = bundled(spec.name)
        if model_info is None:
            raise ModelUnavailableError(f"Model {spec.name!r} has no bundled weights; give --pretrained.")
        if not model_info.weights_path.is_file():
            raise ModelUnavailableError(
                f"Bundled weights for {spec.name!r} are missing ({model_info.weights_path}). "
                "Reinstall vidsift or train them with `vidsift train`."
            )
        return str(model_info.weights_path), dict(model_info.preprocess)
    if spec.is_local_file:
        if not os.path.isfile(spec.pretrained):
            raise ModelUnavailableError(f"Checkpoint {spec.pretrained!r} for model {spec.name!r} does not exist.")
        model_info = bundled(spec.name)
        return spec.pretrained, dict(model_info.preprocess) if model_info else {}
    checkpoint = _resolve_tag(spec)
    tag_cfg = open_clip.get_pretrained_cfg(spec.name, spec.pretrained)
    overrides = {
        "image_mean": tag_cfg.get("mean"),
        "image_std": tag_cfg.get("std"),
        "image_interpolation": tag_cfg.get("interpolation"),
        "image_resize_mode": tag_cfg.get("resize_mode"),
    }
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if tag_cfg.get("quick_gelu"):
        overrides["force_quick_gelu"] = True  # OpenAI weights need QuickGELU (open_clip #771)
    return checkpoint, overrides


def _resolve_tag(spec: ModelSpec) -> str:
    """Return a local file for a pretrained tag: from the Hugging Face cache, else downloaded.

    Without network, open_clip retries for most of a minute before it gives up; we look in the
    cache and probe the hub first, so an offline user hears why at once.
    """
    import open_clip

    tag_cfg = open_clip.get_pretrained_cfg(spec.name, spec.pretrained)
    if not tag_cfg:
        tags = open_clip.list_pretrained_tags_by_model(spec.name)
        raise ModelUnavailableError(
            f"{spec.pretrained!r} is neither a pretrained tag of {spec.name!r} nor an existing file. "
            f"Tags: {', '.join(tags) or 'none'}. {OFFLINE_OPTIONS}"
        )
    cached = _cached_hf_file(tag_cfg)
    if cached:
        return cached
    host = "huggingface.co" if tag_cfg.get("hf_hub") else _url_host(tag_cfg.get("url", ""))
    if not _reachable(host):
        raise ModelUnavailableError(
            f"Cannot fetch weights {spec.pretrained!r} for model {spec.name!r}: {host} is unreachable "
            f"(no network?) and they are not in the local cache. {OFFLINE_OPTIONS}"
        )
    try:
        return open_clip.pretrained.download_pretrained(tag_cfg)
    except Exception as exc:
        raise ModelUnavailableError(
            f"Downloading weights {spec.pretrained!r} for model {spec.name!r} failed: {exc}. {OFFLINE_OPTIONS}"
        ) from exc


def _cached_hf_file(tag_cfg: dict) -> str | None:
    hub = tag_cfg.get("hf_hub", "")
    if not hub:
        return None
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    repo_id, filename = os.path.split(hub.rstrip("/") if hub.endswith("/") else hub)
    candidates = [filename] if filename and not hub.endswith("/") else [
        "open_clip_model.safetensors", "open_clip_pytorch_model.bin"
    ]
    if hub.endswith("/"):
        repo_id = hub.rstrip("/")
    for name in candidates:
        hit = try_to_load_from_cache(repo_id, name)
        if isinstance(hit, str) and os.path.isfile(hit):
            return hit
    return None


def _url_host(url: str) -> str:
    from urllib.parse import urlparse

    return urlparse(url).hostname or "the download host"


def _reachable(host: str, timeout: float = 3.0) -> bool:
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        return False
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False
