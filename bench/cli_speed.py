"""How fast `vidsift` answers from the shell: `vidsift --help` and a one-shot `vidsift search` on
the demo archive, side by side with a bare `python -c "import torch"` in the same run.

Every case is a fresh subprocess, run in interleaved rounds (so a change in the machine's load hits
every case alike), and reported as medians of wall time, CPU time (user + system, from wait4)
and peak RSS, with the ratio of each to `import torch`'s median. The machine's load average is
printed with the figures: on a shared 2-core machine the wall times stretch with the load, the
CPU times much less, and the ratios to `import torch` least.

Also measured:
- ``--app``: the other way to answer: a running `vidsift app` serving the same database, announced
  as `vidsift app` announces itself (``app.announce``, in a private runtime folder), and
  `vidsift search` answering through it (``app.app_client``: Gradio's HTTP API with ``urllib``, no
  torch, no LanceDB), next to a bare standard-library client of the same API. The app is started
  once, warmed with one search, and stopped by its PID. Before timing, one routed search is checked
  to be answered by the app, with the same JSON as the in-process one.
- ``--phases``: where one in-process search spends its time (imports, opening the archive,
  loading the model, the confidence calibration, encoding, searching), in one child process.
- ``--imports``: `import open_clip`, `import lancedb` and `import lance` alone, to show what each
  library costs.
- ``--importtime``: ``python -X importtime`` of what a search imports, the biggest subtrees as a
  share of the whole (one run; with ``--reps 0`` only this).

Usage (the demo archive is rendered and indexed once into --workdir unless --db is given):

    .venv/bin/python bench/cli_speed.py --reps 5 --app --phases --imports --out bench/results/cli_speed.txt

The in-process search cases pass ``--no-app``; the routed one differs from them only by that flag
and by the runtime folder where the app is announced (``VIDSIFT_RUNTIME_DIR``).
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]  # the children run here (app.cli, pipeline)
PY = sys.executable
VIDSIFT = [PY, "-m", "vidsift.app.cli"]
QUERY = "a red star"

# A client of a running app: only the standard library (what `vidsift search` would need on that path).
HTTP_CLIENT = r"""
import json, sys, urllib.request
url, query = sys.argv[1], sys.argv[2]
body = json.dumps({"data": [query, None, None, [], "", 0, 0, False, 10]}).encode()
request = urllib.request.Request(url + "/gradio_api/call/search", data=body,
                                 headers={"Content-Type": "application/json"})
event_id = json.load(urllib.request.urlopen(request, timeout=120))["event_id"]
with urllib.request.urlopen(f"{url}/gradio_api/call/search/{event_id}", timeout=120) as response:
    lines = response.read().decode().splitlines()
done = [json.loads(line[5:]) for prev, line in zip(lines, lines[1:])
        if prev.strip() == "event: complete" and line.startswith("data:")]
result = done[0][1]
print(len(result["results"]), result["results"][0]["video_path"])
"""

PHASES = r"""
import json, sys, time
marks, t0, c0 = [], time.perf_counter(), time.process_time()
def mark(name):
    marks.append((name, time.perf_counter(), time.process_time()))
import numpy; mark("import numpy")
import torch; mark("import torch")
import open_clip; mark("import open_clip (torchvision, torch._dynamo, timm)")
import lancedb; mark("import lancedb (lance_namespace, pandas)")
from vidsift.models.encoder import ClipEncoder
from vidsift.models.spec import resolve_spec
from vidsift.pipeline.confidence import load_calibration
from vidsift.pipeline.search import require_indexed, search_text
from vidsift.pipeline.store import VideoStore
mark("import vidsift modules")
store = VideoStore(sys.argv[1], search_catalog=False)
spec = resolve_spec("shapes-tiny")
require_indexed(store, spec); mark("open the archive, check the model")
encoder = ClipEncoder.from_spec(spec); mark("load the model")
calibration = load_calibration(store, encoder); mark("confidence calibration")
encoder.encode_texts(["warm"]); mark("first text encoding")
search_text(store, encoder, sys.argv[2], k=10, thumbnails=False, calibration=calibration)
mark("search (encode + LanceDB + confidence)")
rows, wall, cpu = [], t0, c0
for name, w, c in marks:
    rows.append({"phase": name, "wall_s": round(w - wall, 3), "cpu_s": round(c - cpu, 3)})
    wall, cpu = w, c
print(json.dumps(rows))
"""


def run_case(argv: list[str], env: dict | None = None) -> dict:
    """One subprocess, output discarded: wall seconds, CPU seconds (user + system) and peak RSS (MB)
    of the child, from ``os.wait4``."""
    start = time.perf_counter()
    with open(os.devnull, "wb") as sink:
        proc = subprocess.Popen(argv, cwd=ROOT, stdout=sink, stderr=subprocess.PIPE,
                                env={**os.environ, **env} if env else None)
        pid, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        err = proc.stderr.read().decode()
        proc.stderr.close()
        proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, argv))} failed ({proc.returncode}): {err[-500:]}")
    return {"wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime, "rss_mb": usage.ru_maxrss / 1024}


def demo_archive(workdir: Path) -> tuple[str, Path]:
    """The demo's archive (what `vidsift demo` renders: 16 videos, seed 7, at most 640 px wide,
    2-8 s scenes), indexed with shapes-tiny without Ray (the same vectors), once."""
    archive, db = workdir / "archive", workdir / "vidsift.lance"
    if not (archive / "manifest.json").is_file():
        subprocess.run([PY, "-c", "import sys; from vidsift.pipeline.shapes.archive import synthesize_archive; "
                        "synthesize_archive(sys.argv[1], 16, 7, max_size=640, scene_len=(2.0, 8.0))", str(archive)],
                       cwd=ROOT, check=True)
    if not db.exists():
        subprocess.run([*VIDSIFT, "index", str(archive / "videos"), "--db", str(db), "--model", "shapes-tiny",
                        "--no-ray"], cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    return str(db), archive


EXAMPLE_IMAGE = r"""
import json, sys
from pathlib import Path
import av
from PIL import Image
archive, out, label = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
manifest = json.loads((archive / "manifest.json").read_text())
videos = manifest["videos"] if isinstance(manifest, dict) else manifest
scenes = [(v, s) for v in videos for s in v["scenes"] if s["label"] == label] or [(videos[0], videos[0]["scenes"][0])]
video, scene = scenes[0]
middle = (scene["start"] + scene["end"]) / 2
with av.open(str(archive / video["path"])) as container:
    frame = next(f for f in container.decode(video=0) if f.time >= middle)
    Image.fromarray(frame.to_ndarray(format="rgb24")).save(out)
"""


def example_image(archive: Path, out: Path) -> Path:
    """A frame from the middle of the archive's first red-star scene (any scene if none), cut in a
    child process: this process stays small, since a child's peak RSS counts the fork's copy of it."""
    subprocess.run([PY, "-c", EXAMPLE_IMAGE, str(archive), str(out), QUERY], cwd=ROOT, check=True)
    return out


def machine() -> dict:
    """The machine, without importing torch here (see ``example_image``)."""
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {"cpus": os.cpu_count(), "memory_gib": round(memory, 1),
            "python": sys.version.split()[0], "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# `vidsift app --model shapes-tiny` as app.web.serve runs it, announcing itself (app.announce).
SERVE_ANNOUNCED = r"""
import sys
from vidsift.app.announce import announce
from vidsift.app.web import AppConfig, start
from vidsift.models.spec import resolve_spec
config = AppConfig(db=sys.argv[1], spec=resolve_spec("shapes-tiny"), port=int(sys.argv[2]))
demo, url = start(config)
service = demo.vidsift_service
announced = announce(config, demo.local_url, service.spec, service.store.archive_models())
try:
    demo.block_thread()
finally:
    announced.remove()
    demo.close()
"""


class RunningApp:
    """`vidsift app` on a free loopback port, announced in ``runtime`` (a private folder), started
    here and stopped by its PID."""

    def __init__(self, db: str, log: Path, runtime: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(log, "wb")
        self.env = {"VIDSIFT_RUNTIME_DIR": str(runtime)}
        self.proc = subprocess.Popen([PY, "-c", SERVE_ANNOUNCED, db, str(self.port)], cwd=ROOT, stdout=self.log,
                                     stderr=subprocess.STDOUT, env={**os.environ, **self.env})

    def wait(self, timeout: float = 300) -> float:
        """Seconds until the first search is answered (the app loads its model on first use)."""
        start = time.perf_counter()
        while time.perf_counter() - start < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the app exited ({self.proc.returncode}); see {self.log.name}")
            try:
                subprocess.run([PY, "-c", HTTP_CLIENT, self.url, QUERY], check=True, capture_output=True, timeout=120)
                return time.perf_counter() - start
            except subprocess.CalledProcessError:
                time.sleep(1)
        raise RuntimeError("the app did not answer")

    def stop(self):
        """Ctrl-C, as a user stops it: the app removes its announcement (SIGTERM would leave the
        file behind, for the next `vidsift search` to find its pid dead and remove)."""
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


IMPORTS = "import numpy, torch, open_clip, lancedb"
SUBTREES = ("torch", "torch._dynamo", "torchvision", "timm", "open_clip", "lancedb", "lance_namespace",
            "pyarrow.dataset", "pandas")


def check_route(search: list[str], env: dict) -> str:
    """One routed search must be answered by the app, with the in-process JSON (scores to 1e-5)."""
    routed = subprocess.run([*search, "--json"], cwd=ROOT, capture_output=True, text=True, check=True,
                            env={**os.environ, **env, "VIDSIFT_VERBOSE": "1"})
    if "answered by the vidsift app" not in routed.stderr:
        raise RuntimeError(f"the search was not answered by the app: {routed.stderr[-800:]}")
    here = subprocess.run([*search, "--json", "--no-app"], cwd=ROOT, capture_output=True, text=True, check=True)
    a, b = json.loads(routed.stdout), json.loads(here.stdout)
    same = [(x["path"], x["start"], x["match"]) for x in a["results"]] == \
        [(x["path"], x["start"], x["match"]) for x in b["results"]] and \
        all(abs(x["score"] - y["score"]) <= 1e-5 for x, y in zip(a["results"], b["results"]))
    if not same:
        raise RuntimeError("the app's answer differs from the in-process one")
    return f"checked: the routed search was answered by the app, {len(a['results'])} hits as in process"


def importtime() -> list[str]:
    """The cumulative import time of the biggest subtrees (the first time each is imported) in one
    ``python -X importtime`` run of what a search imports, as a share of the whole."""
    import re

    result = subprocess.run([PY, "-X", "importtime", "-c", IMPORTS], cwd=ROOT, capture_output=True, text=True,
                            check=True)
    cumulative: dict[str, int] = {}
    total = 0
    for line in result.stderr.splitlines():
        found = re.match(r"import time:\s+\d+ \|\s+(\d+) \|( *)(\S+)", line)
        if not found:
            continue
        micros, depth, name = int(found.group(1)), len(found.group(2)), found.group(3)
        if depth == 1:
            total += micros
        if name in SUBTREES and name not in cumulative:
            cumulative[name] = micros
    lines = [f"python -X importtime -c \"{IMPORTS}\" (one run; wall time, inner subtrees counted in their parents):",
             f"{'module (where first imported)':<32} {'cumulative':>10} {'share':>6}"]
    lines += [f"{name:<32} {micros / 1e6:9.2f}s {100 * micros / total:5.0f}%" for name, micros in cumulative.items()]
    lines.append(f"{'all imports':<32} {total / 1e6:9.2f}s   100%")
    return lines


def load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", default=None, help="an indexed demo archive (shapes-tiny); default: build one")
    parser.add_argument("--workdir", default="/tmp/vidsift-bench/cli-speed")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--app", action="store_true", help="also time a client of a running `vidsift app`")
    parser.add_argument("--phases", action="store_true", help="also split one in-process search into phases")
    parser.add_argument("--imports", action="store_true", help="also time `import open_clip` and `import lancedb`")
    parser.add_argument("--importtime", action="store_true", help="also show where the import time goes")
    parser.add_argument("--out", default=None, help="write the report (text) here")
    args = parser.parse_args(argv)

    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    if args.db:
        db, archive = args.db, Path(args.db).resolve().parent / "archive"
    else:
        db, archive = demo_archive(workdir)
    image = example_image(archive, workdir / "example.png")
    common = ["--db", db, "--model", "shapes-tiny"]
    search = [*VIDSIFT, "search", QUERY, *common]
    cases = {
        "python -c pass": [PY, "-c", "pass"],
        'python -c "import torch"  (baseline)': [PY, "-c", "import torch"],
        "vidsift --help": [*VIDSIFT, "--help"],
        f'vidsift search "{QUERY}" --no-app  (in process)': [*search, "--no-app"],
        "vidsift search --image FILE  (in process)": [*VIDSIFT, "search", "--image", str(image), *common],
    }
    envs: dict[str, dict] = {}
    if args.imports:
        cases['python -c "import open_clip"'] = [PY, "-c", "import open_clip"]
        cases['python -c "import lancedb"'] = [PY, "-c", "import lancedb"]
        cases['python -c "import lance"  (pylance, no lancedb)'] = [PY, "-c", "import lance"]
    app = None
    lines = [f"bench/cli_speed.py: {' '.join(sys.argv[1:]) or '(defaults)'}", f"machine: {json.dumps(machine())}",
             f"archive: {db} ({len(list((archive / 'videos').iterdir()))} videos, shapes-tiny)",
             f"load average at start: {load()}"]
    try:
        if args.app:
            app = RunningApp(db, workdir / "app.log", workdir / "runtime")
            first = app.wait()
            lines.append(f"app: started, first search answered after {first:.1f} s (start-up + model load)")
            lines.append(check_route(search, app.env))
            routed = f'vidsift search "{QUERY}"  (answered by the running app)'
            cases[routed], envs[routed] = search, app.env
            cases["client of a running `vidsift app` (HTTP, stdlib only)"] = [PY, "-c", HTTP_CLIENT, app.url, QUERY]
        samples: dict[str, list[dict]] = {name: [] for name in cases}
        for rep in range(args.reps):  # --reps 0: only the other parts
            for name, argv_ in cases.items():
                samples[name].append(run_case(argv_, envs.get(name)))
            print(f"round {rep + 1}/{args.reps} done (load {load()})", file=sys.stderr)
    finally:
        if app is not None:
            app.stop()
    lines.append(f"load average at end: {load()}")

    def median(name, key):
        return statistics.median(s[key] for s in samples[name])

    base = 'python -c "import torch"  (baseline)'
    width = max(map(len, cases))
    if args.reps >= 1:
        lines.append("")
        lines.append(f"{'case':<{width}}  {'wall med':>8}  {'wall min':>8}  {'cpu med':>7}  {'RSS MB':>6}  "
                     f"{'wall/torch':>10}  {'cpu/torch':>9}")
        for name in cases:
            fastest = min(s["wall_s"] for s in samples[name])
            lines.append(f"{name:<{width}}  {median(name, 'wall_s'):7.2f}s  {fastest:7.2f}s  "
                         f"{median(name, 'cpu_s'):6.2f}s  {median(name, 'rss_mb'):6.0f}  "
                         f"{median(name, 'wall_s') / median(base, 'wall_s'):9.2f}x  "
                         f"{median(name, 'cpu_s') / median(base, 'cpu_s'):8.2f}x")
        lines.append(f"({args.reps} rounds, cases interleaved in each; medians; CPU = user + system of the child)")
    if args.importtime:
        lines += ["", *importtime()]

    if args.phases:
        result = subprocess.run([PY, "-c", PHASES, db, QUERY], cwd=ROOT, capture_output=True, text=True, check=True)
        rows = json.loads(result.stdout.strip().splitlines()[-1])
        lines += ["", "one in-process search, by phase (one run):", f"{'phase':<58} {'wall':>7} {'cpu':>7}"]
        lines += [f"{r['phase']:<58} {r['wall_s']:6.2f}s {r['cpu_s']:6.2f}s" for r in rows]
        lines.append(f"{'total':<58} {sum(r['wall_s'] for r in rows):6.2f}s {sum(r['cpu_s'] for r in rows):6.2f}s")
    report = "\n".join(lines)
    print(report)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(report + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
