"""The indexing job's promises that need no cluster, through the real command, on both runners (the
default local pipeline, and Ray with --address local): every job ends, a stuck video does not hold
back finished ones, failures name the file, where it ran and the cause, and --json stdout is JSON."""
import json
import os
import subprocess
import sys
import time

import pytest

from vidsift.pipeline.store import VideoStore
from tests.conftest import REPO, make_video, run_cli

TINY = ["--model", "shapes-tiny"]
RUNNERS = {"local": [], "ray": ["--address", "local"]}


def _good_videos(folder, n=2):
    for i in range(n):
        make_video(folder / f"good{i}.mp4", fps=10, durations=(2.0,), pairs=[("green", "star") if i else ("blue", "square")])


@pytest.mark.parametrize("runner", ["local", "ray"])
def test_a_file_that_kills_its_decoder_is_retried_then_recorded_and_the_job_ends(tmp_path, runner):
    folder = tmp_path / "in"
    _good_videos(folder)
    make_video(folder / "killer.mp4", fps=10, durations=(2.0,))
    listing = tmp_path / "more.txt"  # names a file this node cannot see
    listing.write_text(f"{tmp_path / 'elsewhere' / 'gone.mp4'}\n")
    result = run_cli("index", folder, listing, "--db", tmp_path / "db", *TINY, "--attempts", "2", "--json",
                     *RUNNERS[runner], env={"VIDSIFT_TEST_FAULT": "kill:killer.mp4"})
    assert result.returncode == 3, result.stderr
    report = json.loads(result.stdout)  # stdout is the JSON alone, whatever Ray printed
    assert (report["indexed"], report["failed"], report["runner"]) == (2, 2, runner)
    by_name = {f["path"].rsplit("/", 1)[-1]: f for f in report["failures"]}
    assert by_name["gone.mp4"]["stage"] == "read"
    if runner == "ray":  # a cluster: the file may be on another node's disk
        assert "does not exist on node" in by_name["gone.mp4"]["reason"] and "same path" in by_name["gone.mp4"]["reason"]
    else:
        assert by_name["gone.mp4"]["reason"] == "file does not exist"
    failure = by_name["killer.mp4"]
    assert failure["path"].endswith("killer.mp4")
    assert "gave up after 2 attempts" in failure["reason"] and "died" in failure["reason"]
    assert "on node" in failure["reason"] and "unknown node" not in failure["reason"]
    status = json.loads(run_cli("status", "--db", tmp_path / "db", "--json").stdout)
    assert sorted(f["path"] for f in status["failures"]) == sorted(f["path"] for f in report["failures"])


@pytest.mark.parametrize("runner", ["local", "ray"])
def test_a_hanging_input_times_out_while_finished_videos_are_stored_within_seconds(tmp_path, runner):
    folder = tmp_path / "in"
    _good_videos(folder)
    stuck = folder / "stuck.mp4"
    make_video(stuck, fps=10, durations=(2.0,))
    db = tmp_path / "db"
    job = subprocess.Popen([sys.executable, "-m", "vidsift.app.cli", "index", str(folder), "--db", str(db),
                            *TINY, "--video-timeout", "25", "--attempts", "1", "--json", *RUNNERS[runner]],
                           cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           env={**os.environ, "VIDSIFT_TEST_FAULT": "hang:stuck.mp4"})
    try:
        stored_at = None
        while job.poll() is None and stored_at is None:
            time.sleep(0.5)
            if (db / "models.lance").exists():
                store = VideoStore(str(db))
                models = store.archive_models()
                rows = store.model(models[0]).video_rows() if models else []
                if len(rows) == 2:
                    stored_at = time.monotonic()
        assert stored_at is not None and job.poll() is None, "the good videos were not stored while one hung"
        out, err = job.communicate(timeout=120)
    finally:
        if job.poll() is None:
            job.kill()
    finished = time.monotonic()
    assert finished - stored_at > 5  # they were stored well before the stuck video gave up
    assert job.returncode == 3, err
    report = json.loads(out)
    assert report["indexed"] == 2 and len(report["failures"]) == 1 and report["runner"] == runner
    assert report["failures"][0]["path"] == str(stuck)
    assert "timed out after" in report["failures"][0]["reason"]


def test_ray_client_addresses_are_refused_at_once_pointing_to_ray_jobs(tmp_path):
    make_video(tmp_path / "a.mp4", fps=10, durations=(2.0,))
    result = run_cli("index", tmp_path / "a.mp4", "--db", tmp_path / "db", *TINY, "--address", "ray://127.0.0.1:10001")
    assert result.returncode == 2
    assert "ray job submit" in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
