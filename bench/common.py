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
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
VIDSIFT = [sys.executable, "-m", "app.cli"]
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
        import torch

        if torch.cuda.is_available():
            gpu = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return {"cpus": os.cpu_count(), "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
            "gpu": gpu, "python": platform.python_version(), "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def rendered_archive(folder: str | Path, videos: int, seed: int, **synth_options) -> list[str]:
    """Render a shapes-world archive once; later runs with the same arguments reuse it."""
    from pipeline.synth import synthesize_archive

    folder = Path(folder)
    stamp = folder / "bench-params.json"
    params = json.dumps({"videos": videos, "seed": seed, **synth_options}, sort_keys=True, default=str)
    if not (stamp.is_file() and stamp.read_text() == params and (folder / "manifest.json").is_file()):
        manifest = synthesize_archive(folder, videos, seed, **synth_options)
        stamp.write_text(params)
    else:
        manifest = json.loads((folder / "manifest.json").read_text())
    return [str(folder / v["path"]) for v in manifest["videos"]]


def video_seconds(paths: list[str]) -> float:
    from pipeline.decode import open_video, probe

    return sum(probe(open_video(p), p)[0].duration for p in paths)


def _tree_rss_bytes(root_pid: int) -> int:
    """Resident memory of a process and all its descendants (Ray workers included), from /proc."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid, ppid = int(entry), int(fields[1])
        children.setdefault(ppid, []).append(pid)
        rss[pid] = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
    total, stack = 0, [root_pid]
    while stack:
        pid = stack.pop()
        total += rss.get(pid, 0)
        stack.extend(children.get(pid, []))
    return total


@dataclass
class PeakRss:
    """Samples a process tree's total RSS in a thread; ``peak`` is the highest sum seen."""

    pid: int
    interval: float = 0.1
    peak: int = 0

    def __enter__(self):
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, _tree_rss_bytes(self.pid))
            self._stop.wait(self.interval)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def run_vidsift(args: list[str], *, measure_rss: bool = False, env: dict | None = None) -> dict:
    """Run ``vidsift ARGS`` as a user would; wall time, exit status, JSON output, peak tree RSS."""
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
    return {"seconds": seconds, "exit_status": proc.returncode, "report": report,
            "peak_rss_mib": round(sampler.peak / 2**20, 1) if sampler else None}


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
