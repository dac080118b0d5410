"""What runs on the cluster's workers: one task per video, and the embedding actors.

    video task (CPU, on any node):  read/copy + hash -> decode -> [embedding actor] -> segments,
                                    cut refinement -> segment/frame fragments written to the archive
    embedding actor (GPU, or CPU):  pixels -> vectors, model loaded once

A video's bytes, frames and rows stay on the worker that processes it; the driver receives a few
small messages per video (``Started``, ``Probed``, then the ``StagedVideo``: one video row and the
fragments' metadata; or ``Failed``, or ``Lost`` when its embedding actor went with its node). The
task yields them as a streaming generator, so the driver learns a video's duration as soon as it
is open and can time the rest of it against that.
"""
from __future__ import annotations

import os
import socket
import zlib
from dataclasses import dataclass

import numpy as np

from vidsift.models.spec import ModelSpec
from vidsift.pipeline import faults
from vidsift.pipeline.config import IndexConfig
from vidsift.pipeline.indexing import ArchiveFailed, Failed, WorkItem, run_video  # noqa: F401 - the task's messages
from vidsift.pipeline.staging import StagingTarget

# RAY_IS_LAZY: the functions here run inside Ray's workers, where ray is loaded already; the driver
# imports this module before it starts Ray, and importing ray (~1 s) there would end the overlap of
# starting Ray with importing open_clip that ``workers.job._run`` arranges.


@dataclass(frozen=True)
class Started:
    """The task began on a node (named in failures that follow)."""

    node: str
    pid: int


@dataclass(frozen=True)
class Lost:
    """The video could not finish for a reason of the cluster's, not the file's: its embedding
    actor could not be reached (its node died, or it is being restarted elsewhere). Not a
    ``Failed``, which is recorded at once: the driver tries the video again (``workers.job``)."""

    cause: str


class EmbedActor:
    """Loads the model once and embeds batches of model-ready frames. Several video tasks call it
    at once (threaded actor): while one batch runs on the device, the next is being received."""

    def __init__(self, spec: dict, threads: int):
        # lazy: torch and open_clip load in the actor's process only, never in the driver's
        import torch

        from vidsift.models.encoder import ClipEncoder

        torch.set_num_threads(max(1, threads))
        self.encoder = ClipEncoder.from_spec(ModelSpec(**spec))

    def encode(self, pixels: np.ndarray) -> np.ndarray:
        if faults.fires("kill-embed-once", "embed"):  # tests: this actor's process dies mid-job, once
            os._exit(137)
        return self.encoder.encode_pixels(pixels)

    def node_id(self) -> str:
        import ray  # lazy: see RAY_IS_LAZY

        return ray.get_runtime_context().get_node_id()


def node_address() -> str:
    """This worker's node, as a person would look for it (its IP, else its host name)."""
    try:
        import ray  # lazy: see RAY_IS_LAZY

        return ray.util.get_node_ip_address()
    except Exception:  # noqa: BLE001 - naming the node must never fail the task
        return socket.gethostname()


def remote_encode(actor, lost: list[str]):
    """``process_video``'s encode function over an embedding actor: submits a batch, returns a
    function that waits for its vectors. An actor that cannot be reached (its node died: Ray
    retries the call a few times, seconds, then gives up, often before the cluster has noticed the
    node is gone and restarted the actor elsewhere), or whose result was lost with its node, is
    noted in ``lost`` before the error goes on."""
    import ray  # lazy: see RAY_IS_LAZY
    from ray.exceptions import ObjectLostError, RayActorError

    def submit(pixels: np.ndarray):
        ref = actor.encode.remote(pixels)

        def wait() -> np.ndarray:
            try:
                return ray.get(ref)
            except (RayActorError, ObjectLostError) as exc:
                lost.append(f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0][:160]}")
                raise
        return wait
    return submit


def video_task(item: WorkItem, actors: dict, preprocess_cfg: dict, config: IndexConfig, target: StagingTarget,
               batch_size: int):
    """Ray streaming-generator task for one video (``indexing.run_video``, as the local pipeline's
    decoding processes run it). Bad input yields ``Failed``; an embedding actor out of reach yields
    ``Lost`` (``run_video`` would have made it a ``Failed``, recorded and never retried); a crash of
    this process (decord can abort in native code) surfaces to the driver as a Ray error instead."""
    import ray  # lazy: see RAY_IS_LAZY

    yield Started(node=node_address(), pid=os.getpid())
    here = ray.get_runtime_context().get_node_id()
    handles = actors.get(here) or next(iter(actors.values()))  # an actor on this node: pixels stay local
    actor = handles[zlib.crc32(item.path.encode()) % len(handles)]
    lost: list[str] = []
    for message in run_video(item, remote_encode(actor, lost), preprocess_cfg, config, target, batch_size):
        if lost and isinstance(message, Failed):  # the failure is the actor's, not the file's
            yield Lost(lost[0])
            return
        if (isinstance(message, Failed) and message.stage == "read" and message.reason == "file does not exist"
                and not item.path.partition("://")[1]):
            message = Failed("read", f"file does not exist on node {node_address()} (every node needs the inputs "
                                     "at the same path: a shared filesystem, or object storage)")
        yield message
