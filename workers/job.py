"""The indexing job on Ray (``--address``: a cluster, or ``local`` for a Ray started on this
machine): the driver lists and coordinates, workers do everything per byte and per frame. Without
an address `vidsift index` runs ``pipeline.local_run`` instead, which applies the same per-video
code (``indexing.run_video``) and the same job rules (``pipeline.jobs``) without Ray's start-up.

    driver:  list inputs (sizes, mtimes) -> skip what is stored -> one task per video
             -> commit the fragments workers wrote, every few seconds -> report
    workers: ``workers.tasks.video_task`` (read, hash, decode, segment, write fragments) and the
             embedding actors (one per GPU; without GPUs, one per node using its CPUs)

Why tasks per video rather than a Ray Data pipeline: a video's frames must meet again after
embedding (segmentation needs all of them), and Ray Data can only bring them together on the
driver, which then handled every vector and thumbnail; and its tasks retry without limit and
without a time limit, so a file that kills or hangs its decoder stalled the job forever. Here each
video is one task the driver can time, retry a bounded number of times and finally record, with
the node and the cause, while the job goes on. Nodes may join (the window of tasks in flight
follows the cluster's CPUs) and leave (their tasks are retried elsewhere).

A node that dies is not the video's fault: a video lost with its node, or with the embedding actor
it was using, is tried again after a pause (the cluster takes seconds to notice the node is gone
and restart its actors elsewhere), without spending the attempts that ``--attempts`` gives it
against a file that kills or hangs its decoder. Such free retries are bounded too
(``NODE_LOSSES``): a video that keeps taking its node down is then counted as any other.

Stopping: SIGINT and SIGTERM are noted and acted on at the loop's next turn (``pipeline.
interrupts``; raised inside a Ray call they came out as a SystemError, and Ray's own SIGTERM
handler aborted the driver): tasks in flight are cancelled, every finished video is committed,
and ``Interrupted`` carries the report out. A commit is never cut in half by a signal. A storage
failure (disk full, read-only), on the driver or in a worker writing its fragments, stops the job
with ``StoreWriteError`` naming the database: what was committed stays, the rest is redone by
the next run.
"""
from __future__ import annotations

import collections
import logging
import os
import shutil
import tempfile
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from vidsift import models, pipeline, workers
from vidsift.models.spec import ModelSpec
from vidsift.pipeline import interrupts
from vidsift.pipeline.config import IndexConfig
from vidsift.pipeline.errors import InputError, Interrupted
from vidsift.pipeline.indexing import JobReport, Probed, WorkItem, plan_listing
from vidsift.pipeline.jobs import Attempt, JobLimits, SafeWriter, open_writer, record_outcome, retry_or_fail
from vidsift.pipeline.progress import job_progress, show_frames
from vidsift.pipeline.storage import ListedFile, stat_input
from vidsift.pipeline.store import VideoStore

from .tasks import EmbedActor, Lost, Started, video_task

log = logging.getLogger(__name__)

RUNNER = "ray"
NODE_LOSSES = 3  # times a video may be lost with a node (or its embedding actor) before that counts as an attempt
NODE_LOSS_PAUSE_S = 5.0  # before such a video is tried again; doubled each time it is lost again
RAY_JOBS_HINT = ("submit the job with Ray Jobs instead: ray job submit --address http://HEAD:8265 "
                 "--working-dir . -- vidsift index ...")


@dataclass(frozen=True)
class ClusterConfig:
    """Where and how wide the job runs. ``address=None`` starts a local Ray on this machine (or
    joins the cluster of the Ray Job it runs in, ``RAY_ADDRESS``)."""

    address: str | None = None
    num_cpus: int | None = None      # local Ray only: CPUs to use (default: all)
    embed_actors: int | None = None  # default: one per GPU, else one per node
    embed_threads: int | None = None  # torch threads per CPU actor (default: its node's CPUs)
    batch_size: int = 64             # frames per encoder call
    attempts: int = 3                # tries per video when its process dies or it times out
    video_timeout_s: float = 300.0   # time allowed per video before it is opened (read, copy, hash) ...
    seconds_per_frame: float = 1.0   # ... plus this per sampled frame once its duration is known

    def __post_init__(self):
        if self.address and self.address.startswith("ray://"):
            raise InputError(f"--address {self.address}: Ray Client (ray://) is not supported (Ray's own "
                             f"libraries fail over it); {RAY_JOBS_HINT}")
        for name, flag, low, high in (("num_cpus", "--num-cpus", 1, 100_000),
                                      ("embed_actors", "--embed-workers", 1, 10_000),
                                      ("embed_threads", "--embed-threads", 1, 1024)):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                      or not low <= value <= high):
                raise InputError(f"{flag} must be a whole number between {low} and {high}, got {value!r}")
        self.limits()  # the per-video limits are checked where both runners check them

    def limits(self) -> JobLimits:
        return JobLimits(attempts=self.attempts, video_timeout_s=self.video_timeout_s,
                         seconds_per_frame=self.seconds_per_frame, batch_size=self.batch_size)


def _code_for_workers() -> Path:
    """A copy of ``vidsift/`` (models, pipeline, workers) to ship to a cluster's workers: Ray's
    ``py_modules`` imports a folder by its own name, and the source folders are named ``pipeline``
    and so on, not ``vidsift.pipeline``."""
    code = Path(tempfile.mkdtemp(prefix="vidsift-code-")) / "vidsift"
    for package in (models, pipeline, workers):
        shutil.copytree(os.path.dirname(package.__file__), code / package.__name__.rsplit(".", 1)[1],
                        ignore=shutil.ignore_patterns("__pycache__"))
    return code


def _init_ray(cluster: ClusterConfig):
    import ray  # lazy: imported and started while a helper thread imports open_clip (``_run``): they overlap

    if ray.is_initialized():
        return ray
    # Ray's processes are fork+exec'd, so lancedb's fork warning does not apply to them.
    warnings.filterwarnings("ignore", message="lancedb fork support is experimental")
    kwargs = dict(include_dashboard=False, log_to_driver=False, configure_logging=True, logging_level="ERROR")
    address = cluster.address or os.environ.get("RAY_ADDRESS")
    if address and address != "local":
        if not os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR"):
            # Ship our code to the cluster's workers; their Python environment supplies the
            # dependencies. (Inside a Ray Job the job's own --working-dir already does.)
            code = _code_for_workers()
            kwargs["runtime_env"] = {"py_modules": [str(code)]}
            try:
                ray.init(address=address, **kwargs)  # uploads the code: the copy is no longer needed after
            finally:
                shutil.rmtree(code.parent, ignore_errors=True)
        else:
            ray.init(address=address, **kwargs)
    else:  # a fresh local instance, never a cluster that `ray start` left on this machine
        ray.init(address="local", num_cpus=cluster.num_cpus, **kwargs)
    # Ray's driver answers SIGTERM by aborting (exit 134, a native stack dump, finished videos not
    # written): SIGTERM stops the job as Ctrl-C does instead (pipeline.interrupts).
    interrupts.reinstall()
    return ray


def _start_embedders(ray, spec: ModelSpec, cluster: ClusterConfig) -> dict[str, list]:
    """Embedding actors, by node id. With GPUs: one actor per GPU (``embed_actors`` to cap),
    placed by Ray. Without: one per node with CPUs, pinned there, whose torch threads span the
    node's CPUs but reserve none: decode tasks keep every CPU slot (an actor holding CPUs starves
    them, field notes) and the OS shares the cores between decoding and encoding as their costs
    dictate (``bench/throughput.py``). Each video task uses an actor on its own node when there
    is one, so frames do not cross the network."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy  # lazy: as ray in ``_init_ray``

    options = dict(max_restarts=-1, max_task_retries=3, max_concurrency=2)
    remote = ray.remote(EmbedActor)
    gpus = int(ray.cluster_resources().get("GPU", 0))
    if gpus:
        actors = [remote.options(num_gpus=1, num_cpus=1, **options).remote(asdict(spec), 1)
                  for _ in range(min(gpus, cluster.embed_actors or gpus))]
    else:
        nodes = [n for n in ray.nodes() if n["Alive"] and n["Resources"].get("CPU", 0) > 0]
        # Soft affinity, so an actor whose node leaves is restarted elsewhere.
        actors = [remote.options(num_cpus=0, **options, scheduling_strategy=NodeAffinitySchedulingStrategy(
                      node_id=node["NodeID"], soft=True))
                  .remote(asdict(spec), cluster.embed_threads or max(1, int(node["Resources"]["CPU"])))
                  for node in nodes[:cluster.embed_actors or len(nodes)]]
    # Keyed by where each actor really started: a soft placement may land elsewhere (half of them
    # did on a busy loopback cluster, bench/cluster.py).
    by_node: dict[str, list] = collections.defaultdict(list)
    for node, actor in zip(ray.get([actor.node_id.remote() for actor in actors]), actors):
        by_node[node].append(actor)
    return dict(by_node)


def _as_listed(paths: list) -> list[ListedFile]:
    return [p if isinstance(p, ListedFile) else stat_input(p) for p in paths]


def run_index_job(store: VideoStore, spec: ModelSpec, paths: list, config: IndexConfig,
                  cluster: ClusterConfig = ClusterConfig(), build_index: bool = False,
                  preprocess_cfg: dict | None = None, progress: bool = True,
                  storage_options: dict | None = None) -> JobReport:
    """Index ``paths`` (``ListedFile``s from ``pipeline.storage.list_inputs``, or local paths)
    into ``store`` with ``spec``; resumable (stored videos are skipped without being read). One
    job per database at a time (``VideoStore.exclusive_writer``). ``storage_options`` reach the
    inputs and the archive on object storage."""
    report = JobReport(runner=RUNNER)
    try:
        with store.exclusive_writer(), interrupts.held():  # signals stop the job at its safe points only
            return _run(store, spec, _as_listed(paths), config, cluster, build_index, progress, storage_options or {},
                        report)
    except Interrupted as exc:
        exc.report = report  # what was done (and written on the way out), for the caller's last word
        report.seconds = time.monotonic() - report.started
        raise


def _run(store: VideoStore, spec: ModelSpec, listed: list[ListedFile], config: IndexConfig,
         cluster: ClusterConfig, build_index: bool, progress: bool, storage_options: dict,
         report: JobReport) -> JobReport:
    from vidsift.models.loading import model_outline  # lazy: torch + open_clip (~2 s), only once a job runs

    tables = store.model(spec)
    known = tables.indexed_files()
    todo = plan_listing(listed, known, report)
    if todo:
        # Ray starts (its own processes; this thread mostly waits) while a helper thread imports
        # open_clip and checks the model: the two largest start-up costs overlap instead of adding
        # up. Ray stays in the main thread: its processes die with the thread that started them.
        with ThreadPoolExecutor(1, thread_name_prefix="model-check") as pool:
            outline = pool.submit(model_outline, spec)
            ray = _init_ray(cluster)
            interrupts.safe_point()
            preprocess_cfg, dim = outline.result()  # raises a missing model
        interrupts.safe_point()
        target, writer = open_writer(tables, dim, known, report, storage_options, config.keep_frames)
        _Coordinator(ray, spec, cluster, config, target, preprocess_cfg, writer, report, progress).run(todo)
    tables.upkeep_ann_index(report, build_index)
    report.seconds = time.monotonic() - report.started
    return report


class _Coordinator:
    """The driver's loop: keeps a window of video tasks in flight, reads their messages, times
    them, retries the ones whose process died or hung, and hands results to the writer."""

    def __init__(self, ray, spec, cluster, config, target, preprocess_cfg, writer: SafeWriter, report, progress):
        self.ray, self.cluster, self.config, self.target = ray, cluster, config, target
        self.limits = cluster.limits()
        self.writer, self.report = writer, report
        self.task = ray.remote(video_task).options(num_cpus=1, max_retries=0, num_returns="streaming")
        self.actors = _start_embedders(ray, spec, cluster)
        self.preprocess_ref = ray.put(preprocess_cfg)
        self.in_flight: dict = {}
        self.losses: collections.Counter = collections.Counter()  # by path: times lost with a node
        self.paused: list[tuple[float, WorkItem, int]] = []  # (not before, item, tries): lost, waiting
        self.progress = progress

    def _window(self) -> int:
        """Tasks in flight: two per CPU of the cluster as it is now (nodes join and leave)."""
        return max(2, 2 * int(self.ray.cluster_resources().get("CPU", 1)))

    def _submit(self, item: WorkItem, tries: int) -> None:
        generator = self.task.remote(item, self.actors, self.preprocess_ref, self.config, self.target,
                                     self.cluster.batch_size)
        self.in_flight[generator] = Attempt(item, tries)  # timed from its start: it may queue for a CPU first

    def run(self, todo: list[WorkItem]) -> None:
        queue = collections.deque((item, 1) for item in todo)
        bar = job_progress(len(todo), self.progress)
        window, window_checked = self._window(), time.monotonic()
        try:
            while queue or self.in_flight or self.paused:
                interrupts.safe_point()  # a signal that came during a commit stops the job here
                if time.monotonic() - window_checked > 5:
                    window, window_checked = self._window(), time.monotonic()
                self._resume(queue)
                while queue and len(self.in_flight) < window:
                    self._submit(*queue.popleft())
                if self.in_flight:
                    ready, _ = self.ray.wait(list(self.in_flight), num_returns=len(self.in_flight), timeout=0.5)
                else:  # only lost videos left, pausing
                    ready = []
                    time.sleep(0.5)
                for generator in ready:
                    done = self._read(generator, queue)
                    bar.update(done)
                bar.update(self._expire(queue))
                show_frames(bar, self.report.frames)
                self.writer.maybe_flush()
        except BaseException:
            bar.close()
            for generator in self.in_flight:  # interrupted or failed: stop the work, keep what is finished
                self.ray.cancel(generator, force=True)
            self.writer.flush_on_the_way_out()
            raise
        bar.close()
        self.writer.flush()

    def _read(self, generator, queue) -> int:
        """Handle the next message of a task; returns 1 when its video is finished either way."""
        attempt = self.in_flight[generator]
        try:
            message = self.ray.get(next(generator))
        except StopIteration:
            del self.in_flight[generator]
            return self._retry_or_fail(attempt, queue, "its task ended without a result")
        except Exception as exc:  # noqa: BLE001 - the process or node died, or the task was cancelled
            del self.in_flight[generator]
            if _lost_with_node(exc):
                return self._lost(attempt, queue, _describe_ray_error(exc))
            return self._retry_or_fail(attempt, queue, _describe_ray_error(exc))
        if isinstance(message, Lost):
            del self.in_flight[generator]
            return self._lost(attempt, queue, f"lost its embedding worker ({message.cause})")
        if isinstance(message, Started):
            attempt.start(message.node, self.limits)
            return 0
        if isinstance(message, Probed):
            attempt.probed(message.duration, self.limits, self.config.sampling)
            return 0
        del self.in_flight[generator]
        record_outcome(message, attempt, self.writer, self.report)
        return 1

    def _expire(self, queue) -> int:
        """Cancel (kill) the tasks past their deadline; retry or record them."""
        finished = 0
        now = time.monotonic()
        for generator, attempt in list(self.in_flight.items()):
            if attempt.expired(now):
                self.ray.cancel(generator, force=True)
                del self.in_flight[generator]
                finished += self._retry_or_fail(attempt, queue, attempt.timeout_cause(now))
        return finished

    def _retry_or_fail(self, attempt: Attempt, queue, cause: str) -> int:
        return retry_or_fail(attempt, self.limits, queue, self.writer, cause)

    def _lost(self, attempt: Attempt, queue, cause: str) -> int:
        """A video lost with its node or its embedding actor: tried again after a pause, its
        attempts untouched, up to ``NODE_LOSSES`` times; after that, an attempt like any other."""
        path = attempt.item.path
        self.losses[path] += 1
        if self.losses[path] > NODE_LOSSES:
            return self._retry_or_fail(attempt, queue, cause)
        pause = NODE_LOSS_PAUSE_S * 2 ** (self.losses[path] - 1)
        log.warning("%s: the try on %s %s; trying again in %.0f s (not counted against its %d attempts)", path,
                    attempt.where, cause, pause, self.limits.attempts)
        self.paused.append((time.monotonic() + pause, attempt.item, attempt.tries))
        return 0

    def _resume(self, queue) -> None:
        """Lost videos whose pause is over go back to the queue (first, as they waited)."""
        now = time.monotonic()
        due = [entry for entry in self.paused if entry[0] <= now]
        if due:
            self.paused = [entry for entry in self.paused if entry[0] > now]
            queue.extendleft((item, tries) for _, item, tries in reversed(due))


def _lost_with_node(exc: Exception) -> bool:
    """Ray's failure says the task's node (or the node holding its result) died: not the video's
    fault. A worker process that crashed on a live node (``WorkerCrashedError``) may be the file's."""
    name = type(exc).__name__
    return "NodeDied" in name or "ObjectLost" in name or "OwnerDied" in name


def _describe_ray_error(exc: Exception) -> str:
    """Ray's failure, in the words of what happened to the video's process."""
    name = type(exc).__name__
    if "WorkerCrashed" in name:
        return "died (crashed or was killed)"
    if "NodeDied" in name or "ObjectLost" in name or "OwnerDied" in name:
        return "was lost with its node"
    if "OutOfMemory" in name:
        return "was killed for using too much memory"
    if "Cancelled" in name:
        return "was cancelled"
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else name
    return f"failed: {name}: {first[:200]}"
