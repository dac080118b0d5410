"""What the shell sees when a command ends: the CLI's exit statuses, decided here and not in the
pipeline. A pipeline report says what happened (videos that failed and were recorded, problems
`verify` left); the app turns that into a status, for the process and for the ``exit_status`` field
of ``--json``.

0 done; 1 failed; 2 bad arguments; 3 done, with inputs that failed (recorded) or problems found.
An interrupted command exits 128 + the signal's number (130 for Ctrl-C, 143 for SIGTERM), the
shell's convention (``pipeline.errors.Interrupted`` carries it).
"""
from __future__ import annotations

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_PARTIAL = 0, 1, 2, 3


def exit_status(report) -> int:
    """``EXIT_PARTIAL`` when a finished command left something for the user to look at (a job's
    recorded failures, problems `verify` did not repair), else ``EXIT_OK``."""
    return EXIT_PARTIAL if report.needs_attention else EXIT_OK


def report_payload(report, **extra) -> dict:
    """A report's ``--json`` payload with its exit status."""
    return {**report.to_dict(), **extra, "exit_status": exit_status(report)}
