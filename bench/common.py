"""What the benchmark scripts share: rendered archives (cached), the CLI as a subprocess, peak
memory of a process tree, and the table + JSON every script prints and writes.

Scripts, not tests: nothing here asserts a time. Linux only (memory is read from /proc).
"""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from vidsift.pipeline.decode import open_video, probe
from vidsift.pipeline.shapes.archive import synthesize_archive  # loads PyAV, before anything loads decord
from vidsift.pipeline.shapes.manifest import MANIFEST, read_manifest
from vidsift.pipeline.video_libs import pyav

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
VIDSIFT = [sys.executable, "-m", "vidsift.app.cli"]
MODELS = [("ViT-B-32", "none"), ("shapes-tiny", "")]  # random ViT-B-32 weights cost what LAION's do

# The archives the benchmarks render (shapes-world, H.264 MP4 at 30 fps, four 10-15 s scenes a
# video: ~50 s each, a cut every ~12 s, x264's default keyframe interval).
ARCHIVES = {
    "640x360": dict(videos=12, seed=8101, formats=("mp4",), sizes=[(640, 360)], fps_choices=[30], n_scenes=4,
                    scene_len=(10.0, 15.0)),
    "1280x720": dict(videos=2, seed=8102, formats=("mp4",), sizes=[(1280, 720)], fps_choices=[30], n_scenes=4,
                     scene_len=(10.0, 15.0)),
}


def machine() -> dict:
    """The machine a figure was measured on, for RESULTS.md."""
    gpu = None
    try:
        import torch  # lazy: scripts that only time `vidsift` subprocesses need not load torch (~2 s)

        if torch.cuda.is_available():
            gpu = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return {"cpus": os.cpu_count(), "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
            "gpu": gpu, "python": platform.python_version(), "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def rendered_archive(folder: str | Path, videos: int, seed: int, **synth_options) -> list[str]:
    """Render a shapes-world archive once; later runs with the same arguments reuse it."""
    folder = Path(folder)
    stamp = folder / "bench-params.json"
    params = json.dumps({"videos": videos, "seed": seed, **synth_options}, sort_keys=True, default=str)
    if not (stamp.is_file() and stamp.read_text() == params and (folder / MANIFEST).is_file()):
        manifest = synthesize_archive(folder, videos, seed, **synth_options)
        stamp.write_text(params)
    else:
        manifest = read_manifest(folder)[1]
    return [str(folder / v["path"]) for v in manifest["videos"]]


def remuxed_copies(paths: list[str], folder: str | Path, copies: int) -> list[str]:
    """``copies`` copies of each video, remuxed (no re-encoding) with a different container comment:
    the same frames and timestamps, so the same decoding and encoding work, but different bytes, so
    vidsift indexes each (it skips identical files). A long archive at no rendering cost."""
    av = pyav()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out_paths = []
    for k in range(copies):
        for path in paths:
            target = folder / f"{Path(path).stem}-copy{k:02d}{Path(path).suffix}"
            out_paths.append(str(target))
            if target.is_file() and target.stat().st_size > 0:
                continue
            with av.open(path) as source, av.open(str(target), "w") as sink:
                sink.metadata["comment"] = f"vidsift benchmark copy {k}"
                stream = source.streams.video[0]
                out_stream = sink.add_stream_from_template(stream)
                for packet in source.demux(stream):
                    if packet.dts is not None:
                        packet.stream = out_stream
                        sink.mux(packet)
    return sorted(out_paths)


def video_seconds(paths: list[str]) -> float:
    return sum(probe(open_video(p), p)[0].duration for p in paths)


MEMORY_FIELDS = ("VmRSS", "RssAnon", "RssFile", "RssShmem")


def _process_table() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, command line) of every process, from /proc."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                cmd = fh.read().replace(b"\0", b" ").decode(errors="replace").strip()[:80]
        except OSError:
            continue
        table[int(entry)] = (ppid, cmd)
    return table


def _memory_kib(pid: int) -> dict[str, int]:
    """Resident memory of one process and its anonymous / file / shared parts (KiB)."""
    fields = {}
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key in MEMORY_FIELDS:
                    fields[key] = int(value.split()[0])
    except OSError:
        pass
    return fields


def _process_name(cmd: str) -> str:
    """A readable process name: Ray's own title, or vidsift for the CLI process."""
    if cmd.startswith("ray::"):
        return cmd[5:].replace(".submit", "")[:45]
    return "vidsift (driver)" if "vidsift.app.cli" in cmd else Path(cmd.split(" ")[0]).name


@dataclass
class PeakRss:
    """Samples a process tree (the process and all its descendants, Ray workers included) in a
    thread: ``peak`` is the highest total RSS seen, ``processes`` each process's own peak with its
    parts, ``series`` the total over time."""

    pid: int
    interval: float = 0.1
    peak: int = 0
    processes: dict = field(default_factory=dict)
    series: list = field(default_factory=list)

    def __enter__(self):
        self._stop = threading.Event()
        self._started = time.perf_counter()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval)

    def _sample(self):
        table = _process_table()
        children: dict[int, list[int]] = {}
        for pid, (ppid, _) in table.items():
            children.setdefault(ppid, []).append(pid)
        total, stack = 0, [self.pid]
        while stack:
            pid = stack.pop()
            stack.extend(children.get(pid, []))
            memory = _memory_kib(pid)
            total += memory.get("VmRSS", 0) * 1024
            if memory.get("VmRSS", 0) > self.processes.get(pid, {}).get("VmRSS", -1):
                self.processes[pid] = {**memory, "cmd": table.get(pid, (0, ""))[1]}
        self.peak = max(self.peak, total)
        self.series.append((round(time.perf_counter() - self._started, 1), round(total / 2**20, 1)))

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def top(self, n: int = 6) -> list[dict]:
        """The ``n`` largest processes at their own peaks, in MiB."""
        rows = sorted(self.processes.items(), key=lambda kv: -kv[1]["VmRSS"])[:n]
        # Command lines relative to the repository: results are committed, and a clone lives elsewhere.
        return [{"pid": pid, "process": _process_name(p["cmd"]), "cmd": p["cmd"].replace(f"{ROOT}/", ""),
                 **{k: round(p.get(k, 0) / 1024, 1) for k in MEMORY_FIELDS}} for pid, p in rows]

    def thinned(self, points: int = 40) -> list[tuple[float, float]]:
        step = max(1, len(self.series) // points)
        return self.series[::step] + self.series[-1:]


def run_vidsift(args: list[str], *, measure_rss: bool = False, env: dict | None = None) -> dict:
    """Run ``vidsift ARGS`` as a user would; wall time, exit status, JSON output and, with
    ``measure_rss``, the tree's peak RSS, its largest processes and the total over time."""
    started = time.perf_counter()
    proc = subprocess.Popen(VIDSIFT + args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})})
    sampler = PeakRss(proc.pid) if measure_rss else None
    if sampler:
        with sampler:
            out, err = proc.communicate()
    else:
        out, err = proc.communicate()
    seconds = time.perf_counter() - started
    if proc.returncode not in (0, 3):
        raise RuntimeError(f"vidsift {' '.join(args)} exited {proc.returncode}:\n{err[-3000:]}")
    try:
        report = json.loads(out)
    except json.JSONDecodeError:
        report = {"stdout": out[-2000:]}
    memory = {"peak_rss_mib": round(sampler.peak / 2**20, 1), "processes": sampler.top(),
              "rss_over_time": sampler.thinned()} if sampler else {"peak_rss_mib": None}
    return {"seconds": seconds, "exit_status": proc.returncode, "report": report, **memory}


def print_table(rows: list[dict], columns: list[str]) -> None:
    widths = [max(len(c), *(len(_fmt(r.get(c))) for r in rows)) for c in columns]
    print("  ".join(c.rjust(w) for c, w in zip(columns, widths)))
    for r in rows:
        print("  ".join(_fmt(r.get(c)).rjust(w) for c, w in zip(columns, widths)))


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
    return "-" if value is None else str(value)


def write_json(path: str | None, payload: dict) -> None:
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps({"machine": machine(), **payload}, indent=2) + "\n")
        print(f"\nwrote {path}")
