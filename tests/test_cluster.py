"""The batch job on a real multi-node Ray cluster (a head and a worker node on loopback), reading
videos from an S3-compatible server and writing the archive there; a node dies mid-job; the same
job through Ray Jobs. Everything started here is stopped by PID (tests/ray_cluster.py,
tests/s3_server.py). Then, without a cluster, how the driver counts a video lost with its node."""
import collections
import json
import subprocess
import sys
import time
import uuid
from types import SimpleNamespace

import numpy as np
import pytest

from vidsift.pipeline.config import IndexConfig, SamplingConfig
from vidsift.pipeline.indexing import Failed, WorkItem
from vidsift.pipeline.jobs import Attempt, JobLimits
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


# ---- a node dying is not the video's fault: the driver's and the task's side, without a cluster ----
class _Writer:
    def __init__(self):
        self.failed = []

    def fail(self, path, stage, reason):
        self.failed.append((path, stage, reason))


def _coordinator(monkeypatch, attempts: int):
    """The job's driver loop as far as counting goes: what `_Coordinator.__init__` would start on
    Ray is not needed to read a task's last message."""
    from vidsift.workers import job

    monkeypatch.setattr(job, "NODE_LOSS_PAUSE_S", 0.0)
    coordinator = object.__new__(job._Coordinator)
    coordinator.ray = SimpleNamespace(get=lambda ref: ref())
    coordinator.limits, coordinator.writer = JobLimits(attempts=attempts), _Writer()
    coordinator.in_flight, coordinator.losses, coordinator.paused = {}, collections.Counter(), []
    return job, coordinator


def _finished(coordinator, attempt, outcome, queue) -> int:
    """One task of ``attempt`` ends with ``outcome`` (its last message, or the Ray error raised)."""
    def ref():
        if isinstance(outcome, Exception):
            raise outcome
        return outcome
    generator = iter([ref])
    coordinator.in_flight[generator] = attempt
    done = coordinator._read(generator, queue)
    coordinator._resume(queue)
    return done


def test_a_video_lost_with_its_node_is_tried_again_without_spending_its_attempts(monkeypatch):
    from ray.exceptions import NodeDiedError, WorkerCrashedError

    from vidsift.workers.tasks import Lost

    job, coordinator = _coordinator(monkeypatch, attempts=2)
    item, queue = WorkItem("s3://in/videos/a.mp4", 10, 1), collections.deque()
    losses = [NodeDiedError("the node died"), Lost("ActorUnavailableError: the actor is temporarily unavailable")]
    for i in range(job.NODE_LOSSES):  # lost with its node, or with the embedding actor it used
        assert _finished(coordinator, Attempt(item, 1, where="127.0.0.1"), losses[i % 2], queue) == 0
        assert list(queue) == [(item, 1)] and coordinator.writer.failed == []  # again, as its first attempt
        queue.clear()
    # Free retries are bounded: a video that keeps taking its node down counts its attempts then.
    assert _finished(coordinator, Attempt(item, 1), losses[1], queue) == 0
    assert list(queue) == [(item, 2)]
    queue.clear()
    # A decoder that dies on a live node may be the file's doing: counted at once, as before.
    assert _finished(coordinator, Attempt(item, 2, where="127.0.0.1"), WorkerCrashedError(), queue) == 1
    ((path, stage, reason),) = coordinator.writer.failed
    assert (path, stage) == (item.path, "decode") and reason.startswith("gave up after 2 attempts: the decoding "
                                                                        "process died"), reason
    assert not queue and not coordinator.paused

    # The pause before a lost video is tried again: the cluster needs seconds to notice the node.
    monkeypatch.setattr(job, "NODE_LOSS_PAUSE_S", 3600.0)
    other = WorkItem("s3://in/videos/b.mp4", 10, 1)
    assert _finished(coordinator, Attempt(other, 1), NodeDiedError("the node died"), queue) == 0
    assert not queue and [entry[1:] for entry in coordinator.paused] == [(other, 1)]


def test_an_unreachable_embedding_actor_makes_the_video_lost_not_failed(monkeypatch, tmp_path):
    """Ray gives up on a call to an actor whose node died after a few quick retries, often before
    the cluster has noticed and restarted it elsewhere: the video task says ``Lost`` (tried again),
    where ``run_video`` alone records the video as failed for good."""
    import ray
    from ray.exceptions import ActorUnavailableError

    from vidsift.pipeline.indexing import run_video
    from vidsift.workers import tasks

    make_video(tmp_path / "a.mp4", fps=10, durations=(2.0,))
    item = WorkItem(str(tmp_path / "a.mp4"), (tmp_path / "a.mp4").stat().st_size, 1)
    unreachable = object()

    def get(ref):
        if ref is unreachable:
            raise ActorUnavailableError("RpcError: failed to connect to all addresses", None)
        return ref

    monkeypatch.setattr(ray, "get", get)
    monkeypatch.setattr(ray, "get_runtime_context", lambda: SimpleNamespace(get_node_id=lambda: "head"))
    actor = SimpleNamespace(encode=SimpleNamespace(remote=lambda pixels: unreachable))
    target = SimpleNamespace(segments_uri=str(tmp_path / "db"), storage_options={}, model_key="m")
    config = IndexConfig(sampling=SamplingConfig(fps=2.0))
    args = ({"size": 32}, config, target, 64)
    messages = list(tasks.video_task(item, {"worker": [actor]}, *args))
    assert [type(m).__name__ for m in messages] == ["Started", "Probed", "Lost"], messages
    assert messages[-1].cause.startswith("ActorUnavailableError: ")
    # What the task used to pass on: a failure, recorded at once and never retried.
    (failed,) = [m for m in run_video(item, tasks.remote_encode(actor, []), *args) if isinstance(m, Failed)]
    assert failed.stage == "index" and failed.reason.startswith("ActorUnavailableError")
