"""`vidsift search` asks a running `vidsift app` serving the same database (``app.announce``,
``app.app_client``) and answers exactly as an in-process search would, without importing torch,
open_clip or LanceDB; anything the app would not answer identically, a stale announcement, an app
that does not answer and another database are searched in process.

The app runs in this process (``app.web.start``) and is announced the way ``app.web.serve`` does;
`vidsift search` runs as a subprocess, as a user runs it. Bundled shapes-tiny, small archive."""
from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from types import SimpleNamespace

import pytest

from tests.conftest import REPO, make_video

QUERY = "a red star"


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A shapes-tiny archive, an app serving it on a loopback port, announced in a private runtime folder."""
    from vidsift.app.announce import RUNTIME_ENV, announce
    from vidsift.app.cli import main
    from vidsift.app.web import AppConfig, start
    from vidsift.models.encoder import ClipEncoder
    from vidsift.models.spec import resolve_spec

    root = tmp_path_factory.mktemp("app-route")
    videos = root / "videos"
    make_video(videos / "red_star.mp4", fps=10, durations=(3.0, 3.0), pairs=[("green", "circle"), ("red", "star")])
    make_video(videos / "blue_square.mp4", fps=10, durations=(3.0,), pairs=[("blue", "square")])
    make_video(videos / "sub" / "white_star.mp4", fps=10, durations=(3.0,), pairs=[("white", "star")])
    db = root / "db.lance"
    assert main(["index", str(videos), "--db", str(db), "--model", "shapes-tiny", "--no-ray"]) == 0
    runtime = root / "runtime"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(RUNTIME_ENV, str(runtime))
        encoder = ClipEncoder.from_spec(resolve_spec("shapes-tiny"))
        config = AppConfig(db=str(db), spec=encoder.spec, port=_free_port(), temp_dir=str(root / "gradio-tmp"))
        demo, _ = start(config, encoder=encoder)
        service = demo.vidsift_service
        # What app.web.serve does once the server is up.
        announcement = announce(config, demo.local_url, service.spec, service.store.archive_models())
        try:
            yield SimpleNamespace(db=db, root=root, runtime=runtime, config=config, demo=demo,
                                  url=demo.local_url.rstrip("/"), announcement=announcement, videos=videos)
        finally:
            announcement.remove()
            demo.close()


def _cli(*args, importtime=False, env=None) -> subprocess.CompletedProcess:
    """`vidsift ...` in a subprocess (``-X importtime``: every import is listed on stderr)."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    argv = [sys.executable, *(["-X", "importtime"] if importtime else []), "-m", "vidsift.app.cli", *map(str, args)]
    return subprocess.run(argv, cwd=REPO, env=full_env, capture_output=True, text=True, timeout=600)


def _imported(stderr: str) -> set[str]:
    """The modules a ``-X importtime`` run imported."""
    return {line.split("|")[-1].strip() for line in stderr.splitlines() if line.startswith("import time:")}


def _in_process(capfd, *argv) -> tuple[str, list[str]]:
    """`vidsift ...` in this process (torch is loaded here already): stdout, stderr lines."""
    from vidsift.app.cli import main

    code = main([str(a) for a in argv])
    out, err = capfd.readouterr()
    assert code == 0, err
    return out, err.splitlines()


def _same_answer(app: dict, here: dict) -> None:
    assert set(app) == set(here)
    for key in ("query", "model", "matches", "calibration"):
        assert app[key] == here[key], key
    assert len(app["results"]) == len(here["results"]) > 0
    for got, want in zip(app["results"], here["results"]):
        assert set(got) == set(want)
        assert {k: v for k, v in got.items() if k not in ("score", "confidence")} == \
            {k: v for k, v in want.items() if k not in ("score", "confidence")}
        assert got["score"] == pytest.approx(want["score"], abs=1e-5)
        assert got["confidence"] == pytest.approx(want["confidence"], abs=1e-3)


@pytest.mark.parametrize("extra", [[], ["-k", "3", "--model", "shapes-tiny"], ["--per-video"], ["--matches-only"]])
def test_search_is_answered_by_the_app_as_in_process_without_torch_or_lancedb(served, capfd, extra):
    from vidsift.app.announce import RUNTIME_ENV

    run = _cli("search", QUERY, "--db", served.db, "--json", "--verbose", *extra, importtime=True,
               env={RUNTIME_ENV: str(served.runtime)})
    assert run.returncode == 0, run.stderr[-2000:]
    assert f"answered by the vidsift app at {served.url}" in run.stderr
    imported = _imported(run.stderr)
    assert "vidsift.app.app_client" in imported  # the listing works
    assert not imported & {"torch", "open_clip", "lancedb", "lance", "pyarrow", "gradio", "gradio_client"}
    here, err = _in_process(capfd, "search", QUERY, "--db", served.db, "--json", "--no-app", "--verbose", *extra)
    assert not any("answered by the vidsift app" in line for line in err)
    _same_answer(json.loads(run.stdout), json.loads(here))


def test_human_output_is_the_same_through_the_app(served, capfd):
    from vidsift.app.announce import RUNTIME_ENV

    run = _cli("search", "a blue square", "--db", served.db, "-k", "4", env={RUNTIME_ENV: str(served.runtime),
                                                                             "VIDSIFT_VERBOSE": "1"})
    assert run.returncode == 0, run.stderr[-2000:]
    assert "answered by the vidsift app" in run.stderr
    here, _ = _in_process(capfd, "search", "a blue square", "--db", served.db, "-k", "4", "--no-app")
    assert run.stdout == here and "blue_square.mp4" in here.splitlines()[0]


def test_announcement_file_names_the_server_and_goes_away(served, tmp_path, monkeypatch):
    from vidsift.app.announce import RUNTIME_ENV, announce, find_server

    monkeypatch.setenv(RUNTIME_ENV, str(tmp_path / "rt"))
    config = SimpleNamespace(db=str(served.db) + "/", max_k=50)
    spec = served.demo.vidsift_service.spec
    handle = announce(config, "http://127.0.0.1:9/", spec, served.demo.vidsift_service.store.archive_models())
    assert stat.S_IMODE(handle.path.stat().st_mode) == 0o600
    body = json.loads(handle.path.read_text())
    assert body["db"] == str(served.db.resolve()) and body["pid"] == os.getpid() and body["max_k"] == 50
    assert body["url"] == "http://127.0.0.1:9" and body["model"] == spec.key and body["models"][0]["key"] == spec.key
    # Found by any spelling of the database, and by its model; not by another model or database.
    monkeypatch.chdir(served.db.parent)
    assert find_server("db.lance").url == "http://127.0.0.1:9"
    assert find_server(str(served.db), spec.key).pid == os.getpid()
    assert find_server(str(served.db), "ViT-B-32|random") is None
    assert find_server(str(tmp_path / "other.lance")) is None
    handle.remove()
    assert not handle.path.exists() and find_server(str(served.db)) is None
    # Object-storage URIs are announced by their URI (no local path to resolve).
    s3 = announce(SimpleNamespace(db="s3://bucket/arch.lance/", max_k=100), "http://127.0.0.1:9", spec)
    try:
        assert find_server("s3://bucket/arch.lance").db == "s3://bucket/arch.lance"
        assert find_server("s3://bucket/other.lance") is None
    finally:
        s3.remove()


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_stale_announcement_is_ignored_and_removed(served, tmp_path, monkeypatch, capfd):
    from vidsift.app.announce import RUNTIME_ENV, announced, db_hash

    runtime = tmp_path / "rt"
    runtime.mkdir()
    monkeypatch.setenv(RUNTIME_ENV, str(runtime))
    body = json.loads(served.announcement.path.read_text())
    pid = _dead_pid()
    body["pid"] = pid  # a server that died: its URL is even still answering (the fixture's app)
    stale = runtime / f"{db_hash(str(served.db))}-{pid}.json"
    stale.write_text(json.dumps(body))
    assert announced(str(served.db)) == [] and not stale.exists()
    stale.write_text(json.dumps(body))
    out, err = _in_process(capfd, "search", QUERY, "--db", served.db, "--json", "--verbose")
    assert any("no vidsift app serves" in line for line in err) and not stale.exists()
    here, _ = _in_process(capfd, "search", QUERY, "--db", served.db, "--json", "--no-app")
    _same_answer(json.loads(out), json.loads(here))


def test_an_app_that_does_not_answer_is_skipped(served, tmp_path, monkeypatch, capfd):
    from vidsift.app.announce import RUNTIME_ENV, announce

    monkeypatch.setenv(RUNTIME_ENV, str(tmp_path / "rt"))
    service = served.demo.vidsift_service  # announced with a live pid (this one), but nothing listens there
    handle = announce(served.config, f"http://127.0.0.1:{_free_port()}", service.spec, service.store.archive_models())
    try:
        out, err = _in_process(capfd, "search", QUERY, "--db", served.db, "--json", "--verbose")
    finally:
        handle.remove()
    assert any("did not answer" in line and "searching in this process" in line for line in err)
    assert json.loads(out)["results"][0]["path"].endswith("red_star.mp4")


def test_another_database_is_not_served_by_the_app(served, tmp_path, monkeypatch, capfd):
    from vidsift.app.announce import RUNTIME_ENV

    monkeypatch.setenv(RUNTIME_ENV, str(served.runtime))
    other = tmp_path / "copy.lance"
    shutil.copytree(served.db, other)
    out, err = _in_process(capfd, "search", QUERY, "--db", other, "--json", "--verbose")
    assert any(f"no vidsift app serves {other}" in line for line in err)
    assert not any("answered by the vidsift app" in line for line in err)
    assert json.loads(out)["results"][0]["path"].endswith("red_star.mp4")


@pytest.mark.parametrize("flags, reason", [
    (["--where", "n_frames > 1"], "--where"),
    (["--exact"], "--exact"),
    (["--pooling", "qs"], "--pooling qs"),
    (["--thumbnails", "thumbs"], "--thumbnails"),
    (["-k", "101"], "above the app's limit (100)"),
    (["--device", "cpu"], "--device auto"),
    (["--precision", "fp16"], "--precision auto"),
    (["--model", "ViT-B-32", "--pretrained", "none"], "this search uses ViT-B-32|random"),
    (["--pretrained", "none"], "this search uses shapes-tiny|random"),
])
def test_requests_the_app_would_answer_otherwise_stay_in_process(served, flags, reason):
    from vidsift.app.cli import build_parser
    from vidsift.app.commands.search import app_mismatch

    info = _info(served)
    plain = build_parser().parse_args(["search", QUERY, "--db", str(served.db)])
    assert app_mismatch(plain, info) is None
    assert app_mismatch(build_parser().parse_args(["search", QUERY, "--db", str(served.db), "--model",
                                                   "shapes-tiny"]), info) is None
    args = build_parser().parse_args(["search", QUERY, "--db", str(served.db), *flags])
    assert reason in (app_mismatch(args, info) or "")


def _info(served):
    """The fixture's app, as `vidsift search` finds it."""
    from vidsift.app.announce import RUNTIME_ENV, find_server

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(RUNTIME_ENV, str(served.runtime))
        return find_server(str(served.db))


def test_an_answer_for_another_model_or_query_is_not_used(served):
    from vidsift.app.app_client import AppUnavailable, search_text
    from vidsift.app.cli import build_parser
    from vidsift.app.commands.search import report_of_app

    result = search_text(served.url, QUERY, 3, False)
    args = build_parser().parse_args(["search", QUERY, "--db", str(served.db)])
    payload, human = report_of_app(args, result, result["model"])
    assert payload["model"] == result["model"] and len(payload["results"]) == 3 and human.count("\n") >= 2
    with pytest.raises(AppUnavailable, match="changed since it started"):
        report_of_app(args, result, "ViT-B-32|random")
    with pytest.raises(AppUnavailable):
        report_of_app(build_parser().parse_args(["search", "a blue square"]), result, result["model"])
