"""The models an archive was indexed with, as the ``models`` table records them, and which one a
command uses when the user names none.

An archive remembers its models so that nobody has to repeat ``--model``/``--pretrained`` after
indexing: each row of the ``models`` table holds the model key (``name|weights``, see
``ModelSpec.key``), the table suffix, the dimension, what to hand open_clip to load the same weights
again (``pretrained``: a tag, ``none``, empty for a bundled model, or a checkpoint's absolute path)
and whether it is the archive's default. From these, ``ArchiveModel.spec`` rebuilds the spec.

Archives made before these columns existed hold ``suffix``, ``model`` and ``dim`` only. They open
as they are: the weights are read back from the key (a tag, ``random``, ``bundled-...``), except a
checkpoint's path, which the key does not hold (its content hash only); such a model needs
``--pretrained PATH`` once given again. Their only model is their default; an old archive with
several models has none until ``vidsift models --default`` picks one. The columns are added the
first time the archive is written by this version (``VideoStore`` migrates the table).
"""
from __future__ import annotations

from dataclasses import dataclass

from vidsift.models.spec import ModelSpec, resolve_spec

from .errors import InputError


def weights_of(key: str) -> str:
    """The weights part of a model key (``laion2b_s34b_b79k``, ``random``, ``bundled-…``, ``ckpt-…``)."""
    return key.split("|", 1)[1] if "|" in key else ""


def pretrained_from_key(key: str) -> str | None:
    """What ``--pretrained`` gives these weights again, read from the key alone; None for a
    checkpoint (the key holds its content hash, not its path) or a key that is not a model key."""
    if "|" not in key:
        return None
    weights = weights_of(key)
    if weights == "random":
        return "none"
    if weights.startswith("bundled-"):
        return ""
    if weights.startswith("ckpt-") or not weights:
        return None
    return weights


@dataclass(frozen=True)
class ArchiveModel:
    """One model of an archive: a row of its ``models`` table."""

    suffix: str
    key: str
    dim: int
    pretrained: str | None  # None: a checkpoint whose path this archive does not record
    is_default: bool = False

    @classmethod
    def from_row(cls, row: dict) -> "ArchiveModel":
        key = row["model"]
        pretrained = row.get("pretrained")
        return cls(suffix=row["suffix"], key=key, dim=int(row["dim"] or 0),
                   pretrained=pretrained if pretrained is not None else pretrained_from_key(key),
                   is_default=bool(row.get("is_default")))

    @property
    def name(self) -> str:
        return self.key.split("|", 1)[0]

    @property
    def table_suffix(self) -> str:
        """As ``ModelSpec.table_suffix``: so ``VideoStore.model`` takes an archive's model as it takes a spec."""
        return self.suffix

    @property
    def weights(self) -> str:
        return weights_of(self.key)

    def spec(self, device: str = "auto", precision: str = "auto") -> ModelSpec:
        """The spec that loads this model's weights again, or ``InputError`` saying what to give
        when they cannot be found (a checkpoint moved, changed or never recorded)."""
        if self.pretrained is None:
            raise InputError(f"model {self.key}: this archive does not record where its checkpoint is (indexed "
                             f"before vidsift kept the path): give --model {self.name} --pretrained PATH")
        spec = ModelSpec(name=self.name, pretrained=self.pretrained, device=device, precision=precision)
        if spec.key != self.key:
            if spec.is_local_file:
                raise InputError(f"{self.pretrained}: this checkpoint is gone or changed since the archive was "
                                 f"indexed with it ({self.key}): give --model {self.name} --pretrained PATH of "
                                 "the same weights")
            raise InputError(f"model {self.key}: its weights changed since this archive was indexed (now "
                             f"{spec.key}): re-index with --model {self.name}")
        return spec


def default_model(models: list[ArchiveModel], where: str = "the archive") -> ArchiveModel | None:
    """The model a command uses when none is named: the one marked default, else the only one;
    None for an empty archive; ``InputError`` when several are there and none is marked (an
    archive made before defaults were kept)."""
    marked = [m for m in models if m.is_default]
    if marked:
        return marked[0]
    if len(models) == 1:
        return models[0]
    if not models:
        return None
    raise InputError(f"{where} holds {len(models)} models and none is its default: pick one with "
                     f"`vidsift models --default NAME` or give --model ({', '.join(label(m, models) for m in models)})")


def label(model: ArchiveModel, models: list[ArchiveModel]) -> str:
    """How the user names ``model``: its name alone when no other model of the archive shares it,
    else ``name|weights``."""
    return model.name if sum(m.name == model.name for m in models) == 1 else model.key


def find_model(models: list[ArchiveModel], wanted: str, where: str = "the archive") -> ArchiveModel:
    """The model a user named (its name, ``name|weights``, or its table suffix), or ``InputError``
    listing the known ones."""
    wanted = (wanted or "").strip()
    for model in models:
        if wanted in (model.key, model.suffix):
            return model
    same = [m for m in models if m.name == wanted]
    if len(same) == 1:
        return same[0]
    if same:
        raise InputError(f"{where} holds {wanted} with several weights: name one of "
                         f"{', '.join(m.key for m in same)}")
    known = ", ".join(label(m, models) for m in models) if models else "none (run `vidsift index` first)"
    raise InputError(f"no model {wanted!r} in {where}; known: {known}")


def choose_spec(models: list[ArchiveModel], name: str | None = None, pretrained: str | None = None,
                device: str = "auto", precision: str = "auto", where: str = "the archive") -> ModelSpec:
    """The spec a command uses, filling in from the archive what the user left out.

    - nothing given: the archive's default model (an empty archive: ViT-B-32 with LAION weights);
    - ``--model NAME`` alone: that model with the weights the archive holds it with (the default
      one when it holds several), or, if the archive does not hold it, its usual weights;
    - ``--pretrained`` alone: those weights for the default model's name;
    - both: exactly those.
    """
    if name is None:
        default = default_model(models, where)
        if default is None:
            return resolve_spec(None, pretrained, device, precision)
        if pretrained is None:
            return default.spec(device, precision)
        return resolve_spec(default.name, pretrained, device, precision)
    if pretrained is None:
        same = [m for m in models if m.name == name]
        if len(same) > 1:
            marked = [m for m in same if m.is_default]
            if not marked:
                options = ", ".join(repr(m.pretrained) if m.pretrained is not None else "its checkpoint path"
                                    for m in same)
                raise InputError(f"{where} holds {name} with several weights ({', '.join(m.weights for m in same)}): "
                                 f"give --pretrained ({options}), or make one the default with "
                                 f"`vidsift models --default {name}|WEIGHTS`")
            same = marked
        if same:
            return same[0].spec(device, precision)
    return resolve_spec(name, pretrained, device, precision)
