"""Errors a user sees: each names the file, the stage and the cause in one sentence."""
from __future__ import annotations


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
