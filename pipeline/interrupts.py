"""SIGINT (Ctrl-C) and SIGTERM (``kill``, systemd, Kubernetes, Slurm) stop a command the same way:
the main thread gets ``pipeline.errors.Interrupted`` at a point where stopping loses nothing, the
job writes what is finished, and the CLI exits with 128 + the signal number (130, 143).

Writes to the archive are never cut in half: inside ``deferred()`` (every store write) a signal is
only noted, and once something was written it is raised at the next ``safe_point()`` (the job's
loop, between videos), after the caller has taken note of what it wrote, so a buffer that was
just written is never written again on the way out. Outside writes the signal is raised at once,
so a long decode or start-up does not delay it. Later signals are ignored while the command
finishes writing (SIGKILL still stops it at once: what is committed stays committed).

Inside ``held()`` (the Ray job's driver) a signal is never raised from the handler itself, only
at safe points: raised from inside a Ray call (whose Cython code checks for signals) it came out
as a ``SystemError`` instead.

Nothing here is active until ``install()`` is called (the CLI does, in its main thread); without
it Python's own Ctrl-C handling applies and ``deferred``/``safe_point`` cost nothing.
"""
from __future__ import annotations

import contextlib
import signal
import threading

from .errors import Interrupted

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class _State:
    installed = False
    pending: int | None = None   # the first signal received
    raised = False               # Interrupted was raised: later signals are ignored
    depth = 0                    # inside deferred() (a write in progress)
    held = 0                     # inside held(): raise at safe points only
    written = False              # something was written since the last safe point


_state = _State()


def _handler(signum, frame):  # noqa: ARG001 - the signal module's signature
    if _state.pending is None:
        _state.pending = signum
    if _state.raised or _state.depth or _state.held or _state.written:
        return  # noted: raised at the next safe point, or already on the way out
    _state.raised = True
    raise Interrupted(signum)


def install() -> None:
    """Route SIGINT and SIGTERM to ``Interrupted`` (main thread only). Call again after a library
    that installs its own handlers (Ray's driver replaces SIGTERM's with one that aborts)."""
    if threading.current_thread() is not threading.main_thread():
        return
    for signum in SIGNALS:
        signal.signal(signum, _handler)
    _state.installed = True


def reinstall() -> None:
    """``install()`` again if the command installed it (after ``ray.init``)."""
    if _state.installed:
        install()


def reset() -> None:
    """Forget a previous interruption (tests calling the CLI in-process several times)."""
    _state.pending, _state.raised, _state.depth, _state.held, _state.written = None, False, 0, 0, False


@contextlib.contextmanager
def deferred():
    """A write that must not be cut in half: signals arriving meanwhile wait for ``safe_point``."""
    _state.depth += 1
    try:
        yield
    finally:
        _state.depth -= 1
        if _state.depth == 0:
            _state.written = True


@contextlib.contextmanager
def held():
    """Signals are noted, and raised only at ``safe_point()`` calls inside the block (and at the
    first one after it)."""
    _state.held += 1
    try:
        yield
    finally:
        _state.held -= 1


def safe_point() -> None:
    """Stopping here loses nothing: raise a signal that arrived during a write."""
    if _state.depth:
        return
    _state.written = False
    if _state.pending is not None and not _state.raised:
        _state.raised = True
        raise Interrupted(_state.pending)


def pending() -> int | None:
    return _state.pending
