"""The batch job on a real multi-node Ray cluster (a head and a worker node on loopback), reading
videos from an S3-compatible server and writing the archive there; a node dies mid-job; the same
job through Ray Jobs. Everything started here is stopped by PID (tests/ray_cluster.py,
tests/s3_server.py)."""
import json
import subprocess
import sys
import time
import uuid

import numpy as np
import pytest

from vidsift.pipeline.store import VideoStore
from tests.conftest import REPO, make_video, run_cli
from tests.ray_cluster import LoopbackCluster

TINY = ["--model", "shapes-tiny"]
PAIRS = [("red", "circle"), ("green", "square"), ("blue", "triangle"), ("yellow", "star"), ("purple", "circle"),
         ("orange", "square"), ("white", "triangle"), ("red", "star")]


@pytest.fixture(scope="module")
def s3_videos(s3, tmp_path_factory):
    """Twelve distinct small videos under s3://<bucket>/videos/ (and the local originals)."""
    local = tmp_path_factory.mktemp("s3-originals")
    bucket = f"in-{uuid.uuid4().hex[:8]}"
    for i in range(12):
        pairs = [PAIRS[i % len(PAIRS)], PAIRS[(i + 3) % len(PAIRS)]]
        path = local / f"clip{i:02d}.mp4"
        make_video(path, fps=12, durations=(2.0, 2.5 + (i % 3)), pairs=pairs, size=(160, 120))
        s3.put(f"s3://{bucket}/videos/{'sub/' if i % 4 == 0 else ''}{path.name}", path)
    return f"s3://{bucket}/videos/"


def _options(s3) -> list[str]:
    return [arg for key, value in s3.storage_options.items() for arg in ("--storage-option", f"{key}={value}")]


def _segments(db: str, options: dict) -> dict:
    store = VideoStore(db, storage_options=options)
    return {r["segment_id"]: r for r in store.model(store.archive_models()[0]).segments().to_arrow().to_pylist()}


def _videos(db: str, options: dict) -> list[dict]:
    store = VideoStore(db, storage_options=options)
    models = store.archive_models()
    return store.model(models[0]).video_rows() if models else []


def test_s3_to_s3_on_two_nodes_survives_a_node_dying_and_runs_as_a_ray_job(tmp_path, s3, s3_videos):
    archive = s3.make_bucket(f"archive-{uuid.uuid4().hex[:8]}")
    options = s3.storage_options

    # The reference: the same inputs on local Ray, uninterrupted.
    reference = run_cli("index", s3_videos, "--db", f"{archive}/reference", *TINY, *_options(s3), "--json")
    assert reference.returncode == 0, reference.stderr
    assert json.loads(reference.stdout)["indexed"] == 12
    expected = _segments(f"{archive}/reference", options)

    with LoopbackCluster(tmp_path, head_cpus=1, worker_cpus=1, memory_gb=2, object_store_gb=0.4) as cluster:
        cluster.wait_for_nodes(2)
        db = f"{archive}/cluster"
        job = subprocess.Popen([sys.executable, "-m", "vidsift.app.cli", "index", s3_videos, "--db", db, *TINY,
                                *_options(s3), "--address", cluster.address, "--json"],
                               cwd=REPO, env=cluster.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 180
            while job.poll() is None and time.monotonic() < deadline:  # kill the worker node mid-job
                time.sleep(0.3)
                if _videos(db, options):
                    break
            assert job.poll() is None, "the job ended before the node could be killed"
            cluster.kill_worker(cluster.workers[0])
            out, err = job.communicate(timeout=300)
        finally:
            if job.poll() is None:
                job.kill()
        assert job.returncode == 0, err
        report = json.loads(out)  # stdout is JSON alone
        assert (report["total"], report["indexed"], report["failed"]) == (12, 12, 0)

        # Every video once, with the rows of the uninterrupted run.
        videos = _videos(db, options)
        assert len(videos) == len({v["video_id"] for v in videos}) == 12
        got = _segments(db, options)
        assert got.keys() == expected.keys()
        for key, row in got.items():
            assert (row["path"], row["start"], row["end"], row["n_frames"]) == \
                (expected[key]["path"], expected[key]["start"], expected[key]["end"], expected[key]["n_frames"])
            assert np.dot(row["vector"], expected[key]["vector"]) > 0.9999

        # Search and status against the archive on object storage.
        search = run_cli("search", "a yellow star", "--db", db, *TINY, *_options(s3), "-k", "3", "--json")
        assert search.returncode == 0, search.stderr
        hits = json.loads(search.stdout)["results"]
        assert len(hits) == 3 and all(h["path"].startswith(s3_videos) for h in hits)
        status = run_cli("status", "--db", db, *_options(s3), "--json")
        assert status.returncode == 0, status.stderr
        assert json.loads(status.stdout)["models"][0]["videos"] == 12

        # A re-run reads nothing: every object's size and mtime match.
        again = run_cli("index", s3_videos, "--db", db, *TINY, *_options(s3), "--address", cluster.address,
                        "--json", env=cluster.env)
        assert json.loads(again.stdout)["skipped"] == 12, again.stderr

        # A node joins again; the job is submitted through Ray Jobs with vidsift's own install.
        cluster.add_worker(num_cpus=1)
        submitted = subprocess.run(
            [cluster.ray_cli, "job", "submit", "--address", cluster.dashboard_url, "--working-dir", str(REPO), "--",
             "vidsift", "index", s3_videos, "--db", f"{archive}/ray-job", *TINY, *_options(s3), "--json"],
            cwd=REPO, env=cluster.env, capture_output=True, text=True, timeout=400)
        assert submitted.returncode == 0, submitted.stdout[-3000:] + submitted.stderr[-3000:]
        assert len(_videos(f"{archive}/ray-job", options)) == 12
        assert _segments(f"{archive}/ray-job", options).keys() == expected.keys()


def test_an_unreachable_archive_is_one_line_and_exit_1(tmp_path, s3):
    from tests.s3_server import dead_endpoint

    make_video(tmp_path / "a.mp4", fps=10, durations=(2.0,))
    dead = {**s3.storage_options, "endpoint": dead_endpoint(), "client_max_retries": "0"}
    for options, cause in ((dead, "connection refused"), ({"region": "us-east-1", "endpoint": dead["endpoint"],
                                                           "allow_http": "true"}, "credentials")):
        args = [arg for key, value in options.items() for arg in ("--storage-option", f"{key}={value}")]
        result = run_cli("index", tmp_path / "a.mp4", "--db", "s3://nowhere/db", *TINY, *args, "--json",
                         env={"AWS_EC2_METADATA_DISABLED": "true"})
        assert result.returncode == 1, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "s3://nowhere/db" in lines[0] and cause in lines[0].lower(), lines
        answer = json.loads(result.stdout)  # --json: the error as JSON on stdout too
        assert answer["exit_status"] == 1 and "s3://nowhere/db" in answer["error"]
