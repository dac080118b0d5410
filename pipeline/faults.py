"""Test hooks that make a video's processing fail the ways real inputs and machines do. Read from
``VIDSIFT_TEST_FAULT`` (comma-separated ``kind:<part of a path>``), which no real run sets:

- ``kill:<part>``: the process handling the video dies (``os._exit(134)``, as decord's native
  aborts do) once the video is open, on every attempt; ``kill-once:<part>``: on the first only;
- ``hang:<part>``: it hangs, as a decoder stuck on a bad stream does (and, with
  ``VIDSIFT_TEST_FAULT_DIR``, leaves a ``hanging-<file name>`` marker there first);
- ``kill-embed-once:embed``: the embedding actor dies at its first batch.

Read where the work runs (local Ray's workers inherit the driver's environment; a test cluster's
nodes get it when started). ``*-once`` faults fire once per test: the first process to create
their marker file, in ``VIDSIFT_TEST_FAULT_DIR`` (default: the temporary folder), does.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
import time


def _faults() -> list[tuple[str, str]]:
    found = []
    for item in os.environ.get("VIDSIFT_TEST_FAULT", "").split(","):
        kind, _, needle = item.strip().partition(":")
        if kind and needle:
            found.append((kind, needle))
    return found


def fires(kind: str, subject: str) -> bool:
    """Whether the fault ``kind`` applies to ``subject`` now (claims a ``*-once`` fault)."""
    for fault, needle in _faults():
        if fault == kind and needle in subject:
            if not kind.endswith("-once"):
                return True
            folder = os.environ.get("VIDSIFT_TEST_FAULT_DIR", tempfile.gettempdir())
            marker = os.path.join(folder, "vidsift-fault-" + hashlib.sha1(f"{kind}:{needle}".encode()).hexdigest()[:16])
            try:
                os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
                return True
            except FileExistsError:
                return False
    return False


def inject(path: str) -> None:
    """Apply the faults aimed at the video ``path`` (called as its processing starts)."""
    if not os.environ.get("VIDSIFT_TEST_FAULT"):
        return
    if fires("kill", path) or fires("kill-once", path):
        time.sleep(1.0)  # once the video is open (and the driver has heard it started)
        os._exit(134)
    if fires("hang", path):
        folder = os.environ.get("VIDSIFT_TEST_FAULT_DIR")
        if folder:  # tells a test that the job reached this video
            with open(os.path.join(folder, "hanging-" + os.path.basename(path)), "w") as marker:
                marker.write(str(os.getpid()))
        time.sleep(10**6)
