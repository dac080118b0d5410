"""The indexing job's progress, for both runners (``pipeline.local_run`` and ``workers.job``).

On a terminal it is tqdm's bar. Into a log (stderr is a file or a pipe: a cluster job's log, CI,
``nohup``), a redrawn bar is noise: every redraw is a carriage return and the whole line again,
and the jobs' loops turn every half second. There it is one plain line every ``log_every``
seconds and one at the end, formatted by tqdm all the same (rate, elapsed, remaining)::

    indexing: 120/6000 videos [02:10<1:46:12, 0.92video/s, frames=5400]
"""
from __future__ import annotations

import sys
from typing import TextIO

from tqdm import tqdm

LOG_EVERY_S = 30.0
_LOG_LINE = "{desc}: {n_fmt}/{total_fmt} videos [{elapsed}<{remaining}, {rate_fmt}{postfix}]"


class _LogLines:
    """A file for tqdm that turns each redraw into one line of its own (no carriage returns)."""

    def __init__(self, stream: TextIO):
        self.stream = stream

    def write(self, text: str) -> None:
        line = text.replace("\r", "").rstrip()
        if line:
            self.stream.write(line + "\n")

    def flush(self) -> None:
        self.stream.flush()


def job_progress(total: int, enabled: bool, stream: TextIO | None = None, log_every: float = LOG_EVERY_S) -> tqdm:
    """The progress of a job over ``total`` videos (disabled: nothing is written). Count finished
    videos with ``update`` and show frames with ``show_frames``."""
    stream = stream if stream is not None else sys.stderr
    if not enabled or _is_terminal(stream):
        return tqdm(total=total, unit="video", desc="indexing", disable=not enabled, dynamic_ncols=True, file=stream,
                    miniters=0)
    return tqdm(total=total, unit="video", desc="indexing", file=_LogLines(stream), mininterval=log_every,
                miniters=0, bar_format=_LOG_LINE, ascii=True)


def show_frames(bar: tqdm, frames: int) -> None:
    """The frames embedded so far. Called at every turn of the job's loop, so it redraws only when
    the bar's interval has passed (``miniters=0``: also while no video finishes, as on long videos),
    not on every call as ``set_postfix`` alone would."""
    bar.set_postfix(frames=frames, refresh=False)
    bar.update(0)


def _is_terminal(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # closed, or not a real file
        return False
