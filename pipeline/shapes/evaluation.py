"""The shapes world's evaluation: the product's figures with the world's labels and splits.

The product measures any labelled archive against a ``Vocabulary`` (``pipeline.eval_truth``); this
module supplies the shapes world's: its 28 labels (or a user's ``--labels-file``), seen and held-out
colour-shape pairs reported apart, and queries of other worlds for the "no match" decision. The
signatures are those `vidsift eval`, the benchmarks and the tests have always called.
"""
from __future__ import annotations

from ..eval_no_match import no_match_report as _no_match_report
from ..eval_no_match import open_set_classification as _open_set_classification
from ..eval_report import full_report as _full_report
from ..eval_truth import Vocabulary
from ..store import VideoStore
from .world import OUT_OF_WORLD_QUERIES, SPLITS, all_labels, split_of


def vocabulary(labels: list[str] | None = None) -> Vocabulary:
    """The world's 28 labels (or ``labels``), split into seen and held-out pairs."""
    return Vocabulary(tuple(labels or all_labels()), SPLITS, split_of)


def full_report(store: VideoStore, encoder, videos: list[dict], labels: list[str] | None = None,
                templates: list[str] | None = None, sampling_interval: float = 1.0, pooling: str = "mean") -> dict:
    """``eval_report.full_report`` over the world's labels, seen and held-out pairs apart."""
    return _full_report(store, encoder, videos, vocabulary(labels), templates, sampling_interval, pooling)


def no_match_report(store: VideoStore, encoder, videos: list[dict], calibration, k: int = 10,
                    labels: list[str] | None = None, templates: list[str] | None = None,
                    out_of_world: tuple[str, ...] = OUT_OF_WORLD_QUERIES, seed: int = 0) -> dict:
    """``eval_no_match.no_match_report`` over the world's labels and its out-of-world queries."""
    return _no_match_report(store, encoder, videos, calibration, vocabulary(labels), k, templates, out_of_world,
                            seed)


def open_set_classification(store: VideoStore, encoder, videos: list[dict], calibration,
                            labels: list[str] | None = None, templates: list[str] | None = None,
                            small_sets: int = 3, seed: int = 0) -> dict:
    """``eval_no_match.open_set_classification`` over the world's labels."""
    return _open_set_classification(store, encoder, videos, calibration, vocabulary(labels), templates,
                                    small_sets, seed)


def format_no_match(report: dict) -> str:
    """The human lines of ``no_match_report`` (at the threshold, seen / held-out / all)."""
    at = report["at_threshold"]

    def f(cell):
        return "   -  " if cell["rate"] is None else f"{cell['rate']:.3f} ({cell['hits']}/{cell['n']})"

    cal = report["calibration"]
    lines = [f"no match (top {report['k']}, confidence > {report['threshold']:g} = match; calibration: "
             f"{cal['source']}; {report['labels_present']} labels present, {report['labels_absent']} absent)"]
    names = [("absent answered no match", "no_match_recall"), ("no match precision", "no_match_precision"),
             ("false no match, present", "false_no_match_present"), ("false match, absent", "false_match_absent"),
             ("present: top hit marked match", "present_top1_match"), ("present: R@1", "present_R@1")]
    lines.append(f"  {'':<32}{'seen':<20}{'held-out':<20}all")
    for title, key in names:
        lines.append(f"  {title:<32}{f(at['seen'][key]):<20}{f(at['heldout'][key]):<20}{f(at['all'][key])}")
    lines.append(f"  out-of-world/gibberish no match  {f(at['out_of_world_no_match'])}")
    osc = report["open_set_classification"]
    lines.append(f"  classify without the true label: none {f(osc['none_without_true_label']['seen'])} seen, "
                 f"{f(osc['none_without_true_label']['heldout'])} held-out; small sets "
                 f"{f(osc['none_small_sets_without_true_label']['seen'])} seen, "
                 f"{f(osc['none_small_sets_without_true_label']['heldout'])} held-out")
    lines.append(f"  classify top-1 with none {f(osc['top1_with_none']['seen'])} seen, "
                 f"{f(osc['top1_with_none']['heldout'])} held-out (before: {f(osc['top1_before']['seen'])}, "
                 f"{f(osc['top1_before']['heldout'])})")
    if osc["multi_scene_all_labels_match"]["n"]:
        lines.append(f"  multi-scene clips with every shown label matched {f(osc['multi_scene_all_labels_match'])}")
    lines.append(f"  reliability: ECE {report['reliability']['ece']:.3f} over {report['reliability']['n']} hits")
    return "\n".join(lines)
