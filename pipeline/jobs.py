"""What every indexing job applies, whichever runner moves the work (``pipeline.local_run`` on
this machine, ``workers.job`` on Ray): the per-video time limits and attempts, the words of a
video given up on, the writer set up the same way (orphans cleared, tables created, a commit a
signal cannot cut in half). With the model's one ANN-index policy at the end
(``ModelTables.upkeep_ann_index``), keeping these in one place is what makes both runners leave
the same rows and the same index state.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from .errors import InputError, StoreWriteError
from .indexing import ArchiveFailed, Failed, JobReport, Unchanged, WorkItem
from .staging import StagedVideo, StagedWriter, StagingTarget, prepare_target
from .model_store import ModelTables
from .store_writes import guarded_write

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class JobLimits:
    """How long one video may take and how often it is tried, and the encoder's batch."""

    attempts: int = 3                # tries per video when its process dies or it times out
    video_timeout_s: float = 300.0   # time allowed per video before it is opened (read, copy, hash) ...
    seconds_per_frame: float = 1.0   # ... plus this per sampled frame once its duration is known
    batch_size: int = 64             # frames per encoder call

    def __post_init__(self):
        for name, flag, low, high in (("batch_size", "--batch-size", 1, 4096), ("attempts", "--attempts", 1, 100)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise InputError(f"{flag} must be a whole number between {low} and {high}, got {value!r}")
        if not 1 <= self.video_timeout_s <= 7 * 86_400:  # NaN fails this too
            raise InputError(f"--video-timeout must be between 1 s and a week, got {self.video_timeout_s}")
        if not 0 < self.seconds_per_frame <= 3600:
            raise InputError(f"seconds_per_frame must be in (0, 3600], got {self.seconds_per_frame}")

    def open_limit(self, item: WorkItem) -> float:
        """Before a video is open: the base limit, plus time to copy it at a slow 10 MB/s."""
        return self.video_timeout_s + item.size_bytes / 10e6

    def frames_limit(self, duration: float, sampling) -> float:
        """Once its duration is known: the base limit plus ``seconds_per_frame`` per sampled frame."""
        frames = sampling.frames if sampling.frames is not None else duration * sampling.fps
        return self.video_timeout_s + self.seconds_per_frame * frames


@dataclass
class Attempt:
    """One try of one video: when it started, when it must be done by, where it runs."""

    item: WorkItem
    tries: int
    started: float = 0.0
    deadline: float = float("inf")
    where: str = "unknown node"

    def start(self, where: str, limits: JobLimits) -> None:
        self.where, self.started = where, time.monotonic()
        self.deadline = self.started + limits.open_limit(self.item)

    def probed(self, duration: float, limits: JobLimits, sampling) -> None:
        self.deadline = time.monotonic() + limits.frames_limit(duration, sampling)

    def expired(self, now: float) -> bool:
        return now > self.deadline

    def timeout_cause(self, now: float) -> str:
        return f"timed out after {now - self.started:.0f} s (--video-timeout)"


def retry_or_fail(attempt: Attempt, limits: JobLimits, queue, writer, cause: str) -> int:
    """Requeue a video whose process died or hung, or, after its last attempt, record it (the
    same words from every runner). Returns 1 when the video is finished (recorded)."""
    if attempt.tries < limits.attempts:
        log.warning("%s: attempt %d failed on %s (%s); retrying", attempt.item.path, attempt.tries, attempt.where,
                    cause)
        queue.append((attempt.item, attempt.tries + 1))
        return 0
    writer.fail(attempt.item.path, "decode", f"gave up after {attempt.tries} attempts: the decoding process {cause} "
                                             f"(last attempt on node {attempt.where})")
    return 1


def record_outcome(message, attempt: Attempt, writer, report: JobReport) -> None:
    """A video's last message from its decoding process (Ray task or local worker), into the
    writer: its staged rows, an unchanged file's new mtime, or its failure. An archive that cannot
    take rows stops the job (no other video could be written either)."""
    if isinstance(message, StagedVideo):
        writer.add(message)
        report.mark_startup(report.frames)  # the first video's frames are start-up's
    elif isinstance(message, Unchanged):
        writer.unchanged(message.video_id, message.mtime_ns)
    elif isinstance(message, Failed):
        writer.fail(attempt.item.path, message.stage, message.reason)
    elif isinstance(message, ArchiveFailed):
        raise StoreWriteError(f"{writer.uri}: {message.reason}")


class SafeWriter:
    """The job's ``StagedWriter``, each call a write that a signal cannot cut in half
    (``pipeline.interrupts.deferred``: a commit is fragments, then video rows), and a storage
    failure (disk full, read-only) one line naming the database (``StoreWriteError``)."""

    def __init__(self, writer: StagedWriter, uri: str):
        self.writer, self.uri = writer, uri

    def __getattr__(self, name):
        method = getattr(self.writer, name)
        return lambda *args, **kwargs: guarded_write(self.uri, method, *args, **kwargs)

    def flush_on_the_way_out(self) -> None:
        """Commit what is finished while the job stops on an error or a signal; a storage failure
        here is not raised over the error on its way out, which says why (the disk filled, say)."""
        try:
            guarded_write(self.uri, self.writer.flush)
        except StoreWriteError:
            pass  # what was committed stays


def open_writer(tables: ModelTables, dim: int, known: dict, report: JobReport, storage_options: dict,
                keep_frames: bool) -> tuple[StagingTarget, SafeWriter]:
    """Before the first video is written: rows a crashed job committed without their video rows
    are cleared, the model's tables exist (workers add fragments to them), and one writer commits."""
    tables.clear_orphans()
    target = prepare_target(tables, dim, storage_options, keep_frames=keep_frames)
    return target, SafeWriter(StagedWriter(tables, target, report, known), tables.uri)
