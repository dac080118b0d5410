"""The native video libraries, loaded from this one place in the one order that works.

decord loads its own, older libvpx with ``RTLD_GLOBAL``. If that happens before PyAV's libraries
are loaded, PyAV's VP9 encoder binds to the wrong libvpx and refuses to open (the shapes-world
renderer writes WebM/VP9; ``pipeline/shapes/encode.py`` also detects the clash and falls back to a fresh
interpreter). So PyAV is always loaded first, and every module that needs decord gets it here.

These are functions, not module-level imports, because most commands never decode: ``vidsift
--help``, a search answered by a running app and the store's maintenance commands should not pay
for loading two FFmpeg builds.
"""
from __future__ import annotations


def pyav():
    """The ``av`` module (PyAV)."""
    import av  # lazy: see the module's note

    return av


def decord():
    """The ``decord`` module, loaded after PyAV (see the module's note)."""
    import av  # noqa: F401 - first: see the module's note
    import decord as decord_module  # lazy: see the module's note

    return decord_module
