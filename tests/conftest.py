"""Shared fixtures: videos rendered from the shapes-world spec, and random-weight models.

Random weights are for plumbing and parity only; semantic claims use the bundled shapes-tiny.
"""
from __future__ import annotations

import ast
import contextlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from vidsift.pipeline.shapes.encode import render_video  # loads PyAV before any test loads decord
from vidsift.pipeline.shapes.spec import SceneSpec, VideoSpec

REPO = Path(__file__).resolve().parents[1]
SCENE_PAIRS = [("red", "circle"), ("blue", "square"), ("yellow", "triangle"), ("white", "star")]


def imported_names(module) -> set[str]:
    """Every module name a module's source imports (``import x``, ``from x import y``; relative
    imports as written, without their dots), read from the file, not from what ran."""
    tree = ast.parse(Path(module.__file__).read_text())
    names = {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    return names | {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}


def make_video(path, fps=24, durations=(3.0,), container="mp4", size=(160, 120), pairs=None,
               background="black") -> dict:
    """Render a small shapes-world video with one scene per duration; returns its manifest entry."""
    pairs = pairs or SCENE_PAIRS
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    scenes = [SceneSpec(colour=pairs[i % len(pairs)][0], shape=pairs[i % len(pairs)][1], duration_s=d,
                        size_frac=0.4, vx=0.1, vy=0.05, spin=0.5)
              for i, d in enumerate(durations)]
    return render_video(Path(path), VideoSpec(scenes=scenes, width=size[0], height=size[1], fps=fps,
                                              container=container, background=background))


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory):
    """vidsift's own file cache (the rival banks) in a folder of this test session, not the user's
    ~/.cache: set in the environment, so the CLI's subprocesses use it too."""
    before = os.environ.get("VIDSIFT_CACHE_DIR")
    os.environ["VIDSIFT_CACHE_DIR"] = str(tmp_path_factory.mktemp("vidsift-cache"))
    yield
    if before is None:
        os.environ.pop("VIDSIFT_CACHE_DIR", None)
    else:
        os.environ["VIDSIFT_CACHE_DIR"] = before


@pytest.fixture(scope="session")
def random_vit():
    """ViT-B-32 with seeded random weights (the same in every process)."""
    # lazy: every test file loads this conftest, and most of them never load torch
    from vidsift.models.encoder import ClipEncoder
    from vidsift.models.spec import resolve_spec

    return ClipEncoder.from_spec(resolve_spec("ViT-B-32", "none"))


@pytest.fixture(scope="session")
def small_archive(tmp_path_factory):
    """Three good videos of different formats and frame rates."""
    root = tmp_path_factory.mktemp("archive")
    make_video(root / "a.mp4", fps=25, durations=(3.0, 2.5))
    make_video(root / "b.mkv", fps=30, durations=(2.0,), container="mkv", pairs=[("green", "square")])
    make_video(root / "sub" / "c.webm", fps=10, durations=(4.2,), container="webm",
               pairs=[("purple", "circle")], size=(214, 120))
    return root


def run_cli(*args, env=None, timeout=300) -> subprocess.CompletedProcess:
    """The real `vidsift` command in a subprocess, as a user runs it."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "vidsift.app.cli", *map(str, args)], cwd=REPO, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


@contextlib.contextmanager
def writer_held_by_another_process(db):
    """Another process holds ``db``'s writer lock (as a running indexing job does) until the block ends."""
    holder = subprocess.Popen(
        [sys.executable, "-c", "import time; from vidsift.pipeline.store import VideoStore\n"
         f"with VideoStore({str(db)!r}).exclusive_writer():\n    print('holding', flush=True); time.sleep(60)"],
        cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "holding"
        yield
    finally:
        holder.kill()
        holder.wait()


@pytest.fixture(scope="session")
def s3(tmp_path_factory):
    """One S3-compatible server (moto on a free loopback port) for the session, stopped by its PID.
    Its bucket ``vidsift`` exists; tests make others with ``s3.make_bucket``."""
    from tests.s3_server import s3_server  # lazy: moto loads only for the tests that use S3

    with s3_server(buckets=("vidsift",), log_path=tmp_path_factory.mktemp("moto") / "moto.log") as server:
        yield server
