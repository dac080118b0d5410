"""A real multi-node Ray cluster on loopback, for tests: ``LoopbackCluster``.

Every node is a real ``ray start ... --block`` process (head: GCS, dashboard, Jobs API, raylet;
workers: raylet + agents), on this machine, listening on 127.0.0.1 only, with its own temp dir.
A driver is a separate process (``vidsift index --address ...``, ``ray job submit ...``, a script)
started with ``cluster.env``::

    with LoopbackCluster(tmp_path, head_cpus=1, worker_cpus=1, memory_gb=2, object_store_gb=0.5) as cluster:
        subprocess.run([..., "--address", cluster.address], env=cluster.env)
        subprocess.run([cluster.ray_cli, "job", "submit", "--address", cluster.dashboard_url, ...], env=cluster.env)
        node = cluster.add_worker(num_cpus=1)    # WorkerNode: .node_id, .pid, .temp_dir, .log_path
        cluster.kill_worker(node)                # SIGKILL every process of that node, by PID
        cluster.nodes()                          # alive nodes as the GCS sees them
        cluster.listening_sockets()              # (pid, name, ip, port) of every listener of ours

What keeps it on loopback (ray 2.60, measured on a host whose routable address is 192.0.2.2):

- ``--node-ip-address=127.0.0.1`` alone is not enough: ``ray start`` and ``ray.init(address=...)``
  pass it through ``ray._private.services.resolve_ip_for_localhost``, which swaps 127.0.0.1 for the
  host's routable address. We write a ``sitecustomize.py`` into ``<base>/site`` and put that folder
  first on ``PYTHONPATH`` for every process of the cluster (``ray start``, and through inheritance
  the GCS, raylets, dashboard, agents and every worker) and for drivers (``cluster.env``). It
  installs an import hook that, once ``ray._private.services`` is imported, replaces
  ``resolve_ip_for_localhost`` with one returning its argument. It imports nothing from Ray itself,
  so processes that never use Ray pay nothing. With the node IP being 127.0.0.1, the GCS, raylets,
  agents and workers bind 127.0.0.1 (gRPC servers show up as ``[::ffff:127.0.0.1]``); the dashboard
  binds ``--dashboard-host=127.0.0.1``.
- With that hook, ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` (the field notes' head/driver workaround)
  is not needed at all, and we do not set it (a joining node refuses to start with it).
- ``RAY_AUTH_MODE=disabled`` for every process (else a joining node fails with InvalidAuthToken).
- Every port is chosen here from free loopback ports (GCS, dashboard, Ray Client server, dashboard
  agent HTTP/gRPC, runtime-env agent, metrics export) and workers bind OS-chosen ports
  (``--min-worker-port=0 --max-worker-port=0``): Ray's defaults (6379, 8265, 10001, 52365,
  10002-19999) collide with other people's Ray on the same machine and with our own second node.
- Each cluster lives under its own base dir (``/tmp/rlc-XXXXXX``, short because Ray's Unix socket
  paths must fit in 107 bytes): ``RAY_TMPDIR=<base>`` for every process, ``--temp-dir=<base>/ray``
  for the head (so ``<base>/ray/ray_current_cluster`` is ours, and ``--address auto`` in a driver
  with ``cluster.env`` finds this cluster and no other) and ``<base>/<node name>`` for each worker
  node (nodes share no temp dir, as separate hosts would not).
- ``cluster.env`` also sets ``RAY_ADDRESS`` (so ``ray.init()`` / ``--address auto`` join this
  cluster), ``RAY_API_SERVER_ADDRESS`` (the dashboard, for ``ray job ...``) and puts this Python's
  ``bin`` first on ``PATH``: a job's ``python ...`` entrypoint runs in a shell with the head's
  environment, and otherwise found a Python without Ray.

Lifecycle and cleanup:

- Each node is started with ``start_new_session=True``: its session id is the ``ray start`` PID and
  every process it spawns keeps it (Ray puts workers into their own process *groups*, so
  ``killpg`` alone would miss them, but not into new sessions). Every process also carries
  ``VIDSIFT_LOOPBACK_NODE=<cluster id>/<node>`` in its environment; a process belongs to a node if
  either matches. ``kill_worker`` and ``close`` find processes that way (by scanning ``/proc``,
  never by name) and signal them by PID; ``leftover_processes()`` must be empty after ``close``.
- ``close`` sends SIGTERM to each ``ray start`` (it stops its node's processes in order), waits up to
  ``stop_grace_s``, then SIGKILLs whatever of ours is left. ``RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S=0``
  is set: by default a SIGTERMed node "drains" for up to 30 s first.
- The head's GCS gets faster node-failure detection (``RAY_health_check_period_ms=1000``,
  ``RAY_health_check_timeout_ms=1000``, ``RAY_health_check_failure_threshold=3``) unless
  ``fast_failure_detection=False``, so a killed node is marked dead in seconds (2.5 s measured).
- Each ``ray start`` also gets PR_SET_PDEATHSIG=SIGTERM: if the process that created the cluster
  dies without closing it (pytest SIGKILLed), every node still stops within seconds. (The signal
  follows the *thread* that started the node: create the cluster from a thread that outlives it.)
- Zombies (exited, not yet reaped by PID 1) count as gone.

Measured here (2 cores, ray 2.60): head up in 5.6-7.6 s, a worker node in 3.5-4.7 s (``start``
with one worker: 10-13 s), ``close`` 2-3 s, a SIGKILLed node marked dead by the GCS about 2.5 s
later; the whole tests/test_ray_cluster.py about 42 s. ``vidsift index --address cluster.address``
with ``env=cluster.env`` indexes on it. Without the sitecustomize hook a driver given
127.0.0.1:PORT dials <routable IP>:PORT and hangs (retrying; still hung after 120 s).
"""
from __future__ import annotations

import ctypes
import ipaddress
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

GiB = 1024 ** 3
MARKER_VAR = "VIDSIFT_LOOPBACK_NODE"

# Installed as <base>/site/sitecustomize.py; see the module docstring.
SITECUSTOMIZE = '''\
"""LoopbackCluster: keep Ray on 127.0.0.1 (see tests/ray_cluster.py)."""
import importlib.abc
import importlib.machinery
import os
import sys

_TARGET = "ray._private.services"


def _resolve_ip_for_localhost(host):
    # Ray's version replaces 127.0.0.1/localhost by the host's routable address.
    if not host:
        raise ValueError(f"Malformed host: {host}")
    return host


class _LoopbackPatchFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name != _TARGET:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        original = spec.loader.exec_module

        def exec_module(module, _original=original):
            _original(module)
            module.resolve_ip_for_localhost = _resolve_ip_for_localhost

        spec.loader.exec_module = exec_module
        return spec


sys.meta_path.insert(0, _LoopbackPatchFinder())

# Chain to any other sitecustomize further down the path.
_here = os.path.dirname(os.path.abspath(__file__))
_other = importlib.machinery.PathFinder.find_spec(
    "sitecustomize", [p for p in sys.path if os.path.abspath(p or ".") != _here])
if _other is not None and _other.loader is not None:
    _module = importlib.util.module_from_spec(_other)
    _other.loader.exec_module(_module)
'''

# Run with cluster.env: prints the nodes the GCS knows as JSON (keeps Ray out of the test process).
_NODES_SCRIPT = '''\
import json, sys
from ray._raylet import GcsClient
infos = GcsClient(address=sys.argv[1]).get_all_node_info(timeout=float(sys.argv[2]))
print(json.dumps([
    {"node_id": node_id.hex(), "alive": info.state == 0, "ip": info.node_manager_address,
     "is_head": bool(info.is_head_node), "name": info.node_name,
     "resources": dict(info.resources_total), "temp_dir": getattr(info, "temp_dir", None)}
    for node_id, info in infos.items()]))
'''


# ---------------------------------------------------------------------------------------------
# /proc helpers (no psutil in the venv)
# ---------------------------------------------------------------------------------------------

def _proc_stat(pid: int) -> tuple[str, str, int] | None:
    """(comm, state, session id) of ``pid``, or None if it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    comm = raw[raw.index("(") + 1: raw.rindex(")")]
    fields = raw[raw.rindex(")") + 2:].split()
    return comm, fields[0], int(fields[3])


def _proc_marker(pid: int) -> str | None:
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return None
    prefix = MARKER_VAR.encode() + b"="
    for item in environ.split(b"\0"):
        if item.startswith(prefix):
            return item[len(prefix):].decode(errors="replace")
    return None


def _all_pids() -> list[int]:
    return [int(d) for d in os.listdir("/proc") if d.isdigit()]


def is_alive(pid: int) -> bool:
    """True if ``pid`` exists and is not a zombie."""
    stat = _proc_stat(pid)
    return stat is not None and stat[1] not in ("Z", "X")


def _hex_ip(hex_addr: str) -> str:
    raw = bytes.fromhex(hex_addr)
    if len(raw) == 4:
        return str(ipaddress.IPv4Address(raw[::-1]))
    # IPv6: four 32-bit words, each in host (little-endian) order.
    addr = ipaddress.IPv6Address(b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4)))
    return str(addr.ipv4_mapped) if addr.ipv4_mapped else str(addr)


def _listening_by_inode() -> dict[str, tuple[str, int]]:
    out = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            if parts[3] != "0A":  # LISTEN
                continue
            host, port = parts[1].split(":")
            out[parts[9]] = (_hex_ip(host), int(port, 16))
    return out


def listening_sockets(pids) -> list[tuple[int, str, str, int]]:
    """(pid, process name, ip, port) of every TCP socket in LISTEN state held by ``pids``.

    IPv4-mapped IPv6 listeners (``[::ffff:127.0.0.1]``) are reported as their IPv4 address.
    """
    listening = _listening_by_inode()
    found = []
    for pid in pids:
        stat = _proc_stat(pid)
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:[") and target[8:-1] in listening:
                ip, port = listening[target[8:-1]]
                found.append((pid, stat[0] if stat else "?", ip, port))
    return sorted(set(found))


def _free_ports(n: int) -> list[int]:
    """``n`` distinct ports free on 127.0.0.1 right now."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


try:  # Linux: a node's `ray start` gets SIGTERM if the process that started it dies (e.g. pytest killed)
    _prctl = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):
    _prctl = None


def _die_with_parent() -> None:  # runs in the child between fork and exec: no imports, no locks
    if _prctl is not None:
        _prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _ray_cli() -> str:
    candidate = Path(sys.executable).parent / "ray"
    return str(candidate) if candidate.exists() else "ray"


# ---------------------------------------------------------------------------------------------

class ClusterError(RuntimeError):
    pass


@dataclass
class WorkerNode:
    """One ``ray start`` node we own. ``pid`` is the ``ray start --block`` process (= session id)."""

    name: str
    num_cpus: float
    proc: subprocess.Popen
    temp_dir: Path
    log_path: Path
    marker: str
    node_id: str | None = None
    started_s: float = 0.0  # how long it took to come up
    killed: bool = False
    extra: dict = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


class LoopbackCluster:
    """A head node plus ``workers`` worker nodes, all ``ray start`` processes on 127.0.0.1.

    Use as a context manager (or call ``start()`` / ``close()``). ``tmp_path`` receives the
    ``ray start`` output of each node (``<tmp_path>/ray-cluster-logs/<node>.log``); Ray's own temp
    dirs (sessions, sockets, component logs) live under a short ``/tmp/rlc-XXXXXX`` base, removed
    on a clean close and kept (a few MB) when the block raised or ``keep_temp=True``.
    """

    def __init__(self, tmp_path, head_cpus: float = 1, worker_cpus: float = 1, workers: int = 1,
                 memory_gb: float = 2, object_store_gb: float = 0.5, dashboard: bool = True,
                 fast_failure_detection: bool = True, start_timeout_s: float = 90,
                 stop_grace_s: float = 8, extra_env: dict | None = None, keep_temp: bool = False):
        self.tmp_path = Path(tmp_path)
        self.head_cpus, self.worker_cpus, self.initial_workers = head_cpus, worker_cpus, workers
        self.memory_gb, self.object_store_gb = memory_gb, object_store_gb
        self.dashboard = dashboard
        self.fast_failure_detection = fast_failure_detection
        self.start_timeout_s, self.stop_grace_s = start_timeout_s, stop_grace_s
        self.extra_env = dict(extra_env or {})
        self.keep_temp = keep_temp
        self.cluster_id = uuid.uuid4().hex[:12]
        self.base = Path(tempfile.mkdtemp(prefix="rlc-", dir="/tmp"))
        self.log_dir = self.tmp_path / "ray-cluster-logs"
        self.site_dir = self.base / "site"
        self.head: WorkerNode | None = None
        self.workers: list[WorkerNode] = []
        self.address: str | None = None
        self.dashboard_url: str | None = None
        self.ray_cli = _ray_cli()
        self.timings: dict[str, float] = {}
        self._worker_count = 0
        self._closed = False

    # -- environment ------------------------------------------------------------------------
    def _common_env(self) -> dict:
        env = dict(os.environ)
        for var in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER",
                    "RAY_NODE_IP_ADDRESS", MARKER_VAR):
            env.pop(var, None)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(self.site_dir), os.environ.get("PYTHONPATH", "")) if p)
        env["PATH"] = os.pathsep.join((str(Path(sys.executable).parent), os.environ.get("PATH", "")))
        env.update({
            "RAY_AUTH_MODE": "disabled",
            "RAY_TMPDIR": str(self.base),
            "RAY_USAGE_STATS_ENABLED": "0",
            "PYTHONUNBUFFERED": "1",
        })
        env.update(self.extra_env)
        return env

    def _node_env(self, name: str, head: bool) -> dict:
        env = self._common_env()
        env[MARKER_VAR] = f"{self.cluster_id}/{name}"
        env["RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S"] = "0"
        if head and self.fast_failure_detection:
            env.update({"RAY_health_check_initial_delay_ms": "1000", "RAY_health_check_period_ms": "1000",
                        "RAY_health_check_timeout_ms": "1000", "RAY_health_check_failure_threshold": "3"})
        return env

    @property
    def env(self) -> dict:
        """Environment for a driver process (a subprocess) that joins this cluster on loopback."""
        if self.address is None:
            raise ClusterError("cluster not started")
        env = self._common_env()
        env["RAY_ADDRESS"] = self.address
        if self.dashboard_url:
            env["RAY_API_SERVER_ADDRESS"] = self.dashboard_url
        return env

    # -- start --------------------------------------------------------------------------------
    def __enter__(self) -> "LoopbackCluster":
        try:
            self.start()
        except BaseException:
            self.close(keep_temp=True)
            raise
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(keep_temp=self.keep_temp or exc_type is not None)

    def start(self) -> "LoopbackCluster":
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.site_dir.mkdir(parents=True, exist_ok=True)
        (self.site_dir / "sitecustomize.py").write_text(SITECUSTOMIZE)
        t0 = time.monotonic()
        for attempt in range(2):  # a port picked as free can be taken before Ray binds it
            try:
                self._start_head()
                break
            except ClusterError:
                if attempt == 1:
                    raise
                self._stop_node(self.head, graceful=False)
                self.head = None
        self.timings["head_start_s"] = time.monotonic() - t0
        t1 = time.monotonic()
        nodes = [self._spawn_worker(self.worker_cpus) for _ in range(self.initial_workers)]
        for node in nodes:
            self._wait_started(node)
        self.timings["workers_start_s"] = time.monotonic() - t1
        if nodes:
            self.wait_for_nodes(1 + len(nodes))
        self.timings["start_s"] = time.monotonic() - t0
        return self

    def _memory_args(self) -> list[str]:
        return [f"--memory={int(self.memory_gb * GiB)}",
                f"--object-store-memory={int(self.object_store_gb * GiB)}"]

    def _start_head(self) -> None:
        gcs, dash, client, agent_http, agent_grpc, rt_env, metrics = _free_ports(7)
        temp_dir = self.base / "ray"
        args = ["start", "--head", "--block", f"--port={gcs}", "--node-ip-address=127.0.0.1",
                f"--num-cpus={self.head_cpus}", *self._memory_args(), "--disable-usage-stats",
                f"--temp-dir={temp_dir}", f"--ray-client-server-port={client}",
                "--min-worker-port=0", "--max-worker-port=0",
                f"--dashboard-agent-listen-port={agent_http}", f"--dashboard-agent-grpc-port={agent_grpc}",
                f"--runtime-env-agent-port={rt_env}", f"--metrics-export-port={metrics}",
                "--dashboard-host=127.0.0.1"]
        if self.dashboard:
            args += ["--include-dashboard=true", f"--dashboard-port={dash}"]
        else:
            args += ["--include-dashboard=false"]
        self.head = self._spawn("head", self.head_cpus, args, temp_dir, head=True)
        self._wait_started(self.head)
        self.address = f"127.0.0.1:{gcs}"
        self.dashboard_url = f"http://127.0.0.1:{dash}" if self.dashboard else None

    def _spawn(self, name: str, num_cpus: float, args: list[str], temp_dir: Path, head: bool) -> WorkerNode:
        log_path = self.log_dir / f"{name}.log"
        log = open(log_path, "wb")
        try:
            proc = subprocess.Popen([self.ray_cli, *args], env=self._node_env(name, head), cwd=self.base,
                                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True, preexec_fn=_die_with_parent)
        finally:
            log.close()
        node = WorkerNode(name=name, num_cpus=num_cpus, proc=proc, temp_dir=temp_dir, log_path=log_path,
                          marker=f"{self.cluster_id}/{name}")
        node.extra["spawned_at"] = time.monotonic()
        return node

    def _spawn_worker(self, num_cpus: float) -> WorkerNode:
        if self.address is None:
            raise ClusterError("start the head first")
        self._worker_count += 1
        name = f"w{self._worker_count}"
        temp_dir = self.base / name
        agent_http, agent_grpc, rt_env, metrics = _free_ports(4)
        args = ["start", f"--address={self.address}", "--block", "--node-ip-address=127.0.0.1",
                f"--num-cpus={num_cpus}", *self._memory_args(), "--disable-usage-stats",
                f"--temp-dir={temp_dir}", "--min-worker-port=0", "--max-worker-port=0",
                f"--dashboard-agent-listen-port={agent_http}", f"--dashboard-agent-grpc-port={agent_grpc}",
                f"--runtime-env-agent-port={rt_env}", f"--metrics-export-port={metrics}"]
        node = self._spawn(name, num_cpus, args, temp_dir, head=False)
        self.workers.append(node)
        return node

    def _wait_started(self, node: WorkerNode) -> None:
        deadline = node.extra["spawned_at"] + self.start_timeout_s
        while time.monotonic() < deadline:
            text = node.log_path.read_text(errors="replace") if node.log_path.exists() else ""
            if "Ray runtime started." in text:
                node.node_id = self._raylet_node_id(node)
                if node.node_id:
                    node.started_s = time.monotonic() - node.extra["spawned_at"]
                    return
            if node.proc.poll() is not None:
                raise ClusterError(f"node {node.name} exited with {node.proc.returncode}:\n{node.log_tail()}")
            time.sleep(0.2)
        raise ClusterError(f"node {node.name} not up after {self.start_timeout_s} s:\n{node.log_tail()}")

    def _raylet_node_id(self, node: WorkerNode) -> str | None:
        for pid in self.node_pids(node):
            try:
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if argv and argv[0].endswith(b"/raylet"):
                for arg in argv:
                    if arg.startswith(b"--node_id="):
                        return arg.split(b"=", 1)[1].decode()
        return None

    def add_worker(self, num_cpus: float | None = None) -> WorkerNode:
        """Start another worker node (``ray start --address ...``); returns once it is registered."""
        node = self._spawn_worker(self.worker_cpus if num_cpus is None else num_cpus)
        self._wait_started(node)
        self.wait_for_nodes(1 + len([w for w in self.workers if not w.killed]))
        return node

    # -- inspect ------------------------------------------------------------------------------
    def node_pids(self, node: WorkerNode) -> list[int]:
        """Live processes of ``node``: its session (the ``ray start`` PID) or its env marker."""
        pids = []
        for pid in _all_pids():
            stat = _proc_stat(pid)
            if stat is None or stat[1] in ("Z", "X"):
                continue
            if stat[2] == node.pid or _proc_marker(pid) == node.marker:
                pids.append(pid)
        return pids

    def all_pids(self) -> list[int]:
        """Live processes of every node of this cluster (by session id or env marker)."""
        sessions = {n.pid for n in self._all_nodes()}
        prefix = self.cluster_id + "/"
        pids = []
        for pid in _all_pids():
            stat = _proc_stat(pid)
            if stat is None or stat[1] in ("Z", "X"):
                continue
            if stat[2] in sessions or (_proc_marker(pid) or "").startswith(prefix):
                pids.append(pid)
        return pids

    leftover_processes = all_pids

    def listening_sockets(self) -> list[tuple[int, str, str, int]]:
        return listening_sockets(self.all_pids())

    def nodes(self, include_dead: bool = False, timeout_s: float = 10) -> list[dict]:
        """Nodes as the GCS sees them (alive only by default): dicts with node_id, alive, ip, is_head, resources."""
        out = subprocess.run([sys.executable, "-c", _NODES_SCRIPT, self.address, str(timeout_s)],
                             env=self.env, capture_output=True, text=True, timeout=timeout_s + 30)
        if out.returncode != 0:
            raise ClusterError(f"could not list nodes: {out.stderr[-2000:]}")
        nodes = json.loads(out.stdout.strip().splitlines()[-1])
        return nodes if include_dead else [n for n in nodes if n["alive"]]

    def wait_for_nodes(self, count: int, timeout_s: float = 60) -> list[dict]:
        """Wait until exactly ``count`` nodes are alive in the GCS."""
        deadline = time.monotonic() + timeout_s
        while True:
            alive = self.nodes()
            if len(alive) == count or time.monotonic() > deadline:
                if len(alive) != count:
                    raise ClusterError(f"expected {count} alive nodes, GCS has {len(alive)}: {alive}")
                return alive
            time.sleep(0.5)

    # -- stop ---------------------------------------------------------------------------------
    def kill_worker(self, node: WorkerNode) -> list[int]:
        """SIGKILL every process of ``node`` (``ray start``, raylet, agents, workers), by PID."""
        if node is self.head:
            raise ClusterError("kill_worker is for worker nodes")
        killed = self._kill_all(lambda: self.node_pids(node))
        node.proc.wait(timeout=10)
        node.killed = True
        return killed

    def _kill_all(self, pids_fn, rounds: int = 20) -> list[int]:
        killed = []
        for _ in range(rounds):  # a raylet may spawn a worker while we kill: repeat until none
            pids = pids_fn()
            if not pids:
                break
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
                except ProcessLookupError:
                    pass
            time.sleep(0.1)
        return sorted(set(killed))

    def _stop_node(self, node: WorkerNode | None, graceful: bool = True) -> None:
        if node is None:
            return
        if graceful and node.proc.poll() is None:
            node.proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + self.stop_grace_s
            while time.monotonic() < deadline and self.node_pids(node):
                node.proc.poll()  # reap the leader as soon as it exits
                time.sleep(0.1)
        self._kill_all(lambda: self.node_pids(node))
        try:
            node.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass

    def _all_nodes(self) -> list[WorkerNode]:
        return [n for n in [self.head, *self.workers] if n is not None]

    def close(self, keep_temp: bool | None = None) -> None:
        """Stop every node we started (workers first), then SIGKILL anything of ours still alive.

        Removes the Ray temp base (sessions, sockets, Ray's own logs) unless ``keep_temp`` (default:
        the constructor's); ``__exit__`` keeps it when the block raised, for a post-mortem.
        """
        if self._closed:
            return
        self._closed = True
        t0 = time.monotonic()
        for node in reversed(self._all_nodes()):
            self._stop_node(node, graceful=not node.killed)
        self._kill_all(self.all_pids)
        self.timings["stop_s"] = time.monotonic() - t0
        left = self.all_pids()
        if left:
            raise ClusterError(f"processes still alive after close: {left}")
        if not (self.keep_temp if keep_temp is None else keep_temp):
            shutil.rmtree(self.base, ignore_errors=True)
