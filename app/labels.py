"""Which labels and prompt templates a classification uses, for `vidsift classify` and the app's
"Tag a clip" alike: a bundled label set with its own templates, or the user's labels (typed or a
file) with the user's templates or the built-in ensemble."""
from __future__ import annotations

from vidsift.pipeline import label_sets
from vidsift.pipeline.classify import parse_labels, parse_templates


def choose_labels(label_set: str | None, labels: str | None = None, labels_file: str | None = None,
                  templates: list[str] | None = None, templates_file: str | None = None) -> tuple[list[str], list[str]]:
    """(labels, templates). The user's own labels win over ``label_set``; a set's own templates
    apply unless templates are given."""
    given = bool(templates or templates_file)
    if (label_set or "").strip() and not ((labels or "").strip() or labels_file):
        name = label_set.strip()
        chosen = label_sets.load(name)
        return chosen, parse_templates(templates, templates_file) if given else \
            (label_sets.templates(name) or parse_templates())
    return parse_labels(labels, labels_file), parse_templates(templates, templates_file)
