"""Confidence and "no match" through the real `vidsift` CLI (bundled shapes-tiny): search text and
JSON, --matches-only, classify's "none of these labels", and `vidsift calibrate`."""
import json

import pytest

from tests.conftest import make_video, run_cli

TINY = ["--model", "shapes-tiny"]


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    root = tmp_path_factory.mktemp("confidence-cli")
    make_video(root / "videos" / "green.mp4", fps=10, durations=(3.0,), pairs=[("green", "circle")])
    make_video(root / "videos" / "blue.mp4", fps=10, durations=(3.0,), pairs=[("blue", "square")])
    db = root / "db"
    indexed = run_cli("index", root / "videos", "--db", db, *TINY, "--no-ray", "--json")
    assert indexed.returncode == 0, indexed.stderr
    return root, db


def test_search_says_no_match_and_marks_the_closest_weak(archive):
    _, db = archive
    absent = run_cli("search", "a red circle", "--db", db, *TINY, "-k", "2")
    assert absent.returncode == 0, absent.stderr
    lines = absent.stdout.strip().splitlines()
    assert lines[0].startswith('no match for "a red circle"')
    ranked = [line for line in lines if line.strip()[:1].isdigit()]
    assert len(ranked) == 2 and all(" weak " in line for line in ranked)

    payload = json.loads(run_cli("search", "a red circle", "--db", db, *TINY, "-k", "2", "--json").stdout)
    assert payload["matches"] == 0 and len(payload["results"]) == 2
    assert all(r["match"] is False and 0 <= r["confidence"] < 0.5 for r in payload["results"])
    assert {"rank", "score", "path", "start", "end"} <= set(payload["results"][0])  # existing keys stay

    only = run_cli("search", "a red circle", "--db", db, *TINY, "--matches-only")
    assert only.stdout.strip().splitlines()[0].startswith('no match for "a red circle"')
    assert not [line for line in only.stdout.splitlines() if line.strip()[:1].isdigit()]

    present = json.loads(run_cli("search", "a green circle", "--db", db, *TINY, "-k", "2", "--json").stdout)
    top = present["results"][0]
    assert top["path"].endswith("green.mp4") and top["match"] is True and top["confidence"] > 0.5
    assert present["matches"] >= 1


def test_a_second_search_reads_the_default_bank_from_the_cache(archive, tmp_path):
    """The default rival bank is embedded by the first one-shot search and stored once per model;
    the next search reads it (the file is not written again) and answers the same."""
    _, db = archive
    env = {"VIDSIFT_CACHE_DIR": str(tmp_path / "cache")}
    first = run_cli("search", "a green circle", "--db", db, *TINY, "-k", "2", "--json", env=env)
    assert first.returncode == 0, first.stderr
    banks = list((tmp_path / "cache" / "rival-banks").glob("*.npz"))
    assert len(banks) == 1
    written = banks[0].stat().st_mtime_ns
    second = run_cli("search", "a green circle", "--db", db, *TINY, "-k", "2", "--json", env=env)
    assert second.returncode == 0, second.stderr
    assert list((tmp_path / "cache" / "rival-banks").glob("*.npz")) == banks
    assert banks[0].stat().st_mtime_ns == written
    assert json.loads(second.stdout)["results"] == json.loads(first.stdout)["results"]


def test_classify_answers_none_when_no_label_fits(archive):
    root, _ = archive
    clip = root / "videos" / "green.mp4"
    none = json.loads(run_cli("classify", clip, *TINY, "--labels", "a red circle,a blue square", "--json").stdout)
    assert none["label"] is None
    assert all(row["match"] is False for row in none["labels"])
    fits = json.loads(run_cli("classify", clip, *TINY, "--labels", "a green circle,a blue square", "--json").stdout)
    assert fits["label"] == "a green circle"


def test_calibrate_fits_a_calibration_that_search_then_reports(archive):
    _, db = archive
    fitted = run_cli("calibrate", "--db", db, *TINY, "--json")
    assert fitted.returncode == 0, fitted.stderr
    payload = json.loads(run_cli("search", "a blue square", "--db", db, *TINY, "--json").stdout)
    assert payload["calibration"]["source"] == "fitted"
    assert payload["results"][0]["path"].endswith("blue.mp4") and payload["results"][0]["match"] is True
