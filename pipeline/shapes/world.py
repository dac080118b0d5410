"""Vocabulary of the shapes world v1 (see docs/shapes-world.md).

The shapes world is the synthetic domain vidsift's demo model is trained and tested on, because
real CLIP weights cannot be downloaded offline. Everything here is plain data so that the
renderer, the caption generator, the training split and the label sets all agree on one
definition of the world instead of repeating the spec's numbers.
"""

from __future__ import annotations

SPEC_VERSION = "shapes-world v1"

#: Fill colours, exactly as the spec lists them (RGB, 0..255).
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 200, 60),
    "blue": (40, 80, 230),
    "yellow": (240, 220, 40),
    "purple": (150, 60, 200),
    "orange": (245, 140, 30),
    "white": (240, 240, 240),
}

#: Object shapes. The order is part of the stable label order of `all_labels`.
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star")

#: Uniform background colours (RGB); noise, if any, is added on top.
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "black": (0, 0, 0),
    "gray": (128, 128, 128),
}

#: Colour-shape pairs that must never be seen in training (zero-shot split).
HELDOUT: frozenset[tuple[str, str]] = frozenset(
    {
        ("purple", "star"),
        ("orange", "triangle"),
        ("green", "circle"),
        ("yellow", "square"),
        ("blue", "star"),
    }
)

# Free phrasings used for contrastive captions; "{x}" is the bare "colour shape" phrase,
# "{a}" the same with its article ("an orange star").
_PHRASINGS: tuple[str, ...] = (
    "{a}",
    "{x}",
    "a photo of {a}",
    "a picture of {a}",
    "an image of {a}",
    "a video of {a}",
    "a frame showing {a}",
    "a still of {a}",
    "a clip of {a}",
    "a video frame with {a}",
    "there is {a}",
    "{a} moving around",
    "a scene with {a}",
    "footage of {a}",
    "a single {x}",
)

_BACKGROUND_PHRASINGS: tuple[str, ...] = (
    "{a} on a {bg} background",
    "a photo of {a} on a {bg} background",
    "{x} against {bg}",
    "a {bg} frame with {a}",
)


def _check(colour: str, shape: str) -> None:
    """Fail loudly on typos: a misspelt colour would silently create a 29th label."""
    if colour not in COLOURS:
        raise ValueError(f"unknown colour {colour!r}; expected one of {sorted(COLOURS)}")
    if shape not in SHAPES:
        raise ValueError(f"unknown shape {shape!r}; expected one of {list(SHAPES)}")


def article(word: str) -> str:
    """Return the English indefinite article for `word` ("an orange", "a red")."""
    return "an" if word[:1].lower() in "aeiou" else "a"


def label(colour: str, shape: str) -> str:
    """Canonical label of a scene, e.g. "a red circle" or "an orange star"."""
    _check(colour, shape)
    return f"{article(colour)} {colour} {shape}"


def parse_label(text: str) -> tuple[str, str]:
    """Inverse of `label`: "an orange star" -> ("orange", "star")."""
    words = text.strip().lower().split()
    if len(words) == 3 and words[0] in ("a", "an"):
        words = words[1:]
    if len(words) != 2:
        raise ValueError(f"not a shapes-world label: {text!r}")
    colour, shape = words
    _check(colour, shape)
    return colour, shape


def all_pairs() -> list[tuple[str, str]]:
    """All 28 (colour, shape) pairs in the stable order colour-major, then shape."""
    return [(c, s) for c in COLOURS for s in SHAPES]


def all_labels() -> list[str]:
    """All 28 labels in a stable order (colour-major, as in COLOURS, then SHAPES)."""
    return [label(c, s) for c, s in all_pairs()]


def is_heldout(colour: str, shape: str) -> bool:
    """True for the five zero-shot pairs that training must never see."""
    _check(colour, shape)
    return (colour, shape) in HELDOUT


def caption_variants(colour: str, shape: str, background: str | None = None) -> list[str]:
    """Varied free phrasings of one label, for contrastive text augmentation.

    The spec allows queries to be phrased freely around the label words, so training on several
    phrasings keeps the text tower from overfitting to the exact label template. Background
    phrasings are added only when `background` is given. Held-out pairs are NOT filtered here:
    callers building training captions must skip `is_heldout` pairs themselves.
    """
    _check(colour, shape)
    if background is not None and background not in BACKGROUNDS:
        raise ValueError(f"unknown background {background!r}; expected one of {sorted(BACKGROUNDS)}")
    x = f"{colour} {shape}"
    a = label(colour, shape)
    out = [p.format(a=a, x=x) for p in _PHRASINGS]
    if background is not None:
        out += [p.format(a=a, x=x, bg=background) for p in _BACKGROUND_PHRASINGS]
    return out


def split_of(label_text: str) -> str:
    """"heldout" for a label of a zero-shot pair, else "seen" (also for labels of other worlds).

    Evaluation reports every figure per split, so a user's own label set (``--labels-file``) is
    counted as "seen" rather than rejected.
    """
    try:
        return "heldout" if is_heldout(*parse_label(label_text)) else "seen"
    except ValueError:
        return "seen"


#: The splits figures are reported in, in report order.
SPLITS: tuple[str, ...] = ("seen", "heldout")

#: Queries no shapes-world video shows: things of other worlds, gibberish, and words that are all
#: stop words (nothing left to look for). The "no match" decision must answer "no match" to them.
OUT_OF_WORLD_QUERIES: tuple[str, ...] = (
    "an airplane", "a bowl of soup", "a dog catching a frisbee", "a person talking", "a city street at night",
    "a sunset over the sea", "a birthday cake", "people dancing", "a red car", "a green forest",
    "xq zzv kk", "blorp fnargle", "qwerty uiop", "zzz",
    "the of and", "a", "a photo of the",
)
