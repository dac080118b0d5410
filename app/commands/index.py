"""`vidsift index`: decode, sample, embed, pool and store videos: on this machine without Ray (the
default), or on Ray with --address (a cluster, or `local` for a Ray started here)."""
from __future__ import annotations

import dataclasses
import os
import sys

from vidsift.pipeline import interrupts
from vidsift.pipeline.errors import InputError, Interrupted
from vidsift.pipeline.lock import writer_lock

from . import follow
from .common import Command, add_common, add_sampling, index_config, spec_of, stdout_for_json_only, storage_options


def add_arguments(p) -> None:
    p.add_argument("inputs", nargs="+", help="folders, video files, or .txt lists of paths")
    add_common(p)
    add_sampling(p)
    p.add_argument("--address", default=None,
                   help="run on Ray: auto or HOST:6379 for a cluster, local for a Ray started on this machine "
                        "(default: no Ray, decoding processes on this machine; inside a Ray Job or with "
                        "RAY_ADDRESS set, that cluster)")
    p.add_argument("--num-cpus", type=int, default=None,
                   help="CPUs to use: decoding processes without Ray, Ray's CPUs with --address local (default: all)")
    p.add_argument("--embed-workers", type=int, default=None,
                   help="Ray only: embedding actors (default: one per GPU, else one per node)")
    p.add_argument("--embed-threads", type=int, default=None,
                   help="torch threads of the encoder (default: torch's own choice without Ray, the node's CPUs "
                        "on Ray)")
    p.add_argument("--batch-size", type=int, default=64, help="frames per encoder batch (default 64)")
    p.add_argument("--attempts", type=int, default=3,
                   help="tries per video when its decoding process dies or times out (default 3)")
    p.add_argument("--video-timeout", type=float, default=300.0, metavar="SECONDS",
                   help="time a video may take, plus 1 s per sampled frame once its length is known (default 300)")
    p.add_argument("--build-index", action="store_true", help="build the ANN index after indexing")
    p.add_argument("--no-ray", action="store_true",
                   help="never use Ray, even inside a Ray Job or with RAY_ADDRESS set (the default on one machine)")
    p.add_argument("--no-frames", action="store_true",
                   help="do not keep frame vectors (saves space; `resegment` then needs a re-index)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--decoder", default="auto", choices=["auto", "decord", "cpu", "gpu"],
                   help="auto (default): NVDEC through torchcodec when there is a CUDA GPU and `vidsift[gpu]`, else "
                        "decord; decord; cpu: PyAV, decoding only the frames the samples need; gpu: as auto, "
                        "warning when it falls back")
    p.add_argument("--decode-threads", type=int, default=1,
                   help="threads per decoder (default 1: one decoding process per core already)")
    p.add_argument("--no-decoder-resize", action="store_true",
                   help="decode full-size frames, then resize (default: the decoder resizes to what the model needs)")
    p.add_argument("--sample", default="exact", choices=["exact", "keyframes"],
                   help="exact (default): the frame on screen at each sampling time; keyframes: the keyframe at or "
                        "before it (decodes keyframes only: much faster, far fewer distinct frames)")
    follow.add_arguments(p)  # --prune, --watch, --settle, --poll, --allow-empty


NUMBERS = {
    "num_cpus": ("--num-cpus", 1, 100_000, False),
    "embed_workers": ("--embed-workers", 1, 10_000, False),
    "embed_threads": ("--embed-threads", 1, 1024, False),
    "batch_size": ("--batch-size", 1, 4096, False),
    "attempts": ("--attempts", 1, 100, False),
    "video_timeout": ("--video-timeout", 1, 7 * 86_400, False),
    "decode_threads": ("--decode-threads", 1, 256, False),
    **follow.NUMBERS,
}


def run(args) -> int:
    config = _decoding(args, index_config(args))
    # The database is held first, before anything slow (imports, Ray, the model, listing): a
    # second job on it is refused in a fraction of a second, however loaded the machine is.
    with writer_lock(args.db):
        spec = spec_of(args)
        # follow.run indexes through _index_report (once, or per batch with --watch), prunes first
        # with --prune/--watch, records each folder's scan for the Library, and prints _render's lines.
        return follow.run(args, lambda inputs: _index_report(args, config, spec, inputs),
                          render=lambda report: _render(args, spec, report), spec=spec)


def _decoding(args, config):
    """The decoding flags into the job's ``IndexConfig``."""
    if args.sample == "keyframes" and args.frames is not None:
        raise InputError("--sample keyframes takes the keyframe at each --fps sampling time: it cannot be "
                         "used with --frames")
    sampling = dataclasses.replace(config.sampling, keyframes=args.sample == "keyframes")
    return dataclasses.replace(config, sampling=sampling, decoder=args.decoder, decode_threads=args.decode_threads,
                               decoder_resize=not args.no_decoder_resize)


def choose_runner(args, environ=os.environ) -> tuple[str, str]:
    """Which runner indexes, and why. Measured (bench/small_jobs.py, issue 20): on one machine the
    local pipeline gets to its first frame ~20 s sooner than a fresh local Ray (Ray's start-up,
    the model loaded in the driver and again in an actor) and runs as fast after that, so Ray is
    used only where it is needed: a cluster to join (--address, RAY_ADDRESS, or the Ray Job this
    command runs in), or asked for by name (--address local)."""
    if args.no_ray:
        if args.address:
            raise InputError(f"--no-ray and --address {args.address} contradict each other: drop one")
        return "local", "--no-ray"
    if args.address:
        return "ray", f"--address {args.address}"
    if environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR"):
        return "ray", "inside a Ray Job"
    if environ.get("RAY_ADDRESS"):
        return "ray", f"RAY_ADDRESS={environ['RAY_ADDRESS']}"
    return "local", "one machine (no --address): no Ray start-up, the model loaded once"


def _index_report(args, config, spec, inputs: list[str]):
    """Index ``inputs`` (the command's, or the files a --watch found settled): the JobReport."""
    # lazy (here and below): every command module is imported for `vidsift --help`; pyarrow and
    # LanceDB (~0.5 s), the local runner (~1.5 s) and Ray's (~1.7 s) load only when a job runs
    from vidsift.pipeline.storage import list_inputs
    from vidsift.pipeline.store import VideoStore

    options = storage_options(args)
    runner, why = choose_runner(args)
    listed = list_inputs(inputs, options)
    store = VideoStore(args.db, storage_options=options)
    store.remember_spec(spec)  # a checkpoint's path beside its hash: later commands need no --pretrained
    progress = not (args.quiet or args.json)
    if runner == "local":
        from vidsift.pipeline.jobs import JobLimits  # lazy: see above
        from vidsift.pipeline.local_run import LocalOptions, run_local_job

        local = LocalOptions(limits=JobLimits(attempts=args.attempts, video_timeout_s=args.video_timeout,
                                              batch_size=args.batch_size),
                             workers=args.num_cpus, embed_threads=args.embed_threads, build_index=args.build_index,
                             progress=progress, storage_options=options)
        with stdout_for_json_only(args):
            report = run_local_job(store, spec, listed, config, local)
    else:
        from vidsift.workers.job import ClusterConfig, run_index_job  # lazy: see above

        cluster = ClusterConfig(address=args.address, num_cpus=args.num_cpus, embed_actors=args.embed_workers,
                                embed_threads=args.embed_threads, batch_size=args.batch_size,
                                attempts=args.attempts, video_timeout_s=args.video_timeout)
        with stdout_for_json_only(args):
            try:
                report = run_index_job(store, spec, listed, config, cluster, build_index=args.build_index,
                                       progress=progress, storage_options=options)
            finally:
                shutdown_ray()  # now, while stdout still goes to stderr: Ray says goodbye on stdout
    report.runner_reason = why
    try:
        interrupts.safe_point()  # a signal during the last writes: everything is written, say so
    except Interrupted as exc:
        exc.report = report
        raise
    return report


def _render(args, spec, report) -> tuple[dict, list[str]]:
    """The report as --json prints it, and as lines for people (``follow.describe``, plus the runner
    with --verbose)."""
    payload, lines = follow.describe(report, args.db, spec.key)
    if args.verbose:
        lines.append(f"  runner: {report.runner} ({report.runner_reason})")
    return payload, lines


def shutdown_ray() -> None:
    if "ray" in sys.modules:
        import ray  # lazy: only when a job has imported it already

        if ray.is_initialized():
            ray.shutdown()


COMMANDS = [Command("index", "decode, sample, embed, pool and store videos", add_arguments, run, NUMBERS,
                    writes=True)]
