"""A training run's checkpoints (everything ``resume`` needs, a few kept) and its export: the
weights as ``.safetensors``, then reloaded through open_clip and compared, so a file that would
embed differently from the trained model is caught when it is written, not when it is used."""
from __future__ import annotations

import random
from dataclasses import asdict
from pathlib import Path

import open_clip
import torch
from safetensors.torch import save_file

from .loading import Weights, image_size
from .needs import load_tokenizer
from .train_config import EXPORT_DTYPES, TrainConfig

CHECKPOINT_DIR = "checkpoints"


def checkpoint_paths(out_dir: str | Path) -> list[Path]:
    return sorted((Path(out_dir) / CHECKPOINT_DIR).glob("epoch_*.pt"))


def save_checkpoint(out_dir, cfg: TrainConfig, model, optimizer, scaler, epoch: int, step: int) -> Path:
    """Everything needed to continue: weights, optimiser moments, schedule position, RNG states."""
    directory = Path(out_dir) / CHECKPOINT_DIR
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"epoch_{epoch:04d}.pt"
    state = {
        "epoch": epoch, "step": step, "config": asdict(cfg),
        "model": model.state_dict(), "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(),
        "torch_rng": torch.get_rng_state(), "python_rng": random.getstate(),
    }
    torch.save(state, directory / "tmp.pt")
    (directory / "tmp.pt").replace(path)
    for old in checkpoint_paths(out_dir)[:-max(1, cfg.keep_checkpoints)]:
        old.unlink()
    return path


def load_checkpoint(path: Path, model, optimizer, scaler, cfg: TrainConfig) -> tuple[int, int]:
    """Restore a checkpoint in place; returns (epochs done, steps done)."""
    state = torch.load(path, map_location="cpu", weights_only=False)
    if state["config"]["model"] != cfg.model:
        raise ValueError(f"Checkpoint {path} is of model {state['config']['model']!r}, not {cfg.model!r}")
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scaler.load_state_dict(state["scaler"])
    torch.set_rng_state(state["torch_rng"])
    random.setstate(state["python_rng"])
    return state["epoch"], state["step"]


def export_safetensors(model, path: str | Path, dtype: str = "fp32", metadata: dict | None = None) -> Path:
    """Write the state_dict as safetensors, readable by open_clip's ``load_checkpoint``."""
    target = EXPORT_DTYPES[dtype]
    state = {k: (v.to(target) if v.is_floating_point() else v).detach().cpu().contiguous()
             for k, v in model.state_dict().items()}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_file(state, str(tmp), metadata={k: str(v) for k, v in (metadata or {}).items()})
    tmp.chmod(0o644)  # safetensors creates 0600 files; weights are shipped as package data
    tmp.replace(path)
    return path


@torch.no_grad()
def verify_export(model_name: str, started: Weights, path: str | Path, model, device) -> float:
    """Reload the file through open_clip and return the worst cosine between old and new features.
    ``started``: the weights training started from; the file is built as they were (QuickGELU,
    preprocessing)."""
    reloaded = open_clip.create_model(model_name, device=device, **Weights(
        str(path), quick_gelu=started.quick_gelu, preprocess=started.preprocess).factory_kwargs())
    reloaded.eval()
    was_training = model.training
    model.eval()
    size = image_size(reloaded.visual.preprocess_cfg)
    images = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(0)).to(device)
    tokens = load_tokenizer(model_name)(["a red circle", "a photo"]).to(device)
    cos = min(
        float(torch.nn.functional.cosine_similarity(a, b).min())
        for a, b in ((model.encode_image(images, normalize=True), reloaded.encode_image(images, normalize=True)),
                     (model.encode_text(tokens, normalize=True), reloaded.encode_text(tokens, normalize=True)))
    )
    model.train(was_training)
    return cos
