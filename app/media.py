"""Playing a search hit without putting a path in a URL: each allowed video gets a random token,
and ``/vidsift/media/<token>`` (``app.web``) serves the file behind it.

A token is handed out only for a file that passed the allowlist (``app.paths``), and the file is
checked again when served: a video moved, or swapped for a symbolic link leading out, after its
token was handed out is not served. The newest 4096 tokens are kept.
"""
from __future__ import annotations

import os
import secrets
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence

from vidsift.app.paths import PathRefused, check_extension, check_inside
from vidsift.pipeline.sources import VIDEO_EXTENSIONS

MEDIA_ROUTE = "/vidsift/media"
MAX_TOKENS = 4096


class MediaTokens:
    """Tokens for the videos a user may play; ``roots()``: the folders whose files may be served."""

    def __init__(self, roots: Callable[[], Sequence[str]]):
        self._roots = roots
        self._files: OrderedDict[str, tuple[str, str]] = OrderedDict()
        self._lock = threading.Lock()

    def register(self, path: str) -> str:
        """A token for one allowed video file (checked now and again when served)."""
        real = check_inside(path, self._roots(), what="video")
        check_extension(str(real), VIDEO_EXTENSIONS, what="video file")
        if not real.is_file():
            raise PathRefused(f"The video {path!r} is no longer there.")
        token = secrets.token_urlsafe(18)
        with self._lock:
            self._files[token] = (path, str(real))
            while len(self._files) > MAX_TOKENS:
                self._files.popitem(last=False)
        return token

    def file(self, token: str) -> str | None:
        """The file behind a token if it is still where it was checked, else None."""
        with self._lock:
            entry = self._files.get(token)
        if entry is None:
            return None
        written, real = entry
        if os.path.realpath(written) != real or not os.path.isfile(real):
            return None  # moved, or a symlink swapped since the check
        return real

    @staticmethod
    def url(token: str, start: float) -> str:
        """The player's source for a token, starting at ``start`` seconds (media fragment)."""
        return f"{MEDIA_ROUTE.lstrip('/')}/{token}#t={start:.3f}"
