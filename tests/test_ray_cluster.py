"""A real two-node Ray cluster on loopback (tests/ray_cluster.py): drivers, Ray Jobs, a node dying.

One cluster (head + 1 worker node, 1 CPU each) serves the whole module, in order: the last test
closes it and checks that nothing we started is left. About 40 s on 2 cores (start ~12 s, Ray Jobs
~10 s, the job with a node killed ~12 s, a node joining ~5 s, close ~2 s).
"""
from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.ray_cluster import LoopbackCluster, is_alive, listening_sockets

REPO_ROOT = Path(__file__).resolve().parents[1]

# A driver as `vidsift index --address ...` is one: its own process, joining by address.
DRIVER = textwrap.dedent('''\
    import json, sys, time
    import ray

    ray.init(address=sys.argv[1], log_to_driver=False)
    print("@@", json.dumps({"driver_node": ray.get_runtime_context().get_node_id()}), flush=True)

    @ray.remote(num_cpus=1, max_retries=5)
    def work(i):
        time.sleep(1.0)
        return i, ray.get_runtime_context().get_node_id()

    pending = [work.remote(i) for i in range(int(sys.argv[2]))]
    while pending:
        done, pending = ray.wait(pending, num_returns=1)
        i, node = ray.get(done[0])
        print("@@", json.dumps({"i": i, "node": node}), flush=True)
    print("@@", json.dumps({"done": True}), flush=True)
''')

JOB_SCRIPT = textwrap.dedent('''\
    import ray
    import helper  # from the working dir, shipped by `ray job submit --working-dir`

    ray.init()

    @ray.remote(num_cpus=1)
    def where():
        return ray.get_runtime_context().get_node_id()

    nodes = sorted(set(ray.get([where.remote() for _ in range(4)])))
    print("JOB-RESULT", helper.MESSAGE, len(ray.nodes()), ",".join(nodes), flush=True)
''')


def _loopback(ip: str) -> bool:
    return ip.startswith("127.") or ip == "::1"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = LoopbackCluster(tmp_path_factory.mktemp("raycluster"), head_cpus=1, worker_cpus=1, workers=1,
                        memory_gb=2, object_store_gb=0.5, dashboard=True)
    c.__enter__()
    c.seen_pids = set()
    yield c
    c.close()


def test_two_nodes_registered_and_everything_on_loopback(cluster):
    assert cluster.address.startswith("127.0.0.1:")
    assert cluster.dashboard_url.startswith("http://127.0.0.1:")
    nodes = cluster.nodes()
    assert len(nodes) == 2
    assert {n["node_id"] for n in nodes} == {cluster.head.node_id, cluster.workers[0].node_id}
    assert all(n["ip"] == "127.0.0.1" for n in nodes)
    assert sorted(n["is_head"] for n in nodes) == [False, True]
    for n in nodes:  # explicit sizes, not "the whole machine"
        assert n["resources"]["CPU"] == 1
        assert n["resources"]["memory"] == 2 * 1024 ** 3
        assert n["resources"]["object_store_memory"] == 512 * 1024 ** 2
    socks = cluster.listening_sockets()
    names = {name for _, name, _, _ in socks}
    assert {"gcs_server", "raylet"} <= names, socks
    assert [s for s in socks if not _loopback(s[2])] == []
    gcs_port = int(cluster.address.rsplit(":", 1)[1])
    assert any(name == "gcs_server" and port == gcs_port for _, name, _, port in socks)
    cluster.seen_pids.update(cluster.all_pids())


def test_ray_job_submit_through_the_dashboard(cluster, tmp_path):
    workdir = tmp_path / "job"
    workdir.mkdir()
    (workdir / "script.py").write_text(JOB_SCRIPT)
    (workdir / "helper.py").write_text('MESSAGE = "hello-from-working-dir"\n')
    out = subprocess.run([cluster.ray_cli, "job", "submit", "--address", cluster.dashboard_url,
                          "--working-dir", str(workdir), "--", "python", "script.py"],
                         env=cluster.env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    lines = [line for line in out.stdout.splitlines() if line.startswith("JOB-RESULT")]
    assert lines, out.stdout[-3000:]
    _, message, n_nodes, _ = lines[-1].split(" ")
    assert message == "hello-from-working-dir"
    assert n_nodes == "2"
    assert "succeeded" in out.stdout + out.stderr
    cluster.seen_pids.update(cluster.all_pids())


def test_driver_uses_both_nodes_and_survives_a_worker_node_dying(cluster):
    head_id, worker = cluster.head.node_id, cluster.workers[0]
    n_tasks = 10
    driver = subprocess.Popen([sys.executable, "-c", DRIVER, cluster.address, str(n_tasks)], env=cluster.env,
                              cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        results, before_kill, killed = {}, set(), []
        deadline = time.monotonic() + 90
        other = []  # Ray's own messages, e.g. "Task work failed ... will be retried"
        for line in driver.stdout:
            assert time.monotonic() < deadline, "driver too slow"
            if not line.startswith("@@ "):
                other.append(line)
                continue
            msg = json.loads(line[3:])
            if "driver_node" in msg:
                assert msg["driver_node"] == head_id  # the driver attaches to the head's raylet
            elif "i" in msg:
                results[msg["i"]] = msg["node"]
                if not killed:
                    before_kill.add(msg["node"])
                    if before_kill == {head_id, worker.node_id}:
                        # Mid-job: every process of ours, the driver and its workers listen on loopback only.
                        socks = cluster.listening_sockets() + listening_sockets([driver.pid])
                        assert any(name.startswith("ray::work") for _, name, _, _ in socks), socks
                        assert [s for s in socks if not _loopback(s[2])] == []
                        cluster.seen_pids.update(cluster.all_pids())
                        killed = cluster.kill_worker(worker)
                        assert killed and not any(is_alive(p) for p in killed)
            elif msg.get("done"):
                break
        assert driver.wait(timeout=60) == 0, "".join(other)[-2000:] + driver.stderr.read()[-3000:]
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
    assert before_kill == {head_id, worker.node_id}, "tasks did not use both nodes before the kill"
    assert killed, "the worker node was never killed"
    assert sorted(results) == list(range(n_tasks))  # every task finished once, retried on the head
    assert results and set(results.values()) <= {head_id, worker.node_id}
    # The head survives; the GCS marks the worker node dead.
    deadline = time.monotonic() + 30
    while len(alive := cluster.nodes()) != 1 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert [n["node_id"] for n in alive] == [head_id]
    assert cluster.head.proc.poll() is None
    dead = [n for n in cluster.nodes(include_dead=True) if not n["alive"]]
    assert [n["node_id"] for n in dead] == [worker.node_id]


def test_a_new_worker_node_joins_after_one_died(cluster):
    node = cluster.add_worker(num_cpus=1)
    assert node.node_id not in {w.node_id for w in cluster.workers[:-1]}
    alive = {n["node_id"] for n in cluster.nodes()}
    assert alive == {cluster.head.node_id, node.node_id}
    cluster.seen_pids.update(cluster.all_pids())


def test_closing_leaves_nothing_running(cluster):
    pids = set(cluster.all_pids()) | cluster.seen_pids
    leaders = [n.pid for n in [cluster.head, *cluster.workers]]
    assert pids
    cluster.__exit__(None, None, None)
    assert cluster.leftover_processes() == []
    assert [p for p in pids | set(leaders) if is_alive(p)] == []
    port = int(cluster.address.rsplit(":", 1)[1])
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    assert not cluster.base.exists()  # Ray's temp dirs are removed on a clean close
    assert cluster.timings["stop_s"] < 30
    print("cluster timings:", {k: round(v, 1) for k, v in cluster.timings.items()},
          {n.name: round(n.started_s, 1) for n in [cluster.head, *cluster.workers]})
