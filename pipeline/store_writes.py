"""Every write to the store, made safe the same way: a signal waits until the write is done
(``pipeline.interrupts``), and a failure of the storage itself (disk full, read-only,
permissions) becomes one line naming the database instead of a long Rust error naming LanceDB's
source files. Used by the archive-wide store, the per-model handle and the job's writer.
"""
from __future__ import annotations

import errno
import functools

from . import interrupts
from .errors import StoreWriteError
from .lock import write_error


def write_failure(uri: str, exc: BaseException):
    """``exc``, met while writing ``uri``, as a ``StoreWriteError`` when the cause is the storage
    itself (disk full, read-only, permissions); None for anything else. LanceDB reports these as
    long Rust errors naming its source files, not the database."""
    if isinstance(exc, StoreWriteError):
        return exc
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM):
        return write_error(uri, exc)
    text = str(exc)
    for needle, code in (("No space left on device", errno.ENOSPC), ("Disk quota exceeded", errno.EDQUOT),
                         ("Read-only file system", errno.EROFS), ("Permission denied", errno.EACCES)):
        if needle in text:
            return write_error(uri, OSError(code, needle))
    return None


def guarded_write(uri: str, write, *args, **kwargs):
    """Run ``write`` so that a signal waits until it is done (``pipeline.interrupts``) and a
    storage failure becomes one line naming the database ``uri``."""
    with interrupts.deferred():
        try:
            return write(*args, **kwargs)
        except Exception as exc:
            failure = write_failure(uri, exc)
            if failure is None or failure is exc:
                raise
            raise failure from None


def writes(method):
    """A method of an object with a ``uri`` (the store, a model's handle) that writes (``guarded_write``)."""
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        return guarded_write(self.uri, method, self, *args, **kwargs)
    return wrapper
