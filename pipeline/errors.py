"""Errors a user sees: each names the file, the stage and the cause in one sentence."""
from __future__ import annotations

import signal


class VideoError(Exception):
    """A single video could not be processed; the job records it and carries on."""

    def __init__(self, path: str, stage: str, reason: str):
        super().__init__(f"{path}: {stage} failed: {reason}")
        self.path = path
        self.stage = stage
        self.reason = reason


class InputError(ValueError):
    """A user-supplied argument (path, label file, query) is unusable."""


class StoreBusyError(RuntimeError):
    """Another indexing job holds the database: one writer at a time (new videos are appended, and
    two jobs appending the same file at once would store it twice)."""


class Interrupted(BaseException):
    """The user or the system asked the command to stop (SIGINT: Ctrl-C; SIGTERM: ``kill``, systemd,
    Kubernetes, Slurm). Raised in the main thread by ``pipeline.interrupts``; a BaseException, so
    that no ``except Exception`` on the way swallows it. Finished work is written on the way out."""

    def __init__(self, signum: int):
        self.signum = signum
        self.signal_name = signal.Signals(signum).name
        self.exit_status = 128 + signum  # the shell's convention: 130 for SIGINT, 143 for SIGTERM
        self.report = None  # what the job had done, when it was interrupted inside one
        super().__init__(f"interrupted by {self.signal_name}")


class StoreWriteError(RuntimeError):
    """The database cannot be written (disk full, read-only, not a folder...): the message is one
    line naming the database and the cause. The job stops; what was committed stays."""
