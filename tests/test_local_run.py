"""The local pipeline (``pipeline.local_run``), the default runner on one machine: decoding
processes that hang or die are killed, retried and recorded as the Ray job does, while the other
videos are indexed; the app's entry point (``index_sequential``) stores the rows the CLI stores;
no decoding process outlives its job; the CLI says which runner it chose and why."""
from __future__ import annotations

import argparse
import json
import multiprocessing

import numpy as np
import pytest

from vidsift.pipeline.config import IndexConfig, SamplingConfig, SegmentConfig
from vidsift.pipeline.errors import InputError
from vidsift.pipeline.indexing import index_sequential
from vidsift.pipeline.jobs import JobLimits
from vidsift.pipeline.local_run import LocalOptions, run_local_job
from vidsift.pipeline.storage import list_inputs
from vidsift.pipeline.store import VideoStore
from tests.conftest import make_video, run_cli

CONFIG = IndexConfig(sampling=SamplingConfig(fps=2.0), segments=SegmentConfig(mode="fixed", window_s=2.0))
PAIRS = [("red", "circle"), ("blue", "square"), ("green", "star"), ("yellow", "triangle")]


@pytest.fixture(scope="module")
def tiny():
    from vidsift.models.encoder import ClipEncoder
    from vidsift.models.spec import resolve_spec

    return ClipEncoder.from_spec(resolve_spec("shapes-tiny", None))


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("local") / "in"
    for i, pair in enumerate(PAIRS):
        make_video(root / f"v{i}.mp4", fps=10, durations=(2.0, 2.0), pairs=[pair, PAIRS[(i + 1) % 4]])
    (root / "notes.mp4").write_text("not a video\n")
    return root


def rows(store: VideoStore, spec) -> dict:
    model, tables = store.model(spec), {}
    for name, key in (("videos", "video_id"), ("segments", "segment_id"), ("frames", "frame_id")):
        table = getattr(model, name)()
        tables[name] = {r[key]: r for r in table.to_arrow().to_pylist()}
    return tables


def assert_same_rows(got: dict, want: dict) -> None:
    for name in ("videos", "segments", "frames"):
        assert got[name].keys() == want[name].keys() and got[name], name
        for key, row in got[name].items():
            assert np.allclose(row["vector"], want[name][key]["vector"], atol=1e-5)
            for column, value in row.items():
                if column not in ("vector", "indexed_at"):
                    assert value == want[name][key][column], (name, key, column)


def job(store, tiny, inputs, limits=JobLimits(), config=CONFIG, workers=2):
    return run_local_job(store, tiny.spec, list_inputs([str(p) for p in inputs]), config,
                         LocalOptions(limits=limits, workers=workers, progress=False), encoder=tiny)


def test_a_killed_and_a_hung_decoder_are_recorded_while_the_others_are_indexed(tmp_path, tiny, folder, monkeypatch):
    monkeypatch.setenv("VIDSIFT_TEST_FAULT", "kill:v1.mp4,hang:v2.mp4")
    store = VideoStore(str(tmp_path / "db"))
    report = job(store, tiny, [folder], JobLimits(attempts=2, video_timeout_s=3))
    assert (report.indexed, report.runner) == (2, "local")
    failures = {f.path.rsplit("/", 1)[1]: f for f in report.failures}
    assert set(failures) == {"v1.mp4", "v2.mp4", "notes.mp4"}
    assert "gave up after 2 attempts: the decoding process died" in failures["v1.mp4"].reason
    assert "gave up after 2 attempts: the decoding process timed out after" in failures["v2.mp4"].reason
    assert "(--video-timeout)" in failures["v2.mp4"].reason and "on node" in failures["v2.mp4"].reason
    assert failures["notes.mp4"].stage == "open"  # bad input: recorded at once, never retried
    assert {f["path"] for f in store.failures()} == {f.path for f in report.failures}
    stored = rows(store, tiny.spec)["videos"].values()
    assert sorted(v["path"].rsplit("/", 1)[1] for v in stored) == ["v0.mp4", "v3.mp4"]
    assert multiprocessing.active_children() == []  # the killed, the hung and the idle processes are gone


def test_a_decoder_killed_once_is_retried_and_its_video_indexed(tmp_path, tiny, folder, monkeypatch):
    faults = tmp_path / "faults"
    faults.mkdir()
    monkeypatch.setenv("VIDSIFT_TEST_FAULT", "kill-once:v3.mp4")
    monkeypatch.setenv("VIDSIFT_TEST_FAULT_DIR", str(faults))
    store = VideoStore(str(tmp_path / "db"))
    report = job(store, tiny, [folder])
    assert len(list(faults.glob("vidsift-fault-*"))) == 1  # the process really died
    assert report.indexed == 4 and [f.path.rsplit("/", 1)[1] for f in report.failures] == ["notes.mp4"]
    monkeypatch.delenv("VIDSIFT_TEST_FAULT")
    clean = VideoStore(str(tmp_path / "clean"))
    job(clean, tiny, [folder], workers=1)
    assert_same_rows(rows(store, tiny.spec), rows(clean, tiny.spec))


def test_the_apps_entry_point_stores_the_clis_rows_with_its_tags(tmp_path, tiny, folder):
    """``index_sequential`` (the app's uploads and folder indexing) is the local pipeline: the same
    rows as `vidsift index`, the tags on every row, progress after each video, the same upkeep."""
    app = VideoStore(str(tmp_path / "app"))
    seen = []
    paths = sorted(str(p) for p in folder.iterdir())
    report = index_sequential(app, tiny, paths, IndexConfig(), tags=("holiday", "2026"),
                              on_progress=lambda done, total: seen.append((done, total)))
    assert (report.indexed, len(report.failures)) == (4, 1)
    assert seen == [(i, 5) for i in range(1, 6)]
    cli = run_cli("index", folder, "--db", tmp_path / "cli", "--model", "shapes-tiny", "--json")
    assert cli.returncode == 3, cli.stderr
    assert json.loads(cli.stdout)["runner"] == "local"
    got, want = rows(app, tiny.spec), rows(VideoStore(str(tmp_path / "cli")), tiny.spec)
    for name in ("videos", "segments"):
        assert all(r["tags"] == ["holiday", "2026"] for r in got[name].values())
        for r in got[name].values():
            r["tags"] = []
    assert_same_rows(got, want)
    assert [f["path"] for f in app.failures()] == [f["path"] for f in VideoStore(str(tmp_path / "cli")).failures()]
    assert app.model(tiny.spec).has_vector_index() == VideoStore(str(tmp_path / "cli")).model(tiny.spec).has_vector_index()
    again = index_sequential(app, tiny, paths, IndexConfig())
    assert (again.indexed, again.skipped) == (0, 4)


def _args(**kw):
    return argparse.Namespace(**{"no_ray": False, "address": None, **kw})


@pytest.mark.parametrize("kw,env,runner", [
    ({}, {}, "local"),
    ({"no_ray": True}, {"RAY_ADDRESS": "127.0.0.1:6379"}, "local"),
    ({"address": "auto"}, {}, "ray"),
    ({"address": "local"}, {}, "ray"),
    ({}, {"RAY_ADDRESS": "127.0.0.1:6379"}, "ray"),
    ({}, {"RAY_JOB_CONFIG_JSON_ENV_VAR": "{}"}, "ray"),
])
def test_the_runner_is_ray_only_for_a_cluster_or_when_asked(kw, env, runner):
    from vidsift.app.commands.index import choose_runner

    chosen, why = choose_runner(_args(**kw), env)
    assert chosen == runner and why


def test_no_ray_with_an_address_is_refused():
    from vidsift.app.commands.index import choose_runner

    with pytest.raises(InputError, match="--no-ray and --address"):
        choose_runner(_args(no_ray=True, address="auto"), {})
