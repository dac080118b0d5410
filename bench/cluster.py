"""The indexing job's driver and its nodes: (1) the driver process's own CPU per 10,000 sampled
frames, the Ray Data job of commit c54d65b (the driver hashes, receives every vector and
thumbnail, pools, refines cuts and writes) against the working tree's job (one Ray task per video
does all that and writes Lance fragments; the driver lists and commits), side by side in one run;
(2) the working tree's steady frames/s on a one-node and a two-node Ray cluster on loopback.

    .venv/bin/python bench/cluster.py --videos 60 --out bench/results/cluster.json

Driver CPU: each job runs in its own subprocess whose cwd, ``sys.path[0]`` and ``PYTHONPATH``
(so Ray's workers import the same code) are the tree under test; the subprocess takes
``resource.getrusage(RUSAGE_SELF)`` right before and right after ``run_index_job`` (imports
excluded; Ray's start-up and the model check inside the job included). RUSAGE_SELF is the driver
process alone: Ray's GCS, raylet and workers are other processes. Both trees run on the same
archive twice, ``--videos`` N and 3N (the N are the first N of the 3N), interleaved old-small,
new-small, old-large, new-large; per-frame cost is given two ways: total / frames, and the slope
between the two sizes (fixed costs cancel). Each job gets a fresh database and its own Ray temp
dir (so it starts its own local Ray and never joins another one on this machine).

Nodes: ``tests.ray_cluster.LoopbackCluster`` (every node a real ``ray start`` on 127.0.0.1): a
head with 1 CPU alone, then a fresh head with 1 CPU plus one 1-CPU worker node; ``vidsift index
--address`` as a user runs it, steady frames/s from its JSON. "1 CPU" is Ray's logical CPU (what
it schedules by), not a CPU set: processes of a one-node cluster still run on both cores.

Model: shapes-tiny (bundled, 64 px), the cheapest encoder there is offline, so the driver's and
the decoders' share of the work is as large as it gets. Default index settings (``IndexConfig()``:
scene segments, cut refinement on, 1 frame/s).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, VIDSIFT, print_table, rendered_archive, write_json  # noqa: E402

BASELINE = "c54d65b"
MODEL = "shapes-tiny"
SEED = 9301

# Run in a subprocess: argv = tree, db, paths.json. Prints one JSON line (prefixed, so stray output
# from Ray or the job cannot be mistaken for it).
DRIVER_SCRIPT = r'''
import json, os, resource, sys, time
tree, db, paths_file = sys.argv[1:4]
sys.path[0] = tree
from vidsift.workers.job import run_index_job
from vidsift.pipeline.store import VideoStore
from vidsift.models.spec import resolve_spec
from vidsift.pipeline.config import IndexConfig
import vidsift.workers.job
paths = json.load(open(paths_file))
spec = resolve_spec(sys.argv[4])
store = VideoStore(db)
config = IndexConfig()
inside = {}
# The working tree's job keeps a model's tables behind ``store.model(spec)`` (made once, kept by the
# store, so the job gets this same handle); the baseline's store took the table suffix instead.
tables = store.model(spec) if hasattr(store, "model") else None
def _timed(owner, name):  # CPU spent inside a store method the job calls at its end (instance attribute only)
    method = getattr(owner, name)
    def wrapper(*args, **kwargs):
        r0 = resource.getrusage(resource.RUSAGE_SELF)
        try:
            return method(*args, **kwargs)
        finally:
            r1 = resource.getrusage(resource.RUSAGE_SELF)
            inside[name] = inside.get(name, 0.0) + (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    setattr(owner, name, wrapper)
for name in ("optimize", "build_vector_index"):
    _timed(tables if tables is not None else store, name)
before, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
report = run_index_job(store, spec, paths, config, progress=False)
wall, after = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF)
segments = tables.segments() if tables is not None else store.segments_table(spec.table_suffix)
videos = tables.videos() if tables is not None else store.videos_table(spec.table_suffix)
print("DRIVER-JSON " + json.dumps({
    "job_module": vidsift.workers.job.__file__,
    "cpu_s": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
    "user_s": after.ru_utime - before.ru_utime, "sys_s": after.ru_stime - before.ru_stime,
    "wall_s": wall, "frames": report.frames, "indexed": report.indexed, "failed": len(report.failures),
    "failures": [f"{f.path}: {f.stage}: {f.reason}" for f in report.failures][:5],
    "startup_s": report.startup_s, "steady_fps": report.steady_fps,
    "segments": segments.count_rows() if segments is not None else 0,
    "video_rows": videos.count_rows() if videos is not None else 0,
    "driver_peak_rss_mib": after.ru_maxrss / 1024,
    "cpu_in_store_s": inside,
}), flush=True)
'''


def extract_baseline(folder: Path) -> Path:
    """The baseline tree: ``git archive`` of the commit, unpacked."""
    folder.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", BASELINE], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    return folder


def driver_run(tree: Path, paths: list[str], workdir: Path, label: str) -> dict:
    """One job in a fresh subprocess, database and Ray temp dir; the driver's CPU around it."""
    db = Path(tempfile.mkdtemp(prefix=f"db-{label}-", dir=workdir))
    ray_tmp = Path(tempfile.mkdtemp(prefix="cbr-", dir="/tmp"))  # short: Ray's socket paths must fit 107 bytes
    paths_file = db.with_suffix(".paths.json")
    paths_file.write_text(json.dumps(paths))
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS")}
    env.update(PYTHONPATH=str(tree), RAY_TMPDIR=str(ray_tmp), RAY_USAGE_STATS_ENABLED="0")
    started = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, "-c", DRIVER_SCRIPT, str(tree), str(db / "archive.lance"),
                               str(paths_file), MODEL], cwd=tree, env=env, capture_output=True, text=True)
    finally:
        shutil.rmtree(db, ignore_errors=True)
        shutil.rmtree(ray_tmp, ignore_errors=True)
        paths_file.unlink(missing_ok=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("DRIVER-JSON ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{label}: driver exited {proc.returncode}:\n{proc.stderr[-4000:]}\n{proc.stdout[-1000:]}")
    result = json.loads(lines[-1][len("DRIVER-JSON "):])
    if not result["job_module"].startswith(str(tree)):
        raise RuntimeError(f"{label}: imported {result['job_module']}, not the tree under test {tree}")
    result["process_s"] = time.perf_counter() - started
    return result


def driver_part(videos: int, workdir: Path) -> dict:
    large = rendered_archive(workdir / f"archive-{3 * videos}", 3 * videos, SEED, formats=("mp4",), n_scenes=3,
                             max_size=640)
    sizes = {"small": large[:videos], "large": large}
    baseline = extract_baseline(Path(tempfile.mkdtemp(prefix="baseline-", dir=workdir)))
    trees = {"old": baseline, "new": ROOT}
    runs = {}
    try:
        for size in ("small", "large"):
            for version in ("old", "new"):
                label = f"{version}-{size}"
                print(f"[driver] {label}: {len(sizes[size])} videos ...", flush=True)
                load = os.getloadavg()[0]
                runs[label] = r = driver_run(trees[version], sizes[size], workdir, label)
                r["load_before"] = load
                print(f"[driver] {label}: {r['frames']} frames, driver CPU {r['cpu_s']:.2f} s, "
                      f"wall {r['wall_s']:.1f} s", flush=True)
    finally:
        shutil.rmtree(baseline, ignore_errors=True)

    sanity = []
    for size in ("small", "large"):
        old, new = runs[f"old-{size}"], runs[f"new-{size}"]
        for key in ("indexed", "video_rows", "segments", "frames", "failed"):
            if old[key] != new[key]:
                sanity.append(f"{size}: {key} differs: old {old[key]}, new {new[key]}")
        if old["indexed"] != len(sizes[size]) or new["indexed"] != len(sizes[size]):
            sanity.append(f"{size}: {len(sizes[size])} videos, indexed old {old['indexed']} new {new['indexed']}")

    per = {}
    for version in ("old", "new"):
        small, large_run = runs[f"{version}-small"], runs[f"{version}-large"]
        extra_frames = large_run["frames"] - small["frames"]
        per[version] = {
            "small_per_10k": 1e4 * small["cpu_s"] / small["frames"],
            "large_per_10k": 1e4 * large_run["cpu_s"] / large_run["frames"],
            "slope_per_10k": 1e4 * (large_run["cpu_s"] - small["cpu_s"]) / extra_frames if extra_frames else None,
            "fixed_s": (small["cpu_s"] - small["frames"] * (large_run["cpu_s"] - small["cpu_s"]) / extra_frames
                        if extra_frames else None),
        }
    ratios = {k: (per["new"][k] / per["old"][k] if per["old"][k] and per["new"][k] is not None else None)
              for k in ("small_per_10k", "large_per_10k", "slope_per_10k")}

    print("\nDriver process CPU (user+sys, RUSAGE_SELF around run_index_job), shapes-tiny, IndexConfig():")
    print_table([{"run": label, "videos": r["indexed"], "frames": r["frames"], "segments": r["segments"],
                  "driver cpu s": r["cpu_s"], "user s": r["user_s"], "sys s": r["sys_s"], "wall s": r["wall_s"],
                  "cpu/10k frames": 1e4 * r["cpu_s"] / r["frames"], "driver RSS MiB": r["driver_peak_rss_mib"],
                  "of which optimize s": r["cpu_in_store_s"].get("optimize"), "load before": r["load_before"],
                  "steady fps": r["steady_fps"]} for label, r in runs.items()],
                ["run", "videos", "frames", "segments", "driver cpu s", "user s", "sys s", "wall s",
                 "cpu/10k frames", "of which optimize s", "driver RSS MiB", "steady fps", "load before"])
    print("\nDriver CPU seconds per 10,000 sampled frames:")
    print_table([{"way of counting": name, "old (c54d65b)": per["old"][key], "new (tree)": per["new"][key],
                  "new/old": ratios[key]}
                 for name, key in (("total/frames, small", "small_per_10k"), ("total/frames, large", "large_per_10k"),
                                   ("slope small->large", "slope_per_10k"))],
                ["way of counting", "old (c54d65b)", "new (tree)", "new/old"])
    if per["old"]["fixed_s"] is not None and per["new"]["fixed_s"] is not None:
        print(f"fixed driver CPU (intercept of the slope): old {per['old']['fixed_s']:.2f} s, "
              f"new {per['new']['fixed_s']:.2f} s")
    print("sanity: " + ("old and new indexed the same videos, segments and frames" if not sanity
                        else "; ".join(sanity)))
    return {"baseline": BASELINE, "videos": {"small": len(sizes["small"]), "large": len(sizes["large"])},
            "runs": runs, "per_10k_frames": per, "new_over_old": ratios, "sanity_problems": sanity,
            "archive": str(workdir / f"archive-{3 * videos}")}


class NodeCpu:
    """Samples, every second, the CPU time (utime+stime from /proc) of every process of each node
    of a ``LoopbackCluster``, by process title: where the work ran. A process's last sample counts
    (Ray keeps its workers alive through the job; a process that exits between samples loses at
    most its last second)."""

    def __init__(self, cluster, interval: float = 1.0):
        self.cluster, self.interval = cluster, interval
        self.seen: dict[tuple[str, int], tuple[str, float]] = {}  # (node, pid) -> (title, cpu s)

    def __enter__(self):
        import threading

        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self):
        tick = os.sysconf("SC_CLK_TCK")
        while not self._stop.is_set():
            for node in [self.cluster.head, *self.cluster.workers]:
                for pid in self.cluster.node_pids(node):
                    try:
                        stat = Path(f"/proc/{pid}/stat").read_text()
                        argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
                    except OSError:
                        continue
                    fields = stat[stat.rindex(")") + 2:].split()
                    cpu = (int(fields[11]) + int(fields[12])) / tick
                    if argv[0].startswith("ray::"):  # a Ray worker: what it runs (IDLE between tasks)
                        title = argv[0][5:].split(" ")[0]
                    else:  # a binary (raylet, gcs_server) or a Python script (agents, ray start)
                        title = Path(argv[0]).name
                        if title.startswith("python"):
                            args = [a for a in argv[1:] if a and a != "-u"]
                            if args:
                                title = args[1] if args[0] == "-m" and len(args) > 1 else Path(args[0]).name
                    before = self.seen.get((node.name, pid), (None, 0.0))[0]
                    if before and before != "IDLE" and title in ("IDLE", "default_worker.py"):
                        title = before  # keep the name of the work it did
                    self.seen[(node.name, pid)] = (title[:40], cpu)
            self._stop.wait(self.interval)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def summary(self) -> dict:
        """Per node: total CPU seconds and the CPU seconds by process title."""
        out: dict[str, dict] = {}
        for (node, _), (title, cpu) in self.seen.items():
            entry = out.setdefault(node, {"cpu_s": 0.0, "embed_actors": 0, "by_process": {}})
            entry["cpu_s"] += cpu
            entry["embed_actors"] += title.startswith("EmbedActor")
            entry["by_process"][title] = entry["by_process"].get(title, 0.0) + cpu
        for entry in out.values():
            entry["cpu_s"] = round(entry["cpu_s"], 1)
            entry["by_process"] = {k: round(v, 1) for k, v in sorted(entry["by_process"].items(), key=lambda kv: -kv[1])
                                   if v >= 0.5}
        return out


def node_run(paths: list[str], workdir: Path, workers: int) -> dict:
    from tests.ray_cluster import LoopbackCluster

    db = Path(tempfile.mkdtemp(prefix=f"db-nodes{1 + workers}-", dir=workdir))
    cluster_started = time.perf_counter()
    try:
        with LoopbackCluster(workdir, head_cpus=1, worker_cpus=1, workers=workers, memory_gb=4,
                             object_store_gb=1, dashboard=False) as cluster:
            start_s = time.perf_counter() - cluster_started
            t0 = time.perf_counter()
            with NodeCpu(cluster) as node_cpu:
                proc = subprocess.run(VIDSIFT + ["index", *paths, "--db", str(db / "archive.lance"), "--model",
                                                 MODEL, "--address", cluster.address, "--json"],
                                      cwd=ROOT, env=cluster.env, capture_output=True, text=True)
            seconds = time.perf_counter() - t0
            nodes = len(cluster.nodes())
    finally:
        shutil.rmtree(db, ignore_errors=True)
    if proc.returncode not in (0, 3):
        raise RuntimeError(f"vidsift index on {1 + workers} node(s) exited {proc.returncode}:\n{proc.stderr[-4000:]}")
    report = json.loads(proc.stdout)
    per_node = node_cpu.summary()
    return {"nodes": nodes, "cluster_start_s": start_s, "process_s": seconds, **{
        k: report.get(k) for k in ("indexed", "failed", "frames", "seconds", "startup_seconds", "steady_fps")},
        "head_cpu_s": per_node.get("head", {}).get("cpu_s"), "worker_cpu_s": per_node.get("w1", {}).get("cpu_s"),
        "actors_head/worker": f"{per_node.get('head', {}).get('embed_actors', 0)}/{per_node.get('w1', {}).get('embed_actors', 0)}",
        "cpu_by_node": per_node}


def nodes_part(videos: int, workdir: Path, rounds: int) -> dict:
    paths = rendered_archive(workdir / f"archive-{3 * videos}", 3 * videos, SEED, formats=("mp4",), n_scenes=3,
                             max_size=640)[:videos]
    runs = []
    for round_ in range(rounds):  # alternating, so a disturbance hits both sides alike
        for workers in (0, 1):
            label = f"{1 + workers} node{'s' if workers else ''}"
            print(f"[nodes] round {round_ + 1}, {label}: {len(paths)} videos ...", flush=True)
            r = {"cluster": label, "round": round_ + 1, "load_before": os.getloadavg()[0],
                 **node_run(paths, workdir, workers)}
            runs.append(r)
            print(f"[nodes] round {round_ + 1}, {label}: {r['frames']} frames, steady {r['steady_fps']} frames/s",
                  flush=True)

    def mean(label, key):
        values = [r[key] for r in runs if r["cluster"] == label and r[key]]
        return sum(values) / len(values) if values else None

    one_fps, two_fps = mean("1 node", "steady_fps"), mean("2 nodes", "steady_fps")
    one_s, two_s = mean("1 node", "seconds"), mean("2 nodes", "seconds")
    ratio = two_fps / one_fps if one_fps and two_fps else None
    wall_ratio = one_s / two_s if one_s and two_s else None
    print("\nvidsift index --address (LoopbackCluster, 1-CPU nodes, shapes-tiny), working tree:")
    print_table(runs, ["cluster", "round", "nodes", "indexed", "failed", "frames", "seconds", "startup_seconds",
                       "steady_fps", "head_cpu_s", "worker_cpu_s", "actors_head/worker", "cluster_start_s", "load_before"])
    print("(head_cpu_s / worker_cpu_s: CPU seconds of each node's processes during the job, the driver in neither;\n"
          " actors_head/worker: embedding-actor processes found on each node - the job asks for one per node)")
    print(f"mean steady fps: 1 node {one_fps:.1f}, 2 nodes {two_fps:.1f}" if ratio else "")
    print(f"two nodes / one node: steady fps x{ratio:.2f}" if ratio else "two nodes / one node: n/a",
          f"(job wall time: x{wall_ratio:.2f} faster)" if wall_ratio else "")
    return {"videos": len(paths), "runs": runs, "mean_steady_fps": {"1 node": one_fps, "2 nodes": two_fps},
            "mean_seconds": {"1 node": one_s, "2 nodes": two_s},
            "two_over_one_steady_fps": ratio, "two_over_one_job_speed": wall_ratio}


def tree_fingerprint() -> dict:
    """The working tree measured as "new": HEAD plus a hash of each file the job runs (it may be
    uncommitted)."""
    import hashlib

    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    files = ("workers/job.py", "workers/tasks.py", "pipeline/staging.py", "pipeline/storage.py",
             "pipeline/indexing.py", "pipeline/store.py", "models/loading.py")
    return {"head": head.stdout.strip(), "sha256": {
        f: hashlib.sha256((ROOT / f).read_bytes()).hexdigest()[:12] for f in files if (ROOT / f).is_file()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--videos", type=int, default=60,
                        help="N: the small archive (3N the large one; the node runs use the N)")
    parser.add_argument("--workdir", default="/tmp/vidsift-bench/cluster")
    parser.add_argument("--out", default=f"bench/results/cluster-{time.strftime('%Y-%m-%d')}.json")
    parser.add_argument("--skip-nodes", action="store_true", help="only the driver CPU part")
    parser.add_argument("--skip-driver", action="store_true", help="only the one- vs two-node part")
    parser.add_argument("--node-rounds", type=int, default=2, help="one-node/two-node pairs, alternating")
    args = parser.parse_args()
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    payload = {"model": MODEL, "config": "IndexConfig() (scene segments, cut refinement, 1 frame/s)",
               "command": " ".join([Path(sys.executable).name, *sys.argv]), "new_tree": tree_fingerprint()}
    started = time.perf_counter()
    print(f"rendering / reusing {3 * args.videos} videos in {workdir} ...", flush=True)
    rendered_archive(workdir / f"archive-{3 * args.videos}", 3 * args.videos, SEED, formats=("mp4",), n_scenes=3,
                     max_size=640)
    if not args.skip_driver:
        payload["driver"] = driver_part(args.videos, workdir)
    if not args.skip_nodes:
        print()
        payload["nodes"] = nodes_part(args.videos, workdir, args.node_rounds)
    payload["bench_seconds"] = time.perf_counter() - started
    write_json(args.out, payload)


if __name__ == "__main__":
    main()
