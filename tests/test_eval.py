"""`vidsift eval`: the metrics' arithmetic, and the command end to end on a rendered manifest."""
import json

import numpy as np
import pytest

from vidsift.app.commands.research import format_eval as _format_eval
from vidsift.models.encoder import ClipEncoder
from vidsift.models.spec import resolve_spec
from vidsift.pipeline.config import IndexConfig
from vidsift.pipeline import eval_no_match, eval_report, eval_truth, training_data
from vidsift.pipeline.confidence import load_calibration
from vidsift.pipeline.eval_no_match import THRESHOLDS
from vidsift.pipeline.eval_report import boundary_scores, rank_stats
from vidsift.pipeline.eval_truth import SplitTally, Vocabulary, iou, shows
from vidsift.pipeline.indexing import index_sequential
from vidsift.pipeline.shapes.evaluation import format_no_match, no_match_report, vocabulary
from vidsift.pipeline.shapes.world import all_labels, split_of
from vidsift.pipeline.shapes.manifest import load_manifest
from vidsift.pipeline.store import VideoStore
from tests.conftest import imported_names, make_video, run_cli


def test_metric_arithmetic():
    assert iou(0, 10, 5, 15) == pytest.approx(5 / 15)
    assert iou(0, 1, 2, 3) == 0.0
    assert boundary_scores([4.4, 9.0, 20.0], [4.0, 10.0], tolerance=0.5) == (1, 3, 2)
    assert boundary_scores([4.4, 9.6], [4.0, 10.0], tolerance=0.5) == (2, 2, 2)
    assert boundary_scores([4.1, 4.2], [4.0], tolerance=0.5) == (1, 2, 1)  # one-to-one
    stats = rank_stats([1, 1, 2, 7, 30])
    assert (stats["R@1"], stats["R@5"], stats["R@10"], stats["median_rank"]) == (0.4, 0.6, 0.8, 2.0)
    assert stats["mean_rank"] == pytest.approx(np.mean([1, 1, 2, 7, 30]))


def test_figures_split_as_the_callers_vocabulary_says():
    pets = Vocabulary(("a cat", "a dog"), ("pets", "other"), lambda label: "pets" if "cat" in label or "dog" in label
                      else "other")
    tally = SplitTally(pets)
    tally.add("a cat", True)
    tally.add("a dog", False)
    tally.add("a fish", False)
    assert tally.to_dict() == {"pets": {"rate": 0.5, "hits": 1, "n": 2}, "other": {"rate": 0.0, "hits": 0, "n": 1}}
    shapes = vocabulary()
    assert shapes.labels == tuple(all_labels()) and shapes.splits == ("seen", "heldout")
    assert split_of("a purple star") == "heldout" and split_of("a red circle") == "seen"
    assert split_of("a dog on a sofa") == "seen"  # a user's own label (--labels-file) counts as seen
    assert vocabulary(["a dog"]).labels == ("a dog",)
    video = {"scenes": [{"label": "a cat", "start": 0.0, "end": 4.0}, {"label": "a dog", "start": 4.0, "end": 6.0}]}
    assert shows(video, "a cat", 3.0, 4.5) and not shows(video, "a dog", 3.0, 4.5) and not shows(video, "a cat", 7, 8)


def test_the_products_evaluation_knows_nothing_of_the_shapes_world():
    """Product figures take any labelled archive; the shapes world plugs in its vocabulary."""
    for module in (eval_truth, eval_report, eval_no_match, training_data):
        imported = imported_names(module)
        assert imported and not any("shapes" in name or "synth" in name for name in imported), module.__name__


def test_eval_command_reports_every_figure(tmp_path):
    root = tmp_path / "set"
    entries = [
        make_video(root / "videos" / "a.mp4", fps=25, durations=(3.0, 4.0), size=(320, 240),
                   pairs=[("red", "circle"), ("blue", "square")]),
        make_video(root / "videos" / "b.mkv", fps=30, durations=(4.0, 3.0, 3.0), size=(320, 240), container="mkv",
                   pairs=[("yellow", "triangle"), ("white", "star"), ("green", "square")]),
    ]
    for entry in entries:
        entry["path"] = "videos/" + entry["path"].rsplit("/", 1)[-1]
    (root / "manifest.json").write_text(json.dumps({"videos": entries}))
    result = run_cli("eval", root / "manifest.json", "--model", "ViT-B-32", "--pretrained", "none",
                     "--fps", "2", "--no-ray", "--json", "--db", tmp_path / "db")
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["settings"]["segments"]["mode"] == "scenes" and out["settings"]["sampling"] == "2 fps"
    for pooling in ("mean", "qs"):
        r = out["results"][pooling]
        assert r["videos"] == 2 and r["scenes"] == 5
        assert r["retrieval"]["all"]["n"] == 5 and 1 <= r["retrieval"]["all"]["median_rank"] <= 2
        assert r["zero_shot"]["seen"]["top1"]["n"] == 5
        assert r["localisation"]["all"]["n"] == 5
        # three true cuts (random weights: how many are found is not a quality claim here)
        b = r["boundaries"]
        assert b["true"] == 3 and b["matched"] <= min(b["predicted"], 3) and 0.0 <= b["f1"] <= 1.0
    assert out["no_match"] and isinstance(out["no_match"], dict)  # the "no match" decision is reported too
    human = _format_eval(out["settings"], out["results"])
    assert "boundaries P" in human and "retrieval all" in human and "mIoU" in human and "pooling: qs" in human


def test_eval_reads_the_msrvtt_csv_format(tmp_path):
    videos = tmp_path / "videos"
    make_video(videos / "video7010.mp4", fps=10, durations=(2.0,), pairs=[("red", "circle")])
    make_video(videos / "video7011.mp4", fps=10, durations=(2.0,), pairs=[("blue", "square")])
    csv = tmp_path / "MSRVTT_JSFUSION_test.csv"
    csv.write_text("key,vid_key,video_id,sentence\n"
                   "ret0,msr7010,video7010,a red circle moves\n"
                   "ret1,msr7011,video7011,a blue square spins\n")
    result = run_cli("eval", csv, "--videos", videos, "--model", "ViT-B-32", "--pretrained", "none", "--no-ray",
                     "--pooling", "mean", "--json", "--db", tmp_path / "db")
    assert result.returncode == 0, result.stderr
    retrieval = json.loads(result.stdout)["results"]["mean"]["retrieval"]["all"]
    assert retrieval["n"] == 2 and 1 <= retrieval["median_rank"] <= 2
    missing = run_cli("eval", csv, "--videos", tmp_path, "--pretrained", "none", "--db", tmp_path / "db")
    assert missing.returncode == 2 and "No videos found" in missing.stderr


def test_no_match_report_on_a_manifest_of_four_labels(tmp_path):
    """`vidsift eval`'s "no match" figures (pipeline.eval_no_match.no_match_report) with shapes-tiny on a
    manifest that shows 4 of the 28 labels: the 4 are found and marked match, the 24 others answer
    "no match", and the rates over the threshold move the way a threshold moves them."""
    root = tmp_path / "set"
    entries = [
        make_video(root / "videos" / "a.mp4", fps=10, durations=(3.0,), size=(320, 240), pairs=[("red", "circle")]),
        make_video(root / "videos" / "b.webm", fps=12, durations=(3.0,), size=(320, 180), container="webm",
                   pairs=[("blue", "square")]),
        make_video(root / "videos" / "c.mkv", fps=15, durations=(3.0, 3.0), size=(320, 240), container="mkv",
                   pairs=[("yellow", "triangle"), ("white", "star")]),
    ]
    for entry in entries:
        entry["path"] = "videos/" + entry["path"].rsplit("/", 1)[-1]
    (root / "manifest.json").write_text(json.dumps({"videos": entries}))
    _, videos = load_manifest(root)
    tiny = ClipEncoder.from_spec(resolve_spec("shapes-tiny"))
    store = VideoStore(str(tmp_path / "db"))
    assert index_sequential(store, tiny, [v["abspath"] for v in videos], IndexConfig()).indexed == 3
    report = no_match_report(store, tiny, videos, load_calibration(store, tiny), k=3)
    json.dumps(report)  # what `vidsift eval --json` prints
    assert (report["labels_present"], report["labels_absent"]) == (4, 24)
    at = report["at_threshold"]["all"]
    assert at["present_R@1"]["rate"] == 1.0 and at["present_top1_match"]["rate"] == 1.0
    assert at["false_no_match_present"]["hits"] == 0 and at["false_no_match_present"]["n"] == 4
    assert at["no_match_recall"]["n"] == 24 and at["no_match_recall"]["rate"] >= 0.95, report["queries"]
    assert at["no_match_recall"]["hits"] + at["false_match_absent"]["hits"] == 24
    assert at["no_match_precision"]["rate"] == 1.0  # every "no match" was for an absent label
    seen, heldout = report["at_threshold"]["seen"], report["at_threshold"]["heldout"]
    assert seen["no_match_recall"]["n"] + heldout["no_match_recall"]["n"] == 24 and heldout["no_match_recall"]["n"] == 5
    assert report["at_threshold"]["out_of_world_no_match"]["rate"] >= 0.9, report["out_of_world"]
    # Raising the threshold never makes an absent label match nor a present one more often match.
    curve = report["curve"]
    assert [row["threshold"] for row in curve] == list(THRESHOLDS)
    for low, high in zip(curve, curve[1:]):
        assert high["all"]["false_match_absent"]["hits"] <= low["all"]["false_match_absent"]["hits"]
        assert high["all"]["present_top1_match"]["hits"] <= low["all"]["present_top1_match"]["hits"]
    osc = report["open_set_classification"]
    assert osc["none_without_true_label"]["seen"]["rate"] == 1.0 and osc["none_without_true_label"]["seen"]["n"] == 2
    assert osc["top1_with_none"]["seen"]["rate"] == 1.0 and osc["multi_scene_all_labels_match"]["rate"] == 1.0
    assert 0.0 <= report["reliability"]["ece"] <= 1.0 and report["reliability"]["n"] == 28 * 3
    human = format_no_match(report)
    assert "absent answered no match" in human and "out-of-world" in human and "held-out" in human
