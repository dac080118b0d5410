"""Validation of a model in training: zero-shot top-1 over a labelled set (open_clip's prompt
ensemble, and the bare class name) and text->image R@1, per split of the classes (e.g. seen and
held-out pairs), so a run's ``metrics.jsonl`` shows whether it generalises, not only its loss."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from open_clip import build_zero_shot_classifier

from .loading import PRECISIONS, autocast
from .train_data import to_batch


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


@torch.no_grad()
def encode_images(model, images: Sequence, transform, device, precision, batch_size: int) -> torch.Tensor:
    feats = []
    for begin in range(0, len(images), batch_size):
        batch = to_batch(images[begin:begin + batch_size], transform)
        with autocast(device, PRECISIONS[precision]):
            feats.append(model.encode_image(batch.to(device), normalize=True).float())
    return torch.cat(feats)


@torch.no_grad()
def encode_texts(model, tokenizer, texts: Sequence[str], device, precision) -> torch.Tensor:
    with autocast(device, PRECISIONS[precision]):
        return model.encode_text(tokenizer(list(texts)).to(device), normalize=True).float()


@torch.no_grad()
def evaluate(model, tokenizer, val: ValData, transform, device, precision, batch_size: int = 256) -> dict:
    """Zero-shot top-1 (prompt ensemble, and the bare class name) and text->image R@1 per split.

    R@1 asks, for each class in the split and each template used alone as a query, whether the
    best-matching image over the whole set shows that class.
    """
    was_training = model.training
    model.eval()
    image_feats = encode_images(model, val.images, transform, device, precision, batch_size)
    labels = torch.as_tensor(list(val.labels), device=device)
    with autocast(device, PRECISIONS[precision]):
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
