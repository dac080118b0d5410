"""The indexing job on this machine, without Ray: decoding processes overlap with encoding in the
job's own process, where the model is loaded once.

    job's process:  list -> skip what is stored -> one video per decoding process
                    -> embed the batches they send (a thread) -> commit what they wrote -> report
    decoding processes (``pipeline.decode_workers``): read + hash, decode, segment, refine cuts,
                    write fragments (``indexing.run_video``, as the Ray job's tasks do)

Why not local Ray by default: on 20 short videos Ray's start-up and loading the model twice (the
driver checks it, the actor loads it) cost ~20 s before the first frame, which made the default
the slowest way to index a small job (issue 20; ``bench/small_jobs.py`` measures both side by
side). Everything per video is the Ray job's own code (``indexing.run_video``) and everything per
job is shared with it (``pipeline.jobs``: limits and attempts, the writer, ANN upkeep), so the
same files give the same rows and the same index state whichever runner ran.

A video that hangs or kills its decoder is the Ray job's case too: its process is killed at the
deadline (``--video-timeout``) or found dead, replaced, and the video tried again up to
``--attempts`` times, then recorded, while the other videos go on. Signals (SIGINT, SIGTERM) stop
the job at its loop's next turn: the processes are killed, every finished video is committed, and
``Interrupted`` carries the report out.
"""
from __future__ import annotations

import collections
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import wait

from . import interrupts
from .config import IndexConfig
from .decode_workers import DecodePool, DecodeWorker
from .errors import Interrupted
from .indexing import JobReport, Probed, WorkItem, plan_listing
from .jobs import Attempt, JobLimits, SafeWriter, open_writer, record_outcome, retry_or_fail
from .progress import job_progress, show_frames
from .staging import StagingTarget
from .storage import ListedFile
from .store import VideoStore

RUNNER = "local"


@dataclass(frozen=True)
class LocalOptions:
    """How the local job runs. ``workers``: decoding processes (default: this machine's CPUs,
    never more than the videos to do)."""

    limits: JobLimits = field(default_factory=JobLimits)
    workers: int | None = None
    embed_threads: int | None = None  # torch threads of the encoder (default: this machine's CPUs)
    build_index: bool = False
    progress: bool = True
    storage_options: dict = field(default_factory=dict)
    scratch_dir: str | None = None

    def pool_size(self, videos: int) -> int:
        return max(1, min(self.workers or os.cpu_count() or 1, videos))


def run_local_job(store: VideoStore, spec, listed: list[ListedFile], config: IndexConfig,
                  options: LocalOptions = LocalOptions(), encoder=None, tags: tuple[str, ...] = (),
                  on_progress: Callable[[int, int], None] | None = None) -> JobReport:
    """Index ``listed`` (``pipeline.storage.list_inputs``) into ``store`` with ``spec``'s model:
    ``encoder`` when given (loaded already), else loaded here once, while the decoding processes
    start. Resumable; one job per database at a time (``VideoStore.exclusive_writer``)."""
    report = JobReport(runner=RUNNER)
    try:
        with store.exclusive_writer(), interrupts.held():  # signals stop the job at its safe points only
            return _run(store, spec, listed, config, options, encoder, tags, on_progress, report)
    except Interrupted as exc:
        exc.report = report  # what was done (and written on the way out), for the caller's last word
        report.seconds = time.monotonic() - report.started
        raise


def index_paths(store: VideoStore, encoder, paths: list[str], config: IndexConfig,
                options: LocalOptions = LocalOptions(progress=False), tags: tuple[str, ...] = (),
                on_progress: Callable[[int, int], None] | None = None) -> JobReport:
    """``run_local_job`` for local paths and a loaded encoder (``indexing.index_sequential``)."""
    listed = [_listed(path) for path in dict.fromkeys(str(p) for p in paths)]
    return run_local_job(store, encoder.spec, listed, config, options, encoder=encoder, tags=tags,
                         on_progress=on_progress)


def _listed(path: str) -> ListedFile:
    """Size and mtime of a local path as given (the path is stored as the caller wrote it); one
    that cannot be read is listed with size 0 and recorded by the process that reads it."""
    try:
        stat = os.stat(path)
        return ListedFile(path, stat.st_size, stat.st_mtime_ns)
    except OSError:
        return ListedFile(path, 0, 0)


def _run(store, spec, listed, config, options: LocalOptions, encoder, tags, on_progress, report) -> JobReport:
    tables = store.model(spec)
    known = tables.indexed_files()
    todo = plan_listing(listed, known, report, tags=tags)
    if todo:
        pool = DecodePool(options.pool_size(len(todo)))  # their imports overlap with loading the model
        try:
            interrupts.safe_point()
            if encoder is None:
                from vidsift.models.encoder import ClipEncoder  # lazy: torch + open_clip, loaded while the pool starts

                encoder = ClipEncoder.from_spec(spec)
            interrupts.safe_point()
            target, writer = open_writer(tables, encoder.embed_dim, known, report, options.storage_options,
                                         config.keep_frames)
            job = _LocalJob(pool, encoder, config, target, writer, report, options, on_progress)
            job.run(todo)
        finally:
            pool.kill()  # already stopped by the job, unless it never ran (an interruption, a missing model)
    tables.upkeep_ann_index(report, options.build_index)
    report.seconds = time.monotonic() - report.started
    return report


class _Encoder:
    """The model, in a thread of the job's process: the loop keeps reading the decoders' pipes
    while a batch is embedded (torch releases the GIL), so a decoder that has sent its batch goes
    on decoding the next one instead of waiting to be read."""

    def __init__(self, encoder, threads: int):
        self.encoder, self.threads = encoder, threads
        self.jobs: queue.SimpleQueue = queue.SimpleQueue()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._loop, daemon=True, name="vidsift-encode")
        self.thread.start()

    def submit(self, worker: DecodeWorker, pixels) -> None:
        self.jobs.put((worker, pixels))

    def _loop(self) -> None:
        import torch  # lazy: ~2 s, paid only when there is something to encode (a re-run often has nothing)

        # Set here, in the thread that encodes: without it torch ran this thread's batches on one
        # core (0.95 CPU-s per s: 7 frames/s of ViT-B-32 against 17 with both cores, measured on
        # 2 cores), the reason the first local runs reached half of Ray's steady rate.
        torch.set_num_threads(self.threads)
        while (job := self.jobs.get()) is not None:
            worker, pixels = job
            if worker.dead:
                continue  # killed (timed out) while its batch waited
            try:
                vectors = self.encoder.encode_pixels(pixels)
            except BaseException as exc:  # noqa: BLE001 - the job's loop raises it
                self.error = exc
                return
            worker.send(vectors)

    def stop(self) -> None:
        self.jobs.put(None)


class _LocalJob:
    """The job's loop: hands one video at a time to each ready decoding process, embeds what they
    send, times them, retries or records the ones that die or hang, and commits."""

    def __init__(self, pool: DecodePool, encoder, config: IndexConfig, target: StagingTarget, writer: SafeWriter,
                 report: JobReport, options: LocalOptions, on_progress):
        self.pool, self.config, self.target, self.writer, self.report = pool, config, target, writer, report
        self.limits, self.options, self.on_progress = options.limits, options, on_progress
        self.preprocess_cfg = encoder.preprocess_cfg
        self.encoder = _Encoder(encoder, options.embed_threads or os.cpu_count() or 1)
        self.running: dict[DecodeWorker, Attempt] = {}
        self.failed_starts = 0
        self.done = 0

    def run(self, todo: list[WorkItem]) -> None:
        queue_ = collections.deque((item, 1) for item in todo)
        self.total = len(todo)
        bar = job_progress(len(todo), self.options.progress)
        try:
            while queue_ or self.running:
                interrupts.safe_point()  # a signal that came during a commit stops the job here
                if self.encoder.error is not None:
                    raise self.encoder.error
                for worker in self.pool.idle():
                    if not queue_:
                        break
                    self._assign(worker, *queue_.popleft())
                finished = 0
                for conn in wait(list(self.pool.connections()), timeout=0.5):
                    worker = self.pool.connections().get(conn)
                    if worker is not None:
                        finished += self._read(worker, queue_)
                finished += self._expire(queue_)
                if finished:
                    bar.update(finished)
                    self._progress(finished)
                show_frames(bar, self.report.frames)
                self.writer.maybe_flush()
        except BaseException:
            bar.close()
            self.encoder.stop()
            self.pool.kill()  # interrupted or failed: stop the work, keep what is finished
            self.writer.flush_on_the_way_out()
            raise
        bar.close()
        self.encoder.stop()
        self.pool.kill()  # idle, nothing of theirs pending: a clean exit would only wait for their teardown
        self.writer.flush()

    def _progress(self, finished: int) -> None:
        self.done += finished
        if self.on_progress:
            self.on_progress(self.done, self.total)

    def _assign(self, worker: DecodeWorker, item: WorkItem, tries: int) -> None:
        attempt = Attempt(item, tries)
        attempt.start(worker.where, self.limits)
        worker.busy = True
        self.running[worker] = attempt
        worker.send((item, self.preprocess_cfg, self.config, self.target, self.limits.batch_size,
                     self.options.scratch_dir))

    def _read(self, worker: DecodeWorker, queue_) -> int:
        """Handle the next message of a process; returns 1 when its video is finished either way."""
        try:
            kind, payload = worker.conn.recv()
        except (EOFError, OSError):
            return self._died(worker, queue_, "died (crashed or was killed)")
        if kind == "ready":
            worker.ready = True
            return 0
        attempt = self.running[worker]
        if kind == "encode":
            self.encoder.submit(worker, payload)
            return 0
        if isinstance(payload, Probed):
            attempt.probed(payload.duration, self.limits, self.config.sampling)
            return 0
        del self.running[worker]
        worker.busy = False
        record_outcome(payload, attempt, self.writer, self.report)
        return 1

    def _died(self, worker: DecodeWorker, queue_, cause: str) -> int:
        attempt = self.running.pop(worker, None)
        if attempt is None and not worker.ready:
            self.failed_starts += 1
            if self.failed_starts >= 3:
                raise RuntimeError(f"the decoding processes die as they start (exit code {worker.process.exitcode}); "
                                   "run with --verbose to see why")
        self.pool.replace(worker)
        return 0 if attempt is None else retry_or_fail(attempt, self.limits, queue_, self.writer, cause)

    def _expire(self, queue_) -> int:
        """Kill the processes whose video is past its deadline; retry or record the video."""
        finished = 0
        now = time.monotonic()
        for worker, attempt in list(self.running.items()):
            if attempt.expired(now):
                finished += self._died(worker, queue_, attempt.timeout_cause(now))
        return finished
