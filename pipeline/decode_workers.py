"""Decoding processes for the local pipeline: each runs ``indexing.run_video`` for one video at a
time (read and hash, decode, segment, refine cuts, write the rows as uncommitted fragments), and
asks the job's process to embed its frames.

Why processes, and why few and long-lived:

- decord can hang holding the GIL, abort the whole process from native code, or deadlock after a
  fork (field notes): a video is decoded in a process the job can kill on a timeout, and a dead
  or killed process costs only its own video's attempt. They are started with ``spawn``, not
  ``fork`` (lancedb crashed once in a forked process; decord deadlocks after fork).
- a spawned process pays ~2 s of imports (lance, pyarrow, decord, PyAV) before its first frame,
  so a process per video would add that to every video of a 20-video job on 2 cores; a small pool
  pays it once, while the job's process loads the model, and a process is replaced only when it
  dies or is killed.

Frames travel as model-size uint8 squares (224x224x3: 150 KB a frame, 64-frame batches) over a
pipe, and vectors come back; one batch per process is in flight (``indexing.embed_chunks``), so
the next batch decodes while the previous one is embedded. The job's side sends from a thread per
process, so a process busy decoding never blocks the job's loop.
"""
from __future__ import annotations

import ctypes
import multiprocessing
import os
import queue
import signal
import socket
import threading
from multiprocessing.connection import Connection

from . import video_libs

_STOP = object()


def _die_with_parent() -> None:
    """Linux: this process is killed when the job's process dies (even by SIGKILL), so a hung
    decoder never outlives its job."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        if os.getppid() == 1:  # the parent died before the call
            os._exit(1)
    except (OSError, AttributeError):
        pass  # not Linux: the pipe's end-of-file stops an idle process instead


def worker_main(conn: Connection) -> None:
    """A decoding process: imports what it needs at once (while the job loads its model), says it
    is ready, then runs one video per task until told to stop or the job's end of the pipe closes.
    Signals are the job's to handle (Ctrl-C reaches the whole process group): this process is
    stopped by the job, or dies with it."""
    _die_with_parent()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_IGN)
    # The ~2 s of imports a decoding process pays, here and not at the top of this module: a spawned
    # process imports this module before ``worker_main`` runs, and they must come after the signals
    # are set (a Ctrl-C meanwhile would print a traceback from every process); the job's own process,
    # which imports this module too, decodes nothing and never loads decord.
    video_libs.decord()
    import lance.fragment  # noqa: F401 - lazy: see above

    from . import indexing  # lazy: see above

    conn.send(("ready", os.getpid()))

    def encode(pixels):
        conn.send(("encode", pixels))
        return conn.recv  # waits for this batch's vectors (one batch in flight at a time)

    while True:
        try:
            task = conn.recv()
        except (EOFError, OSError):
            return
        if task is None:
            return
        item, preprocess_cfg, config, target, batch_size, scratch_dir = task
        for message in indexing.run_video(item, encode, preprocess_cfg, config, target, batch_size, scratch_dir):
            conn.send(("message", message))


class DecodeWorker:
    """The job's handle on one decoding process: its pipe, a sender thread, and the video it runs."""

    def __init__(self, context, index: int):
        parent, child = context.Pipe(duplex=True)
        self.process = context.Process(target=worker_main, args=(child,), daemon=True, name=f"vidsift-decode-{index}")
        self.process.start()
        child.close()
        self.conn = parent
        self.ready = False
        self.busy = False
        self.dead = False
        self.outbox: queue.SimpleQueue = queue.SimpleQueue()
        self.sender = threading.Thread(target=self._send_loop, daemon=True, name=f"vidsift-send-{index}")
        self.sender.start()

    @property
    def where(self) -> str:
        return f"{socket.gethostname()}, process {self.process.pid}"

    def send(self, message) -> None:
        self.outbox.put(message)

    def _send_loop(self) -> None:
        while (message := self.outbox.get()) is not _STOP:
            try:
                self.conn.send(message)
            except (OSError, ValueError):
                return  # the process died or was killed: the job's loop learns it from the pipe

    def kill(self) -> None:
        """Stop the process now, whatever it is doing (a hung decoder, an interrupted job)."""
        self.dead = True
        self.outbox.put(_STOP)
        if self.process.is_alive():
            self.process.kill()
        self.process.join(timeout=10)
        self.conn.close()

    def close(self, timeout: float = 5.0) -> None:
        """Let an idle process exit on its own; kill it if it does not."""
        if self.dead:
            return
        self.send(None)
        self.outbox.put(_STOP)
        self.process.join(timeout=timeout)
        self.kill()


class DecodePool:
    """Up to ``size`` decoding processes, started at once (their imports overlap with the job's
    model loading) and replaced when one dies or is killed."""

    def __init__(self, size: int):
        self.size = size
        self.context = multiprocessing.get_context("spawn")
        self.started = 0
        self.workers: list[DecodeWorker] = []
        for _ in range(size):
            self._start()

    def _start(self) -> DecodeWorker:
        worker = DecodeWorker(self.context, self.started)
        self.started += 1
        self.workers.append(worker)
        return worker

    def replace(self, worker: DecodeWorker) -> None:
        worker.kill()
        self.workers.remove(worker)
        self._start()

    def idle(self) -> list[DecodeWorker]:
        return [w for w in self.workers if w.ready and not w.busy]

    def connections(self) -> dict[Connection, DecodeWorker]:
        return {w.conn: w for w in self.workers}

    def close(self) -> None:
        for worker in self.workers:
            worker.close()
        self.workers = []

    def kill(self) -> None:
        for worker in self.workers:
            worker.kill()
        self.workers = []
