"""One video through the pipeline (file -> frames -> vectors -> segments -> record), and the
bookkeeping every indexing job shares: what to skip, buffered writes, failures, the final report.

Both runners apply exactly these steps to a video (``process_video`` / ``run_video``): the local
pipeline (``pipeline.local_run``: decoding processes on this machine, the model in the job's own
process) and the Ray job (``workers/``). ``index_sequential`` is the local pipeline for a list of
paths (the app's uploads and folder indexing, tests).
"""
from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np

from . import faults
from .config import IndexConfig
from .decode import VideoInfo, decode_video, refine_cuts
from .errors import VideoError
from .frames import FrameTransform
from .records import Failure, FrameRows, SegmentRow, VideoRecord, segment_row
from .segments import build_segments, detect_cut_intervals, mean_pool
from .sources import VideoFile
from .sql_filters import sql_in
from .staging import StagedVideo, StagingTarget, stage_record
from .storage import readable_copy
from .store import VideoStore
from .store_writes import write_failure


def assemble_record(video: VideoFile, info: VideoInfo, times: np.ndarray, vectors: np.ndarray,
                    thumbnails: list[bytes], config: IndexConfig, model_key: str,
                    tags: tuple[str, ...] = (), local_path: str | None = None) -> VideoRecord:
    """Pool one video's frame vectors into segments and a video vector. ``local_path``: where the
    bytes are on this machine when ``video.path`` is not (a scratch copy of an s3:// object),
    for placing scene cuts on the frame."""
    if len(times) == 0:
        raise VideoError(video.path, "decode", "no frames could be sampled")
    order = np.argsort(times, kind="stable")
    times, vectors = times[order], vectors[order]
    thumbnails = [thumbnails[i] for i in order]
    segments = build_segments(times, vectors, info.duration, config.segments,
                              cuts=_exact_cuts(local_path or video.path, times, vectors, info.duration, config.segments,
                                               frame_size=(info.height, info.width)))
    return VideoRecord(
        video_id=video.video_id, path=video.path, size_bytes=video.size_bytes, mtime_ns=video.mtime_ns,
        duration=info.duration, fps=info.fps, width=info.width, height=info.height,
        n_frames=len(times), settings=config.to_json(), vector=mean_pool(vectors),
        segments=[SegmentRow(start=s.start, end=s.end, n_frames=s.n_frames, thumbnail=thumbnails[s.middle_frame],
                             vector=s.vector, starts_scene=s.starts_scene) for s in segments],
        tags=tags,
        frames=FrameRows(times, vectors, thumbnails) if config.keep_frames else None,
    )


def _exact_cuts(path: str, times: np.ndarray, vectors: np.ndarray, duration: float, segments,
                frame_size: tuple[int, int] | None = None) -> list[float] | None:
    """Scene cuts refined on the frame by decoding around them, or None to let segmentation place
    them itself (fixed windows, or refinement switched off)."""
    if segments.mode != "scenes" or not segments.refine_cuts:
        return None
    return refine_cuts(path, detect_cut_intervals(times, vectors, duration, segments), frame_size=frame_size)


@dataclass
class EmbeddedVideo:
    info: VideoInfo
    times: np.ndarray
    vectors: np.ndarray
    thumbnails: list[bytes]


def embed_video(path: str, encoder, config: IndexConfig, batch_size: int = 64) -> EmbeddedVideo:
    """Decode and embed one video in this process (bounded memory: one chunk of frames at a time)."""
    transform = FrameTransform.from_preprocess_cfg(encoder.preprocess_cfg)
    info, chunks = decode_video(path, transform, config)
    return embed_chunks(path, info, chunks, encode_now(encoder), batch_size)


def encode_now(encoder) -> Callable[[np.ndarray], Callable[[], np.ndarray]]:
    """``embed_chunks``' encode function for an encoder in this process: encodes at once."""
    def submit(pixels: np.ndarray) -> Callable[[], np.ndarray]:
        vectors = encoder.encode_pixels(pixels)
        return lambda: vectors
    return submit


def embed_chunks(path: str, info: VideoInfo, chunks: Iterable, encode: Callable[[np.ndarray], Callable[[], np.ndarray]],
                 batch_size: int = 64) -> EmbeddedVideo:
    """Embed decoded chunks ``batch_size`` frames at a time. ``encode(pixels)`` submits a batch and
    returns a function that waits for its vectors, so with a remote encoder (a GPU actor) the next
    batch is decoded while the previous one is embedded; one batch is in flight at a time, which
    bounds the frames held here."""
    times, vectors, thumbs = [], [], []
    pending, pending_times = [], []
    in_flight: Callable[[], np.ndarray] | None = None

    def submit():
        nonlocal in_flight
        if in_flight is not None:
            vectors.append(in_flight())
            in_flight = None
        if pending:
            in_flight = encode(np.concatenate(pending))
            times.append(np.concatenate(pending_times))
            pending.clear()
            pending_times.clear()

    for chunk in chunks:
        pending.append(chunk.pixels)
        pending_times.append(chunk.times)
        thumbs.extend(chunk.thumbnails)
        if sum(len(p) for p in pending) >= batch_size:
            submit()
    submit()
    submit()  # collect the last batch in flight
    if not times:
        raise VideoError(path, "decode", "no frames could be sampled")
    return EmbeddedVideo(info, np.concatenate(times), np.concatenate(vectors), thumbs)


@dataclass
class JobReport:
    """What a run did; the CLI prints it and derives the exit status from it."""

    total: int = 0
    skipped: int = 0
    indexed: int = 0
    frames: int = 0
    failures: list[Failure] = field(default_factory=list)
    seconds: float = 0.0
    ann_index: str | None = None
    startup_s: float | None = None  # until the first embedded frames came back: Ray, model loading
    frames_at_startup: int = 0
    runner: str | None = None  # which runner did the work: "local" (pipeline.local_run) or "ray"
    runner_reason: str | None = None  # why the command chose it
    started: float = field(default_factory=time.monotonic, repr=False)

    @property
    def needs_attention(self) -> bool:
        """Some inputs failed and were recorded (the CLI exits 3: ``app.exit_codes``)."""
        return bool(self.failures)

    def mark_startup(self, frames_so_far: int) -> None:
        """Called when the first embedded frames arrive (once; later calls are ignored)."""
        if self.startup_s is None:
            self.startup_s = time.monotonic() - self.started
            self.frames_at_startup = frames_so_far

    @property
    def steady_fps(self) -> float | None:
        """Frames per second after start-up: the rate a long job runs at, without its fixed cost
        (starting Ray, loading the model in each worker)."""
        if self.startup_s is None or self.seconds - self.startup_s <= 0:
            return None
        return (self.frames - self.frames_at_startup) / (self.seconds - self.startup_s)

    def to_dict(self) -> dict:
        return {
            "total": self.total, "skipped": self.skipped, "indexed": self.indexed,
            "failed": len(self.failures), "frames": self.frames, "seconds": round(self.seconds, 3),
            "startup_seconds": None if self.startup_s is None else round(self.startup_s, 3),
            "steady_fps": None if self.steady_fps is None else round(self.steady_fps, 2),
            "ann_index": self.ann_index, "runner": self.runner, "runner_reason": self.runner_reason,
            "failures": [{"path": f.path, "stage": f.stage, "reason": f.reason} for f in self.failures],
        }


@dataclass(frozen=True)
class WorkItem:
    """A listed file that needs work. ``stored_id``: the id stored for this path (the file's size
    or mtime changed): the worker hashes the bytes and stops if they are still the same video."""

    path: str
    size_bytes: int
    mtime_ns: int
    stored_id: str | None = None
    tags: tuple[str, ...] = ()  # stored on the video's rows


@dataclass(frozen=True)
class Probed:
    """A worker opened the video: its duration sets the time the rest of it may take."""

    duration: float


@dataclass(frozen=True)
class Unchanged:
    """The bytes hash to the video already stored for this path (only the mtime changed)."""

    path: str
    video_id: str
    mtime_ns: int


def plan_listing(listed: Iterable, known: dict[str, dict], report: JobReport,
                 tags: tuple[str, ...] = ()) -> list[WorkItem]:
    """The listed files (``pipeline.storage.ListedFile``) that need work, decided without reading
    any of them: a file whose path, size and mtime match a stored video is done. Identity (a hash
    of the bytes) is left to the worker that reads them anyway (``process_video``)."""
    todo: list[WorkItem] = []
    for listed_file in listed:
        report.total += 1
        row = known.get(listed_file.path)
        if row and row["size_bytes"] == listed_file.size_bytes and row["mtime_ns"] == listed_file.mtime_ns:
            report.skipped += 1
        else:
            todo.append(WorkItem(listed_file.path, listed_file.size_bytes, listed_file.mtime_ns,
                                 row["video_id"] if row else None, tuple(tags)))
    return todo


def process_video(item: WorkItem, encode: Callable[[np.ndarray], Callable[[], np.ndarray]], preprocess_cfg: dict,
                  config: IndexConfig, target: StagingTarget, batch_size: int = 64,
                  scratch_dir: str | None = None) -> Iterator[Probed | Unchanged | StagedVideo]:
    """One video on the worker that reads it: copy (object storage) and hash its bytes, decode,
    embed (``encode``), segment and place cuts beside the file, and write its rows as uncommitted
    fragments. Yields ``Probed`` once the video is open, then the ``StagedVideo`` (or
    ``Unchanged``). Failures raise ``VideoError`` naming ``item.path``, never a scratch copy."""
    with readable_copy(item.path, target.storage_options, scratch_dir) as (local, video_id):
        if video_id == item.stored_id:
            yield Unchanged(item.path, video_id, item.mtime_ns)
            return
        try:
            info, chunks = decode_video(local, FrameTransform.from_preprocess_cfg(preprocess_cfg), config)
            yield Probed(info.duration)
            embedded = embed_chunks(local, info, chunks, encode, batch_size)
            video = VideoFile(path=item.path, video_id=video_id, size_bytes=item.size_bytes, mtime_ns=item.mtime_ns)
            record = assemble_record(video, info, embedded.times, embedded.vectors, embedded.thumbnails, config,
                                     target.model_key, tags=item.tags, local_path=local)
        except VideoError as exc:
            raise VideoError(item.path, exc.stage, exc.reason) from None
        yield stage_record(record, target)


@dataclass(frozen=True)
class Failed:
    """The video cannot be indexed (bad input, not a crash): recorded, never retried."""

    stage: str
    reason: str


@dataclass(frozen=True)
class ArchiveFailed:
    """The archive cannot take this video's rows (disk full, read-only...): not the video's fault,
    and no other video's rows would fit either, so the job stops. ``reason``: the cause in words,
    without the database's name (the job adds it)."""

    reason: str


def run_video(item: WorkItem, encode: Callable[[np.ndarray], Callable[[], np.ndarray]], preprocess_cfg: dict,
              config: IndexConfig, target: StagingTarget, batch_size: int = 64,
              scratch_dir: str | None = None) -> Iterator[Probed | Unchanged | StagedVideo | Failed | ArchiveFailed]:
    """``process_video`` as a runner's worker calls it: the test faults first (``pipeline.faults``),
    and every way the video can end as a message (a crash of the process, which decord can cause
    in native code, is for the runner to see). Bad input is ``Failed``; a storage failure writing
    its fragments is ``ArchiveFailed``."""
    faults.inject(item.path)
    try:
        yield from process_video(item, encode, preprocess_cfg, config, target, batch_size, scratch_dir)
    except VideoError as exc:
        yield Failed(exc.stage, exc.reason)
    except Exception as exc:  # noqa: BLE001 - one file never stops the job
        archive = write_failure(target.segments_uri, exc)
        if archive is not None:  # writing its fragments failed for a reason of the storage's own
            yield ArchiveFailed(str(archive).removeprefix(f"{target.segments_uri}: "))
        else:
            first = (str(exc).strip().splitlines() or [""])[0]
            yield Failed("index", f"{type(exc).__name__}: {first}"[:300])


def index_sequential(store: VideoStore, encoder, paths: list[str], config: IndexConfig,
                     tags: tuple[str, ...] = (), on_progress: Callable[[int, int], None] | None = None
                     ) -> JobReport:
    """Index local ``paths`` with a loaded ``encoder`` through the local pipeline
    (``pipeline.local_run``): the same write path, skip rules, failure records and ANN upkeep as
    `vidsift index`, so an upload stores the rows the CLI would. ``on_progress(done, total)``
    after each finished video."""
    from .local_run import LocalOptions, index_paths  # local_run builds on this module

    return index_paths(store, encoder, paths, config, LocalOptions(progress=False), tags=tags,
                       on_progress=on_progress)


@dataclass
class ResegmentReport:
    videos: int = 0
    segments: int = 0
    without_frames: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"videos": self.videos, "segments": self.segments, "without_frames": self.without_frames}


def resegment_store(store: VideoStore, spec, segments_config, batch: int = 64) -> ResegmentReport:
    """Re-pool every video's stored frame vectors into new segments: no model, no full decoding
    (scene cuts are still placed on the frame by decoding a few small frames around each, when the
    file is there).

    Videos indexed with ``--no-frames`` have nothing to re-pool; they are listed, and keep their
    segments. It rewrites segments, so it holds the writer lock as an indexing job does.
    """
    with store.exclusive_writer():
        return _resegment(store, spec, segments_config, batch)


def _resegment(store: VideoStore, spec, segments_config, batch: int) -> ResegmentReport:
    tables = store.model(spec)
    report = ResegmentReport()
    videos = tables.video_rows(["video_id", "path", "duration", "settings", "tags", "n_frames"])
    for begin in range(0, len(videos), batch):
        group = videos[begin:begin + batch]
        frames = tables.frames_by_video([v["video_id"] for v in group], thumbnails=True)
        seg_rows, done = [], []
        for video in group:
            stored = frames.get(video["video_id"])
            if stored is None:
                report.without_frames.append(video["path"])
                continue
            times, vectors = stored.times, stored.vectors
            cuts = _exact_cuts(video["path"], times, vectors, video["duration"], segments_config) \
                if os.path.isfile(video["path"]) else None  # without the file, cuts stay midway
            for i, seg in enumerate(build_segments(times, vectors, video["duration"], segments_config, cuts=cuts)):
                seg_rows.append(segment_row(video["video_id"], video["path"], i, seg, spec.key, video["tags"],
                                            stored.thumbnails[seg.middle_frame]))
            done.append(video)
        if done:
            dim = len(seg_rows[0]["vector"])
            tables.replace_segments(dim, seg_rows, sql_in("video_id", [v["video_id"] for v in done]))
            for video in done:
                settings = json.loads(video["settings"] or "{}")
                settings["segments"] = {k: getattr(segments_config, k) for k in segments_config.__dataclass_fields__}
                n = sum(1 for r in seg_rows if r["video_id"] == video["video_id"])
                tables.update_video(video["video_id"], n_segments=n, settings=json.dumps(settings, sort_keys=True))
        report.videos += len(done)
        report.segments += len(seg_rows)
    return report
