"""The typed settings of a training run (``vidsift train``, ``scripts/train_shapes_tiny.py``), and
what a run starts from: the device, the precision and the weights, resolved as inference resolves
them (``models.loading``), so a trained model embeds frames exactly as the one it started from."""
from __future__ import annotations

from dataclasses import dataclass, fields

import torch

from .errors import ModelUnavailableError
from .loading import PRECISIONS, Weights, check_weights, pick_device, resolve_precision
from .registry import bundled
from .spec import ModelSpec

LEGACY_PRECISIONS = {"amp": "fp16", "amp_bf16": "bf16"}  # the names training used before (old config.json files)
EXPORT_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


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
        if self.export_dtype not in EXPORT_DTYPES:
            raise ValueError(f"export_dtype must be fp32, fp16 or bf16, got {self.export_dtype!r}")

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def resolve_device(cfg: TrainConfig) -> tuple[torch.device, str]:
    """(device, a name of ``PRECISIONS``): ``auto`` as for inference (``loading.resolve_precision``)."""
    device = pick_device(cfg.device)
    return device, resolve_precision(cfg.precision, device)


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
