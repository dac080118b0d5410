"""The words of a text that say what to look for, and the vocabulary a model reads.

Confidence (``pipeline.confidence``) compares a text with rival descriptions; which phrases count as
rivals of a text is decided on *content words* (stems, without function words and words that name
the medium), so "a photo of red circles" and "red circle" are the same request. The vocabulary is
where rival phrases come from: the words a model can read, without labels from the user; a bundled
model of a closed world (shapes-tiny) also ships its world's descriptions, its default rivals
(``models.registry.ClosedWorld``, data beside the model).
"""
from __future__ import annotations

import re

from vidsift.models.registry import ClosedWorld, bundled

VOCABULARY_SIZE = 10_000       # English words read by fit_calibration (most frequent first)
# Function words, and words that name the medium rather than what it shows.
STOP_WORDS = frozenset("""
a an the this that these those it its it's there here some any each every no not
of on in at to into onto from by with without for about over under above below near between behind
and or but as than then so very just also only
is are was were be been being am has have had do does did can could will would should may might
i me my we our you your he him his she her they them their who whom which what where when how
photo photos picture pictures image images video videos clip clips frame frames footage still stills
scene scenes shot shots showing shows show shown seen view
""".split())


def _stem(word: str) -> str:
    """A plural and its singular are one word here ("circles" is no rival of "circle")."""
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 4 and word.endswith(("sses", "xes", "ches", "shes")):
        return word[:-2]
    if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
        return word[:-1]
    return word


def words_of(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+(?:'[a-z]+)?", (text or "").lower())


def content_words(text: str) -> frozenset[str]:
    """The words of ``text`` that say what to look for (stems, without function/medium words)."""
    return frozenset(_stem(w) for w in words_of(text) if w not in STOP_WORDS)


def english_vocabulary(size: int = VOCABULARY_SIZE) -> list[str]:
    """The ``size`` most frequent whole English words of open_clip's tokenizer vocabulary (its BPE
    merges come in frequency order), without function words: what any open_clip text tower reads."""
    # lazy: open_clip.tokenizer loads torch (~5 s); search and `vidsift --help` import this module
    from open_clip.tokenizer import SimpleTokenizer

    out: list[str] = []
    for token in SimpleTokenizer().encoder:
        if not token.endswith("</w>"):
            continue
        word = token[:-4]
        if 3 <= len(word) <= 15 and word.isascii() and word.isalpha() and word.islower() \
                and word not in STOP_WORDS:
            out.append(word)
            if len(out) >= size:
                break
    return out


def closed_world(spec) -> ClosedWorld | None:
    """The closed world of ``spec``'s model when it is a bundled one trained on it (not other weights
    under its name); every other model reads English."""
    model = None if spec.pretrained else bundled(spec.name)
    return model.closed_world() if model else None


def model_vocabulary(spec, size: int = VOCABULARY_SIZE) -> tuple[list[str], str]:
    """(words, where they come from) for the model of ``spec``."""
    world = closed_world(spec)
    if world is not None:
        return list(world.words), f"the words of {spec.name}'s training captions"
    return english_vocabulary(size), f"the {size} most frequent English words of the open_clip tokenizer"


def world_descriptions(spec) -> tuple[list[str], str] | None:
    """(descriptions, where they come from) of a closed-world model's world, else None."""
    world = closed_world(spec)
    if world is None:
        return None
    return list(world.descriptions), f"the descriptions of {spec.name}'s world"
