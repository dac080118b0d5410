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
e.g. its label): items of one group never share a batch, because CLIP's loss counts every other
pair of a batch as a negative, and two frames of the same label would be false negatives.
"""
from __future__ import annotations

import contextlib
import itertools
import json
import math
import random
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, IterableDataset, RandomSampler, Sampler

from .errors import ModelUnavailableError
from .loading import PRECISIONS, Weights, check_weights, pick_device
from .needs import check_needs, load_tokenizer
from .registry import bundled
from .spec import ModelSpec

CHECKPOINT_DIR = "checkpoints"
LEGACY_PRECISIONS = {"amp": "fp16", "amp_bf16": "bf16"}  # the names training used before (old config.json files)
METRICS_FILE = "metrics.jsonl"


@dataclass
class TrainConfig:
    model: str = "shapes-tiny"
    pretrained: str | None = None    # None/"none": random init; "": bundled weights; a tag or a checkpoint path
    out_dir: str = "runs/train"
    epochs: int = 10
    steps_per_epoch: int | None = None  # None: one pass over the data set
    batch_size: int = 64               # capped at the number of groups when the data set has groups
    lr: float = 5e-4
    weight_decay: float = 0.1
    warmup_steps: int = 100
    min_lr: float = 0.0
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-6
    grad_clip: float | None = 1.0
    aug_scale: tuple[float, float] = (0.9, 1.0)  # open_clip's RandomResizedCrop area range
    seed: int = 0
    resume: bool = False
    device: str = "auto"
    precision: str = "auto"            # autocast dtype, as for inference: auto (fp16 on CUDA, fp32 on CPU), fp32, fp16, bf16
    num_workers: int = 0
    threads: int | None = None         # torch.set_num_threads, for CPU runs on shared machines
    val_every: int = 1                 # epochs
    val_batch_size: int = 256
    keep_checkpoints: int = 2
    export_path: str | None = None     # default: <out_dir>/<model>.safetensors
    export_dtype: str = "fp32"         # fp16 halves the file; open_clip loads it into fp32 parameters
    progress: bool = True

    def __post_init__(self):
        self.betas, self.aug_scale = tuple(self.betas), tuple(self.aug_scale)
        self.precision = LEGACY_PRECISIONS.get(self.precision, self.precision)
        if self.precision != "auto" and self.precision not in PRECISIONS:
            raise ValueError(f"precision must be auto, {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.export_dtype not in ("fp32", "fp16", "bf16"):
            raise ValueError(f"export_dtype must be fp32, fp16 or bf16, got {self.export_dtype!r}")

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass
class ValData:
    """A labelled validation set: ``images[i]`` shows class ``labels[i]`` of ``classnames``.

    ``templates`` are the zero-shot prompts (``"a photo of {}."``), averaged per class as open_clip's
    ``build_zero_shot_classifier`` does; each template is also a text->image retrieval query.
    ``splits`` names subsets of class ids (e.g. ``seen``/``heldout``) reported separately.
    """

    images: Sequence
    labels: Sequence[int]
    classnames: Sequence[str]
    templates: Sequence[str] = ("{}",)
    splits: dict[str, Sequence[int]] = field(default_factory=dict)


# --- model, optimiser, schedule -----------------------------------------------------------


def resolve_device(cfg: TrainConfig) -> tuple[torch.device, str]:
    device = pick_device(cfg.device)
    precision = cfg.precision
    if precision == "auto":
        precision = "fp16" if device.type == "cuda" else "fp32"
    return device, precision


def autocast(device: torch.device, precision: str):
    dtype = PRECISIONS[precision]
    return contextlib.nullcontext() if dtype is None else torch.autocast(device_type=device.type, dtype=dtype)


def start_weights(cfg: TrainConfig) -> Weights:
    """What the model starts from, checked as inference checks it (``models.loading.check_weights``):
    ``pretrained`` None/"none" is a random init, "" the bundled weights, else a tag or a file. The
    model's own preprocessing and QuickGELU come with it, so the exported model embeds frames
    exactly as the one it started from."""
    pretrained = "none" if cfg.pretrained is None else cfg.pretrained
    try:
        weights = check_weights(ModelSpec(name=cfg.model, pretrained=pretrained))
    except ModelUnavailableError as exc:
        raise ValueError(str(exc)) from None
    info = bundled(cfg.model)
    if weights.pretrained is None and info:  # a bundled model trained from scratch keeps its own preprocessing
        weights = Weights(None, preprocess=dict(info.preprocess))
    return weights


def build_model(cfg: TrainConfig, device: torch.device):
    """(model, train transform, eval transform, tokenizer), seeded so random inits are reproducible."""
    import open_clip

    weights = start_weights(cfg)
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


# --- data ---------------------------------------------------------------------------------


def to_pil(image) -> Image.Image | torch.Tensor:
    if isinstance(image, np.ndarray):
        return Image.fromarray(image)
    return image


class Collate:
    """Images through a transform (PIL/uint8 arrays; tensors pass as they are), captions tokenized."""

    def __init__(self, transform, tokenizer):
        self.transform, self.tokenizer = transform, tokenizer

    def __call__(self, batch):
        images = [to_pil(image) for image, _ in batch]
        images = torch.stack([im if isinstance(im, torch.Tensor) else self.transform(im) for im in images])
        return images, self.tokenizer([str(caption) for _, caption in batch])


class DistinctGroupBatchSampler(Sampler):
    """Batches of items from distinct groups: each batch draws ``batch_size`` groups at random and
    the next item (in a shuffled cycle) of each, so every frame is seen about equally often."""

    def __init__(self, groups: Sequence, batch_size: int, n_batches: int, seed: int = 0):
        self.members: dict = {}
        for index, group in enumerate(groups):
            self.members.setdefault(group, []).append(index)
        self.keys = list(self.members)
        self.batch_size = min(batch_size, len(self.keys))
        self.n_batches, self.seed, self.epoch = n_batches, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n_batches

    def __iter__(self):
        rng = np.random.default_rng([self.seed, self.epoch])
        cycles = {k: itertools.cycle(rng.permutation(m).tolist()) for k, m in self.members.items()}
        for _ in range(self.n_batches):
            chosen = rng.choice(len(self.keys), size=self.batch_size, replace=False)
            yield [next(cycles[self.keys[k]]) for k in chosen]


def make_loader(dataset, cfg: TrainConfig, collate: Collate, device: torch.device):
    """A DataLoader yielding exactly ``steps_per_epoch`` batches (or one pass) per epoch."""
    common = dict(collate_fn=collate, num_workers=cfg.num_workers, pin_memory=device.type == "cuda",
                  persistent_workers=cfg.num_workers > 0)
    if isinstance(dataset, IterableDataset) or not hasattr(dataset, "__getitem__"):
        if cfg.steps_per_epoch is None:
            raise ValueError("An iterable training set needs steps_per_epoch")
        return DataLoader(dataset, batch_size=cfg.batch_size, drop_last=True, **common)
    groups = getattr(dataset, "groups", None)
    if groups is not None:
        batch_size = min(cfg.batch_size, len(set(groups)))
        n_batches = cfg.steps_per_epoch or max(1, len(dataset) // batch_size)
        sampler = DistinctGroupBatchSampler(groups, batch_size, n_batches, cfg.seed)
        return DataLoader(dataset, batch_sampler=sampler, **common)
    n_batches = cfg.steps_per_epoch or max(1, len(dataset) // cfg.batch_size)
    generator = torch.Generator().manual_seed(cfg.seed)
    sampler = RandomSampler(dataset, num_samples=n_batches * cfg.batch_size, generator=generator)
    return DataLoader(dataset, batch_size=cfg.batch_size, sampler=sampler, drop_last=True, **common)


def steps_in_epoch(loader, cfg: TrainConfig) -> int:
    return cfg.steps_per_epoch or len(loader)


# --- validation ---------------------------------------------------------------------------


@torch.no_grad()
def encode_images(model, images: Sequence, transform, device, precision, batch_size: int) -> torch.Tensor:
    feats = []
    for begin in range(0, len(images), batch_size):
        chunk = [to_pil(im) for im in images[begin:begin + batch_size]]
        batch = torch.stack([im if isinstance(im, torch.Tensor) else transform(im) for im in chunk])
        with autocast(device, precision):
            feats.append(model.encode_image(batch.to(device), normalize=True).float())
    return torch.cat(feats)


@torch.no_grad()
def encode_texts(model, tokenizer, texts: Sequence[str], device, precision) -> torch.Tensor:
    with autocast(device, precision):
        return model.encode_text(tokenizer(list(texts)).to(device), normalize=True).float()


@torch.no_grad()
def evaluate(model, tokenizer, val: ValData, transform, device, precision, batch_size: int = 256) -> dict:
    """Zero-shot top-1 (prompt ensemble, and the bare class name) and text->image R@1 per split.

    R@1 asks, for each class in the split and each template used alone as a query, whether the
    best-matching image over the whole set shows that class.
    """
    from open_clip import build_zero_shot_classifier

    was_training = model.training
    model.eval()
    image_feats = encode_images(model, val.images, transform, device, precision, batch_size)
    labels = torch.as_tensor(list(val.labels), device=device)
    with autocast(device, precision):
        ensemble = build_zero_shot_classifier(model, tokenizer, list(val.classnames), list(val.templates),
                                              num_classes_per_batch=32, device=device).float()
    bare = encode_texts(model, tokenizer, val.classnames, device, precision).T
    pred = (image_feats @ ensemble).argmax(1)
    pred_bare = (image_feats @ bare).argmax(1)
    queries = [t.format(c) for c in val.classnames for t in val.templates]
    query_class = torch.arange(len(val.classnames), device=device).repeat_interleave(len(val.templates))
    top_image = (encode_texts(model, tokenizer, queries, device, precision) @ image_feats.T).argmax(1)
    hit = labels[top_image] == query_class
    splits = {"all": list(range(len(val.classnames))), **{k: list(v) for k, v in val.splits.items()}}
    metrics = {}
    for name, class_ids in splits.items():
        ids = torch.as_tensor(class_ids, device=device)
        in_split = torch.isin(labels, ids)
        queried = torch.isin(query_class, ids) & torch.isin(query_class, labels)
        if in_split.any():
            metrics[f"{name}/zs_top1"] = round(float((pred == labels)[in_split].float().mean()), 4)
            metrics[f"{name}/zs_top1_bare"] = round(float((pred_bare == labels)[in_split].float().mean()), 4)
            metrics[f"{name}/r1"] = round(float(hit[queried].float().mean()), 4)
            metrics[f"{name}/n"] = int(in_split.sum())
    model.train(was_training)
    return metrics


# --- checkpoints and export ---------------------------------------------------------------


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


EXPORT_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def export_safetensors(model, path: str | Path, dtype: str = "fp32", metadata: dict | None = None) -> Path:
    """Write the state_dict as safetensors, readable by open_clip's ``load_checkpoint``."""
    from safetensors.torch import save_file

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
def verify_export(cfg: TrainConfig, path: str | Path, model, device) -> float:
    """Reload the file through open_clip and return the worst cosine between old and new features."""
    import open_clip

    started = start_weights(cfg)  # the exported file is built as the trained model was (QuickGELU)
    reloaded = open_clip.create_model(cfg.model, device=device, **Weights(
        str(path), quick_gelu=started.quick_gelu, preprocess=started.preprocess).factory_kwargs())
    reloaded.eval()
    was_training = model.training
    model.eval()
    size = reloaded.visual.preprocess_cfg["size"]
    size = (size, size) if isinstance(size, int) else tuple(size)
    images = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(0)).to(device)
    tokens = load_tokenizer(cfg.model)(["a red circle", "a photo"]).to(device)
    cos = min(
        float(torch.nn.functional.cosine_similarity(a, b).min())
        for a, b in ((model.encode_image(images, normalize=True), reloaded.encode_image(images, normalize=True)),
                     (model.encode_text(tokens, normalize=True), reloaded.encode_text(tokens, normalize=True)))
    )
    model.train(was_training)
    return cos


# --- the loop -----------------------------------------------------------------------------


def train_epoch(model, loader, optimizer, scaler, loss_fn, cfg: TrainConfig, device, precision,
                epoch: int, step: int, total_steps: int) -> tuple[int, float]:
    """One epoch of contrastive steps; returns (global step, mean loss)."""
    from tqdm import tqdm

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
        with autocast(device, precision):
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
    import open_clip

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    random.seed(cfg.seed)
    out_dir = Path(cfg.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    device, precision = resolve_device(cfg)
    model, train_tf, val_tf, tokenizer = build_model(cfg, device)
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
    cosine = verify_export(cfg, export, model, device)
    print(f"exported {export} ({export.stat().st_size / 1e6:.1f} MB, reload cosine {cosine:.5f})", flush=True)
    return {"weights": str(export), "checkpoint": str(checkpoint) if checkpoint else None,
            "metrics": record, "export_cosine": cosine}
