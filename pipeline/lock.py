"""One indexing job per local database: an OS file lock in the database folder, taken before
anything slow (no lancedb, torch or Ray import here), so a second job is refused in a fraction
of a second, and released by the OS even when the process dies.

Re-entrant for the thread that holds it: the CLI takes it first thing and the job, further in,
takes it again. Another thread of the same process is refused, as another process is.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import errno
import os
import threading
import time
from pathlib import Path

from .errors import StoreBusyError, StoreWriteError

WRITER_LOCK = ".vidsift-writer.lock"  # inside a local database folder (LanceDB lists only *.lance)

_held: dict[str, tuple[int, int]] = {}  # folder -> (owning thread id, depth)
_guard = threading.Lock()


def is_local(uri: str) -> bool:
    return "://" not in uri or uri.lower().startswith("file://")


def local_folder(uri: str) -> Path:
    if uri.lower().startswith("file://"):
        uri = uri[7:]
    return Path(os.path.abspath(os.path.expanduser(uri)))


def write_error(uri: str, exc: OSError, doing: str = "cannot write the database") -> StoreWriteError:
    """An OSError met while writing ``uri``, as one line naming it and the cause in words."""
    causes = {errno.ENOSPC: "the disk is full (no space left on device)",
              errno.EDQUOT: "the disk quota is exhausted",
              errno.EROFS: "it is on a read-only file system",
              errno.EACCES: "permission denied",
              errno.EPERM: "permission denied",
              errno.ENOTDIR: "a part of its path is a file, not a folder",
              errno.EEXIST: "it is a file, not a database folder"}
    cause = causes.get(exc.errno) or (exc.strerror or str(exc)).lower()
    error = StoreWriteError(f"{uri}: {doing}: {cause}")
    error.errno = exc.errno
    return error


def _holder(handle) -> str:
    """Who holds the lock, as it wrote itself down (a job that took the lock an instant ago may
    not have written its line yet: it gets half a second)."""
    for _ in range(10):
        handle.seek(0)
        holder = handle.read().strip()
        if holder:
            return holder
        time.sleep(0.05)
    return "another process"


@contextlib.contextmanager
def writer_lock(uri: str):
    """Hold ``uri`` (a local database folder, created if missing) for one indexing job, or raise
    ``StoreBusyError`` naming the holder, or ``StoreWriteError`` when it cannot be written.
    Remote URIs (s3://...) cannot be locked this way and are not."""
    if not is_local(uri):
        yield
        return
    import fcntl  # lazy: POSIX-only; remote stores and read-only use never need it

    folder = local_folder(uri)
    key = str(folder)
    me = threading.get_ident()
    with _guard:
        owner = _held.get(key)
        if owner and owner[0] == me:
            _held[key] = (me, owner[1] + 1)
            reentered = True
        else:
            reentered = False
    if reentered:
        try:
            yield
        finally:
            with _guard:
                owner = _held[key]
                _held[key] = (me, owner[1] - 1)
        return
    if folder.exists() and not folder.is_dir():
        raise StoreWriteError(f"{uri}: it is a file, not a database folder: give --db a folder (it is created "
                              "if missing)")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle = open(folder / WRITER_LOCK, "a+")
    except OSError as exc:
        raise write_error(uri, exc) from None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(handle)
            raise StoreBusyError(f"{uri} is being written by another vidsift indexing job ({holder}); "
                                 "run one indexing job per database at a time, or wait for it to finish.") from None
        try:
            handle.seek(0)
            handle.truncate()
            handle.write(f"pid {os.getpid()}, since "
                         f"{dt.datetime.now(dt.timezone.utc).isoformat(timespec='seconds')}")
            handle.flush()
        except OSError as exc:
            fcntl.flock(handle, fcntl.LOCK_UN)
            raise write_error(uri, exc) from None
        with _guard:
            _held[key] = (me, 1)
        try:
            yield
        finally:
            with _guard:
                _held.pop(key, None)
            fcntl.flock(handle, fcntl.LOCK_UN)
