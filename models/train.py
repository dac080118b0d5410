"""Contrastive training of open_clip models: the bundled ``shapes-tiny`` from scratch on a CPU, or
fine-tuning any open_clip model (ViT-B-32 from a LAION tag or a local checkpoint) on a GPU.

Built from open_clip's own parts, so a trained model is an ordinary open_clip model:
``create_model_and_transforms`` (the model, its augmenting train transform and its eval transform),
``get_tokenizer``, ``ClipLoss`` and ``build_zero_shot_classifier``. The loop is deliberately plain
(nanoGPT style): AdamW without weight decay on gains, biases, embeddings and the logit scale, linear
warm-up then cosine decay, autocast mixed precision on CUDA, a checkpoint per epoch that ``resume``
continues from, a validation per epoch (zero-shot top-1 over a label set, text->image R@1) written
to ``metrics.jsonl``, and finally the weights exported as ``.safetensors``.

Data comes from the caller; models/ knows nothing about videos. A training set is a torch Dataset
(or an iterable) of ``(image, caption)`` pairs, the image a PIL image, a uint8 HxWx3 array or an
already normalised CxHxW tensor. A map-style dataset may expose ``groups`` (one hashable per item,
e.g. its label): items of one group never share a batch (``models.train_data``).

This module is the loop; its parts live beside it, each with one job, and are importable from here:
``train_config`` (settings, device, precision and starting weights), ``train_data`` (batches),
``validation`` (the per-epoch metrics) and ``checkpoints`` (resume and export).
"""
from __future__ import annotations

import itertools
import json
import math
import random
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import open_clip
import torch
from torch.utils.data import RandomSampler
from tqdm import tqdm

from .checkpoints import checkpoint_paths, export_safetensors, load_checkpoint, save_checkpoint, verify_export
from .loading import PRECISIONS, Weights, autocast
from .needs import check_needs
from .train_config import TrainConfig, resolve_device, start_weights
from .train_data import Collate, DistinctGroupBatchSampler, make_loader, steps_in_epoch
from .validation import ValData, evaluate

__all__ = [
    "METRICS_FILE", "Collate", "DistinctGroupBatchSampler", "TrainConfig", "ValData", "build_model",
    "checkpoint_paths", "evaluate", "export_safetensors", "load_checkpoint", "lr_at", "make_loader",
    "make_optimizer", "no_decay", "resolve_device", "save_checkpoint", "start_weights", "steps_in_epoch", "train",
    "train_epoch", "verify_export",
]

METRICS_FILE = "metrics.jsonl"


def build_model(cfg: TrainConfig, device: torch.device, weights: Weights | None = None):
    """(model, train transform, eval transform, tokenizer), seeded so random inits are reproducible.
    ``weights``: what ``start_weights(cfg)`` gives, when the caller has it already."""
    weights = weights or start_weights(cfg)
    tokenizer = check_needs(cfg.model)
    torch.manual_seed(cfg.seed)
    model, train_tf, val_tf = open_clip.create_model_and_transforms(
        cfg.model, device=device, output_dict=True, aug_cfg={"scale": cfg.aug_scale}, **weights.transform_kwargs(),
    )
    return model, train_tf, val_tf, tokenizer


def no_decay(name: str, param: torch.nn.Parameter) -> bool:
    """open_clip's rule (1-d gains/biases, norms, logit_scale) plus the embeddings."""
    return (param.ndim < 2 or "bn" in name or "ln" in name or "bias" in name
            or "logit_scale" in name or "embedding" in name)


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    groups = [
        {"params": [p for n, p in named if no_decay(n, p)], "weight_decay": 0.0},
        {"params": [p for n, p in named if not no_decay(n, p)], "weight_decay": cfg.weight_decay},
    ]
    kwargs = dict(lr=cfg.lr, betas=cfg.betas, eps=cfg.eps)
    try:  # the fused kernel is ~8x faster on CPU, where the 49408-row token embedding dominates
        return torch.optim.AdamW(groups, fused=True, **kwargs)
    except (RuntimeError, TypeError):
        return torch.optim.AdamW(groups, **kwargs)


def lr_at(step: int, total_steps: int, cfg: TrainConfig) -> float:
    """Linear warm-up to ``lr``, then cosine decay to ``min_lr`` (open_clip's ``cosine_lr``)."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, total_steps - cfg.warmup_steps)
    return cfg.min_lr + 0.5 * (1 + math.cos(math.pi * min(1.0, progress))) * (cfg.lr - cfg.min_lr)


def train_epoch(model, loader, optimizer, scaler, loss_fn, cfg: TrainConfig, device, precision,
                epoch: int, step: int, total_steps: int) -> tuple[int, float]:
    """One epoch of contrastive steps; returns (global step, mean loss)."""
    model.train()
    n = steps_in_epoch(loader, cfg)
    bar = tqdm(itertools.islice(loader, n), total=n, desc=f"epoch {epoch + 1}/{cfg.epochs}",
               disable=not cfg.progress, mininterval=2.0, dynamic_ncols=True)
    losses = []
    for images, texts in bar:
        lr = lr_at(step, total_steps, cfg)
        for group in optimizer.param_groups:
            group["lr"] = lr
        images = images.to(device, non_blocking=True)
        texts = texts.to(device, non_blocking=True)
        with autocast(device, PRECISIONS[precision]):
            out = model(images, texts)
            loss = loss_fn(out["image_features"], out["text_features"], out["logit_scale"])
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if cfg.grad_clip:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))  # as open_clip's training does
        step += 1
        losses.append(loss.item())
        bar.set_postfix(loss=f"{losses[-1]:.3f}", lr=f"{lr:.2e}", refresh=False)
    return step, float(np.mean(losses)) if losses else float("nan")


def log_metrics(out_dir: Path, record: dict) -> None:
    print(json.dumps(record), flush=True)
    with open(out_dir / METRICS_FILE, "a") as fh:
        fh.write(json.dumps(record) + "\n")


def train(cfg: TrainConfig, train_data, val: ValData | None = None) -> dict:
    """Train (or resume), validating and checkpointing every epoch; export the final weights.

    Returns {"weights": export path, "checkpoint": last checkpoint, "metrics": last record,
    "export_cosine": worst cosine between trained and reloaded features}.
    """
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    random.seed(cfg.seed)
    out_dir = Path(cfg.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    device, precision = resolve_device(cfg)
    weights = start_weights(cfg)
    model, train_tf, val_tf, tokenizer = build_model(cfg, device, weights)
    optimizer = make_optimizer(model, cfg)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    loss_fn = open_clip.ClipLoss()
    loader = make_loader(train_data, cfg, Collate(train_tf, tokenizer), device)
    total_steps = cfg.epochs * steps_in_epoch(loader, cfg)
    epoch, step = 0, 0
    if cfg.resume and checkpoint_paths(out_dir):
        epoch, step = load_checkpoint(checkpoint_paths(out_dir)[-1], model, optimizer, scaler, cfg)
        print(f"resumed from {checkpoint_paths(out_dir)[-1]} (epoch {epoch}, step {step})", flush=True)
    elif cfg.resume:
        print(f"no checkpoint under {out_dir}: starting from scratch", flush=True)
    (out_dir / "config.json").write_text(json.dumps(asdict(cfg), indent=2) + "\n")
    checkpoint, record = None, {}
    for epoch in range(epoch, cfg.epochs):
        if hasattr(loader.batch_sampler, "set_epoch"):
            loader.batch_sampler.set_epoch(epoch)
        if isinstance(loader.sampler, RandomSampler) and loader.sampler.generator is not None:
            loader.sampler.generator.manual_seed(cfg.seed * 1000 + epoch)
        started = time.time()
        step, loss = train_epoch(model, loader, optimizer, scaler, loss_fn, cfg, device, precision,
                                 epoch, step, total_steps)
        record = {"epoch": epoch + 1, "step": step, "loss": round(loss, 4),
                  "lr": lr_at(step - 1, total_steps, cfg), "logit_scale": round(model.logit_scale.exp().item(), 2),
                  "epoch_s": round(time.time() - started, 1)}
        if val is not None and ((epoch + 1) % cfg.val_every == 0 or epoch + 1 == cfg.epochs):
            record.update(evaluate(model, tokenizer, val, val_tf, device, precision, cfg.val_batch_size))
        log_metrics(out_dir, record)
        checkpoint = save_checkpoint(out_dir, cfg, model, optimizer, scaler, epoch + 1, step)
    export = Path(cfg.export_path or out_dir / f"{cfg.model}.safetensors")
    export_safetensors(model, export, cfg.export_dtype, {"model": cfg.model, "epochs": cfg.epochs, "steps": step})
    cosine = verify_export(cfg.model, weights, export, model, device)
    print(f"exported {export} ({export.stat().st_size / 1e6:.1f} MB, reload cosine {cosine:.5f})", flush=True)
    return {"weights": str(export), "checkpoint": str(checkpoint) if checkpoint else None,
            "metrics": record, "export_cosine": cosine}
