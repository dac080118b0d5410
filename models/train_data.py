"""Batches for contrastive training: images through the model's train transform, captions
tokenized, and a sampler that keeps items of one group (e.g. one label) out of the same batch,
because CLIP's loss counts every other pair of a batch as a negative."""
from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, IterableDataset, RandomSampler, Sampler

from .train_config import TrainConfig


def to_pil(image) -> Image.Image | torch.Tensor:
    if isinstance(image, np.ndarray):
        return Image.fromarray(image)
    return image


def to_batch(images: Sequence, transform) -> torch.Tensor:
    """PIL images and uint8 arrays through ``transform``; already normalised tensors as they are."""
    return torch.stack([im if isinstance(im, torch.Tensor) else transform(im) for im in map(to_pil, images)])


class Collate:
    """Images through a transform (PIL/uint8 arrays; tensors pass as they are), captions tokenized."""

    def __init__(self, transform, tokenizer):
        self.transform, self.tokenizer = transform, tokenizer

    def __call__(self, batch):
        images = to_batch([image for image, _ in batch], self.transform)
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
