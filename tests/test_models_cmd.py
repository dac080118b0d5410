"""The archive remembers its models: `search`, `index`, `status` without --model use the model the
archive was indexed with (its default one), and `vidsift models` lists them and switches the default.

shapes-tiny (bundled) answers the semantic checks; the second model (ViT-S-32, random weights) is
for plumbing only.
"""
import json
import shutil

import lancedb
import pytest

from vidsift.app.cli import main
from vidsift.models.spec import DEFAULT_MODEL, DEFAULT_PRETRAINED
from vidsift.pipeline.archive_models import ArchiveModel, choose_spec, find_model
from vidsift.pipeline.errors import InputError
from vidsift.pipeline.store import MODELS_TABLE
from tests.conftest import make_video, run_cli

PAIRS = [("blue", "square"), ("red", "star"), ("yellow", "triangle"), ("white", "circle")]
SECOND = ["--model", "ViT-S-32", "--pretrained", "none"]
FIXED = ["--segments", "fixed", "--window", "2"]


@pytest.fixture(scope="module")
def tiny_archive(tmp_path_factory):
    """Four 2-second scenes (the red star second), indexed with shapes-tiny."""
    base = tmp_path_factory.mktemp("models")
    make_video(base / "videos" / "four.mp4", fps=10, durations=(2.0,) * 4, pairs=PAIRS, size=(320, 240))
    db = base / "db.lance"
    result = run_cli("index", base / "videos", "--db", db, "--model", "shapes-tiny", "--no-ray", *FIXED)
    assert result.returncode == 0, result.stderr
    return base / "videos", db


@pytest.fixture
def archive_copy(tiny_archive, tmp_path):
    videos, db = tiny_archive
    shutil.copytree(db, tmp_path / "db.lance")
    return videos, tmp_path / "db.lance"


def cli(capfd, *argv) -> tuple[int, str, str]:
    """`vidsift ...` in this process (the same ``main`` as the command): status, stdout, stderr."""
    capfd.readouterr()
    status = main([str(a) for a in argv])
    out, err = capfd.readouterr()
    return status, out, err


def old_style(db) -> None:
    """The models table as vidsift wrote it before it kept weights and a default: ``suffix``,
    ``model``, ``dim`` (its rows kept)."""
    conn = lancedb.connect(str(db))
    rows = conn.open_table(MODELS_TABLE).to_arrow().select(["suffix", "model", "dim"])
    conn.drop_table(MODELS_TABLE)
    conn.create_table(MODELS_TABLE, data=rows)


def test_search_without_model_answers_with_the_model_that_indexed_the_archive(tiny_archive):
    _, db = tiny_archive
    result = run_cli("search", "a red star", "--db", db, "-k", "2", "--json")
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["model"].startswith("shapes-tiny|bundled-")
    best = answer["results"][0]
    assert (best["start"], best["end"], best["match"]) == (2.0, 4.0, True), answer["results"]
    human = run_cli("search", "a red star", "--db", db, "-k", "1")
    assert human.returncode == 0 and "0:02.00-0:04.00" in human.stdout and "match" in human.stdout


def test_models_lists_each_model_as_text_and_json(tiny_archive, capfd):
    _, db = tiny_archive
    status, out, _ = cli(capfd, "models", "--db", db, "--json")
    assert status == 0
    listing = json.loads(out)
    (model,) = listing["models"]
    assert listing["default"] == model["model"] and model["default"] is True
    assert (model["name"], model["dim"], model["videos"], model["segments"], model["ann_index"]) == (
        "shapes-tiny", 128, 1, 4, False)
    assert model["weights"].startswith("bundled-") and model["model"] == f"shapes-tiny|{model['weights']}"
    status, out, _ = cli(capfd, "models", "--db", db)
    assert status == 0
    row = next(line for line in out.splitlines() if "shapes-tiny" in line)
    assert row.split()[:7] == ["*", "shapes-tiny", model["weights"], "128", "1", "4", "no"]
    status, out, _ = cli(capfd, "status", "--db", db)
    assert status == 0 and f"{model['model']} (default): 1 videos" in out
    status, out, _ = cli(capfd, "models", "--db", db.parent / "nothing-here", "--json")
    assert status == 0 and json.loads(out)["models"] == []


def test_a_second_model_is_indexed_beside_the_default_and_switching_is_one_command(archive_copy, capfd):
    videos, db = archive_copy
    status, out, err = cli(capfd, "index", videos, "--db", db, *SECOND, "--no-ray", *FIXED, "--json")
    assert status == 0, err
    assert json.loads(out)["model"] == "ViT-S-32|random"
    # Without --model, index (and search) keep the archive's default: shapes-tiny, already done.
    status, out, err = cli(capfd, "index", videos, "--db", db, "--no-ray", *FIXED, "--json")
    assert status == 0, err
    report = json.loads(out)
    assert report["model"].startswith("shapes-tiny|") and (report["indexed"], report["skipped"]) == (0, 1)

    listing = json.loads(cli(capfd, "models", "--db", db, "--json")[1])
    assert [(m["name"], m["dim"], m["videos"], m["default"]) for m in listing["models"]] == [
        ("shapes-tiny", 128, 1, True), ("ViT-S-32", 384, 1, False)]

    status, out, err = cli(capfd, "models", "--db", db, "--default", "ViT-S-32")
    assert status == 0, err
    assert out.splitlines()[0] == f"default model of {db}: ViT-S-32 (was {listing['default']})"
    status, out, err = cli(capfd, "search", "a red star", "--db", db, "-k", "1", "--json")
    assert status == 0, err
    assert json.loads(out)["model"] == "ViT-S-32|random"

    status, out, err = cli(capfd, "models", "--db", db, "--default", "ViT-B-32")
    assert status == 2 and out == ""
    assert err.strip().splitlines() == [
        f"vidsift models: error: no model 'ViT-B-32' in {db}; known: shapes-tiny, ViT-S-32"]
    assert json.loads(cli(capfd, "models", "--db", db, "--json")[1])["default"] == "ViT-S-32|random"

    status, out, _ = cli(capfd, "models", "--db", db, "--default", listing["default"], "--json")  # NAME|WEIGHTS too
    assert status == 0 and json.loads(out)["changed"] == {"from": "ViT-S-32|random", "to": listing["default"]}
    status, out, _ = cli(capfd, "search", "a red star", "--db", db, "-k", "1", "--json")
    assert json.loads(out)["model"] == listing["default"]


def test_an_archive_made_before_models_were_remembered_still_opens(archive_copy, capfd):
    videos, db = archive_copy
    old_style(db)
    status, out, err = cli(capfd, "search", "a red star", "--db", db, "-k", "1", "--json")
    assert status == 0, err  # its only model is its default
    assert json.loads(out)["model"].startswith("shapes-tiny|") and json.loads(out)["results"][0]["start"] == 2.0
    assert json.loads(cli(capfd, "models", "--db", db, "--json")[1])["models"][0]["default"] is True

    # The same name with other weights, in an old archive: no default, so a command must be told.
    status, _, err = cli(capfd, "index", videos, "--db", db, "--model", "shapes-tiny", "--pretrained", "none",
                         "--no-ray", *FIXED)
    assert status == 0, err
    old_style(db)
    status, _, err = cli(capfd, "search", "a red star", "--db", db)
    assert status == 2 and "holds 2 models and none is its default" in err and "vidsift models --default" in err
    status, _, err = cli(capfd, "models", "--db", db, "--default", "shapes-tiny")
    assert status == 2 and "several weights" in err and "shapes-tiny|random" in err
    status, out, err = cli(capfd, "models", "--db", db, "--default", "shapes-tiny|random")
    assert status == 0, err
    status, out, _ = cli(capfd, "search", "a red star", "--db", db, "-k", "1", "--json")
    assert status == 0 and json.loads(out)["model"] == "shapes-tiny|random"
    status, out, _ = cli(capfd, "search", "a red star", "--db", db, "-k", "1", "--json", "--model", "shapes-tiny")
    assert status == 0 and json.loads(out)["model"] == "shapes-tiny|random"  # the name alone: the default's weights


def test_choosing_a_spec_fills_in_from_the_archive_what_the_user_left_out():
    pe = ArchiveModel("pe", "PE-Core-B-16|meta", 512, "meta", is_default=True)
    vit = ArchiveModel("vit", "ViT-B-32|random", 512, "none")
    assert choose_spec([]).key == f"{DEFAULT_MODEL}|{DEFAULT_PRETRAINED}"  # a new archive
    assert choose_spec([pe, vit]).key == "PE-Core-B-16|meta"  # its default
    assert choose_spec([pe, vit], "PE-Core-B-16").key == "PE-Core-B-16|meta"  # the archive's weights
    assert choose_spec([pe, vit], "ViT-B-32").key == "ViT-B-32|random"
    assert choose_spec([pe, vit], "ViT-B-32", "openai").key == "ViT-B-32|openai"  # both given: exactly that
    assert choose_spec([pe, vit], None, "none").key == "PE-Core-B-16|random"  # weights alone: the default's name
    assert choose_spec([pe, vit], "ViT-L-14").key == f"ViT-L-14|{DEFAULT_PRETRAINED}"  # not in the archive
    spec = choose_spec([pe], device="cpu", precision="fp32")
    assert (spec.device, spec.precision) == ("cpu", "fp32")
    assert find_model([pe, vit], "ViT-B-32") == vit and find_model([pe, vit], "PE-Core-B-16|meta") == pe
    with pytest.raises(InputError, match="known: PE-Core-B-16, ViT-B-32"):
        find_model([pe, vit], "RN50")
    unmarked = [ArchiveModel("pe", "PE-Core-B-16|meta", 512, "meta"), vit]
    with pytest.raises(InputError, match="none is its default"):
        choose_spec(unmarked)
