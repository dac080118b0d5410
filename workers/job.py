"""The indexing job on Ray Data: decode on CPU tasks, embed on an actor pool (GPU when present),
pool and write on the driver.

    paths -> [decode: CPU tasks, one video each] -> frame batches spanning videos
          -> [embed: actor pool, model loaded once per actor] -> vectors
          -> driver: group by video, pool into segments, write to LanceDB in batches

Each decode task streams a video in chunks and ends it with an "end" row carrying the video's
metadata, or an "error" row with the cause; the driver completes a video when all its frames and
its end row have arrived. A decode task that dies in native code (decord can abort the process)
loses its rows: the driver records every video that never completed as a failure, so no file
vanishes silently (as it would with ``ray.data.read_videos`` and tolerated errors).
"""
from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass

import numpy as np

from models.spec import ModelSpec
from pipeline.config import IndexConfig
from pipeline.decode import VideoInfo, decode_video
from pipeline.errors import VideoError
from pipeline.frames import FrameTransform
from pipeline.indexing import JobReport, RecordWriter, assemble_record, plan_work
from pipeline.sources import VideoFile
from pipeline.store import ANN_AUTO_THRESHOLD, VideoStore

KIND_FRAME, KIND_END, KIND_ERROR = 0, 1, 2
BLOCK_BYTES = 2 * 2**20


@dataclass(frozen=True)
class ClusterConfig:
    """Where and how wide the job runs. ``address=None`` starts a local Ray on this machine."""

    address: str | None = None
    num_cpus: int | None = None      # local Ray only: CPUs to use (default: all)
    embed_actors: int | None = None  # default: one per GPU, else one
    embed_threads: int | None = None  # torch threads per CPU actor (default: the CPUs / actors)
    batch_size: int = 64             # frames per encoder call; batches span videos


def _rows(video: VideoFile, kind: int, size: tuple[int, int], n: int = 1, **values) -> dict:
    """A batch in the job's one schema; unused columns get empty values."""
    return {
        "video_id": np.array([video.video_id] * n, dtype=object),
        "kind": np.full(n, kind, dtype=np.int8),
        "time": values.get("time", np.zeros(n)),
        "pixels": values.get("pixels", np.zeros((n, size[0], size[1], 3), dtype=np.uint8)),
        "thumbnail": np.array(values.get("thumbnails", [b""] * n), dtype=object),
        "meta": np.array([values.get("meta", "")] * n, dtype=object),
    }


def decode_task(batch: dict, *, preprocess_cfg: dict, config: IndexConfig) -> Iterator[dict]:
    """Ray Data UDF: one input row = one video; yields its frames chunk by chunk, then end/error."""
    transform = FrameTransform.from_preprocess_cfg(preprocess_cfg)
    for record in batch["video"]:
        video = VideoFile(**json.loads(record))
        try:
            info, chunks = decode_video(video.path, transform, config)
            n = 0
            for chunk in chunks:
                yield _rows(video, KIND_FRAME, transform.size, len(chunk.times), time=chunk.times,
                            pixels=chunk.pixels, thumbnails=chunk.thumbnails)
                n += len(chunk.times)
            yield _rows(video, KIND_END, transform.size, meta=json.dumps({"info": asdict(info), "n": n}))
        except VideoError as exc:
            yield _rows(video, KIND_ERROR, transform.size, meta=json.dumps({"stage": exc.stage, "reason": exc.reason}))
        except Exception as exc:  # never let one file stop the job
            yield _rows(video, KIND_ERROR, transform.size,
                        meta=json.dumps({"stage": "decode", "reason": f"{type(exc).__name__}: {exc}"[:300]}))


class EmbedActor:
    """Ray Data actor: loads the model once, embeds the frame rows of each batch."""

    def __init__(self, spec: dict, threads: int):
        import torch

        from models.encoder import ClipEncoder

        torch.set_num_threads(max(1, threads))
        self.encoder = ClipEncoder.from_spec(ModelSpec(**spec))
        self.dim = self.encoder.embed_dim

    def __call__(self, batch: dict) -> dict:
        frames = batch["kind"] == KIND_FRAME
        vectors = np.zeros((len(frames), self.dim), dtype=np.float32)
        if frames.any():
            vectors[frames] = self.encoder.encode_pixels(batch["pixels"][frames])
        out = {key: value for key, value in batch.items() if key != "pixels"}
        out["vector"] = vectors
        return out


class _Assembler:
    """Driver side: collects the rows of each video until it is complete."""

    def __init__(self, todo: list[VideoFile], writer: RecordWriter, config: IndexConfig, model_key: str):
        self.videos = {v.video_id: v for v in todo}
        self.pending = {v.video_id: {"times": [], "vectors": [], "thumbs": [], "end": None} for v in todo}
        self.writer, self.config, self.model_key = writer, config, model_key
        self.frames = 0

    def feed(self, batch: dict) -> int:
        """Consume a batch; return how many videos it completed."""
        completed = 0
        for i, video_id in enumerate(batch["video_id"]):
            state = self.pending.get(video_id)
            if state is None:
                continue  # video already failed; drop its stragglers
            kind = int(batch["kind"][i])
            if kind == KIND_FRAME:
                state["times"].append(float(batch["time"][i]))
                state["vectors"].append(batch["vector"][i])
                state["thumbs"].append(batch["thumbnail"][i])
                self.frames += 1
            elif kind == KIND_END:
                state["end"] = json.loads(batch["meta"][i])
            else:
                meta = json.loads(batch["meta"][i])
                self.writer.fail(self.videos[video_id].path, meta["stage"], meta["reason"])
                del self.pending[video_id]
                completed += 1
                continue
            if state["end"] is not None and len(state["times"]) == state["end"]["n"]:
                completed += self._finish(video_id, state)
        return completed

    def _finish(self, video_id: str, state: dict) -> int:
        video = self.videos[video_id]
        del self.pending[video_id]
        try:
            record = assemble_record(video, VideoInfo(**state["end"]["info"]), np.asarray(state["times"]),
                                     np.stack(state["vectors"]) if state["vectors"] else np.zeros((0, 1)),
                                     state["thumbs"], self.config, self.model_key)
        except VideoError as exc:
            self.writer.fail(exc.path, exc.stage, exc.reason)
        else:
            self.writer.add(record)
        return 1

    def abandon_unfinished(self) -> None:
        for video_id in list(self.pending):
            self.writer.fail(self.videos[video_id].path, "decode",
                             "the decoding worker died before finishing this video (crash in the decoder?)")
            del self.pending[video_id]


def _init_ray(cluster: ClusterConfig):
    import warnings

    import ray

    if ray.is_initialized():
        return ray
    # Ray's processes are fork+exec'd, so lancedb's fork warning does not apply to them.
    warnings.filterwarnings("ignore", message="lancedb fork support is experimental")
    kwargs = dict(include_dashboard=False, log_to_driver=False, configure_logging=True,
                  logging_level="ERROR")
    if cluster.address:
        # Ship our code to the cluster's workers; their Python environment supplies the dependencies.
        import models
        import pipeline
        import workers

        kwargs["runtime_env"] = {"py_modules": [os.path.dirname(m.__file__) for m in (models, pipeline, workers)]}
        ray.init(address=cluster.address, **kwargs)
    else:
        ray.init(num_cpus=cluster.num_cpus, **kwargs)
    return ray


def _embed_resources(ray, cluster: ClusterConfig) -> dict:
    """One actor per GPU when the cluster has GPUs. Without GPUs, one actor whose torch threads
    span every CPU but which reserves none: decode tasks keep every CPU slot (an actor holding CPUs
    starves them, see field notes), and the OS shares the cores between decoding and encoding as
    their costs dictate, so the heavier stage, whichever it is, gets the whole machine when the
    other one idles (``bench/throughput.py`` measured the alternatives)."""
    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    cpus = int(resources.get("CPU", 1))
    if gpus:
        return {"concurrency": cluster.embed_actors or gpus, "num_gpus": 1, "num_cpus": 1, "threads": 1}
    actors = cluster.embed_actors or 1
    threads = cluster.embed_threads or max(1, cpus // actors)
    return {"concurrency": actors, "num_gpus": 0, "num_cpus": 0, "threads": threads}


def run_index_job(store: VideoStore, spec: ModelSpec, paths: list[str], config: IndexConfig,
                  cluster: ClusterConfig = ClusterConfig(), build_index: bool = False,
                  preprocess_cfg: dict | None = None, progress: bool = True) -> JobReport:
    """Index ``paths`` into ``store`` with ``spec``; resumable (done videos are skipped). One job
    per database at a time (``VideoStore.exclusive_writer``)."""
    with store.exclusive_writer():
        return _run_index_job(store, spec, paths, config, cluster, build_index, preprocess_cfg, progress)


def _run_index_job(store: VideoStore, spec: ModelSpec, paths: list[str], config: IndexConfig,
                   cluster: ClusterConfig, build_index: bool, preprocess_cfg: dict | None,
                   progress: bool) -> JobReport:
    from tqdm import tqdm

    report = JobReport()
    suffix = spec.table_suffix
    writer = RecordWriter(store, spec.key, suffix, report)
    todo = plan_work(writer, paths)
    if todo:
        # Ray starts (its own processes; this thread mostly waits) while a helper thread imports
        # open_clip and checks the model: the two largest start-up costs overlap instead of adding
        # up. Ray stays in the main thread: its processes die with the thread that started them.
        from models.loading import preprocess_config

        with ThreadPoolExecutor(1, thread_name_prefix="model-check") as pool:
            checked = pool.submit(preprocess_config, spec) if preprocess_cfg is None else None
            ray = _init_ray(cluster)
            preprocess_cfg = checked.result() if checked else preprocess_cfg  # raises a missing model
        from ray.data import DataContext

        ctx = DataContext.get_current()
        ctx.enable_progress_bars = False
        ctx.max_errored_blocks = -1  # crashed decode tasks are recorded by the driver instead
        # Small blocks, so a long video's frames stream to the encoder as they are decoded instead
        # of piling up in the decode worker until the default 128 MiB block is full (a 60-minute
        # video was one block: nothing reached the encoder for 82 s; bench/memory.py).
        ctx.target_max_block_size = BLOCK_BYTES
        res = _embed_resources(ray, cluster)
        items = [{"video": json.dumps(asdict(v))} for v in todo]
        ds = ray.data.from_items(items, override_num_blocks=len(items))
        ds = ds.map_batches(decode_task, batch_size=1, num_cpus=1,
                            fn_kwargs={"preprocess_cfg": preprocess_cfg, "config": config})
        ds = ds.map_batches(EmbedActor, batch_size=cluster.batch_size,
                            compute=ray.data.ActorPoolStrategy(size=res["concurrency"]),
                            num_cpus=res["num_cpus"], num_gpus=res["num_gpus"],
                            fn_constructor_kwargs={"spec": asdict(spec), "threads": res["threads"]})
        assembler = _Assembler(todo, writer, config, spec.key)
        logging.getLogger("ray.data").setLevel(logging.WARNING)  # our bar says it; Ray Data's INFO lines repeat it
        bar = tqdm(total=len(todo), unit="video", desc="indexing", disable=not progress, dynamic_ncols=True)
        try:
            for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
                done = assembler.feed(batch)
                report.mark_startup(assembler.frames)
                elapsed = max(time.monotonic() - report.started, 1e-6)
                bar.set_postfix(frames=assembler.frames, fps=f"{assembler.frames / elapsed:.1f}")
                bar.update(done)
            assembler.abandon_unfinished()  # the stream ended: a video still open lost its decoder
        finally:
            bar.close()
            writer.flush()  # interrupted or not, finished videos are stored
    writer.flush()
    table = store.segments_table(suffix)
    if table is not None and (build_index or (table.count_rows() >= ANN_AUTO_THRESHOLD
                                              and not store.has_vector_index(suffix))):
        report.ann_index = store.build_vector_index(suffix)
    elif table is not None and store.has_vector_index(suffix) and report.indexed:
        store.optimize(suffix)
        report.ann_index = "updated"
    report.seconds = time.monotonic() - report.started
    return report
