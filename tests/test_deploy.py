"""deploy/: the KubeRay RayJob and the Ray cluster-launcher config say what they must.

Structure only (no Kubernetes or AWS here): groups, resources, secrets, the entrypoint, parsed with
vidsift's own argument parser, and the launcher config through Ray's own schema validation.
"""
from __future__ import annotations

import copy
import shlex
from pathlib import Path

import pytest
import yaml

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
AWS_VARS = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION", "AWS_ENDPOINT_URL"}


@pytest.fixture(scope="module")
def rayjob() -> dict:
    return yaml.safe_load((DEPLOY / "kuberay-rayjob.yaml").read_text())


@pytest.fixture(scope="module")
def launcher() -> dict:
    return yaml.safe_load((DEPLOY / "ray-cluster.yaml").read_text())


def _container(group: dict) -> dict:
    containers = group["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def _groups(rayjob: dict) -> dict[str, dict]:
    cluster = rayjob["spec"]["rayClusterSpec"]
    return {"head": cluster["headGroupSpec"], **{g["groupName"]: g for g in cluster["workerGroupSpecs"]}}


def _gpus(container: dict, kind: str) -> int:
    return int(container["resources"][kind].get("nvidia.com/gpu", 0))


def test_rayjob_is_a_kuberay_v1_rayjob_that_cleans_up(rayjob):
    assert rayjob["apiVersion"] == "ray.io/v1"
    assert rayjob["kind"] == "RayJob"
    assert rayjob["metadata"]["name"]
    assert rayjob["spec"]["shutdownAfterJobFinishes"] is True
    assert rayjob["spec"]["rayClusterSpec"]["rayVersion"]


def test_rayjob_has_head_cpu_and_gpu_groups_on_one_image(rayjob):
    groups = _groups(rayjob)
    workers = {name: g for name, g in groups.items() if name != "head"}
    gpu = [name for name, g in workers.items() if _gpus(_container(g), "limits") >= 1]
    cpu = [name for name, g in workers.items() if _gpus(_container(g), "limits") == 0]
    assert len(gpu) == 1 and len(cpu) >= 1, workers.keys()
    gpu_container = _container(workers[gpu[0]])
    assert _gpus(gpu_container, "limits") == 1
    assert _gpus(gpu_container, "requests") == 1  # extended resources: requests must equal limits
    assert _gpus(_container(groups["head"]), "limits") == 0
    assert len({_container(g)["image"] for g in groups.values()}) == 1  # the same image everywhere
    for name, group in groups.items():
        res = _container(group)["resources"]
        for kind in ("requests", "limits"):  # explicit, on every container
            assert {"cpu", "memory"} <= set(res[kind]), (name, kind)
        if name != "head":
            assert 0 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"], name
    # The head only coordinates: no tasks scheduled on it.
    assert str(groups["head"]["rayStartParams"]["num-cpus"]) == "0"


def test_rayjob_credentials_come_from_a_secret_on_every_pod(rayjob):
    envs = []
    for name, group in _groups(rayjob).items():
        env = {e["name"]: e for e in _container(group)["env"]}
        assert AWS_VARS <= set(env), name
        for var in AWS_VARS:
            ref = env[var]["valueFrom"]["secretKeyRef"]  # never a literal value
            assert ref["name"] and ref["key"] == var
            assert "value" not in env[var]
        assert env["AWS_ENDPOINT_URL"]["valueFrom"]["secretKeyRef"].get("optional") is True
        assert not any(env[v]["valueFrom"]["secretKeyRef"].get("optional") for v in AWS_VARS - {"AWS_ENDPOINT_URL"})
        envs.append(_container(group)["env"])
    assert all(e == envs[0] for e in envs)  # the same variables on the head and on every worker


def test_rayjob_entrypoint_parses_with_vidsifts_own_parser(rayjob):
    from vidsift.app.cli import build_parser

    argv = shlex.split(rayjob["spec"]["entrypoint"])
    assert argv[:2] == ["vidsift", "index"]
    args = build_parser().parse_args(argv[1:])  # fails (SystemExit) on any flag vidsift lacks
    assert args.command == "index"
    assert args.inputs == ["s3://my-bucket/videos/"]
    assert args.db == "s3://my-bucket/vidsift.lance"
    assert args.address == "auto"
    assert args.json is True
    assert args.storage_options == ["region=us-east-1"]
    assert not any("SECRET" in o.upper() or "KEY_ID" in o.upper() for o in args.storage_options)


def test_launcher_config_has_head_cpu_and_gpu_node_types(launcher):
    assert launcher["provider"]["type"] == "aws"
    types = launcher["available_node_types"]
    head = launcher["head_node_type"]
    assert head in types
    workers = {name: t for name, t in types.items() if name != head}
    assert len(workers) == 2
    for name, node_type in workers.items():
        assert 0 <= node_type["min_workers"] <= node_type["max_workers"], name
    assert sum(t["min_workers"] for t in workers.values()) <= launcher["max_workers"]
    instance = {name: t["node_config"]["InstanceType"] for name, t in workers.items()}
    gpu = [name for name, itype in instance.items() if itype.split(".")[0] in ("g4dn", "g5", "g6", "p3", "p4d", "p5")]
    assert len(gpu) == 1, instance
    assert instance[gpu[0]] == "g5.xlarge"
    # The same image on every node type.
    assert len({t["node_config"]["ImageId"] for t in types.values()}) == 1


def test_launcher_installs_vidsift_into_one_environment_on_every_node(launcher):
    setup = " ; ".join(launcher["setup_commands"])  # setup_commands run on the head AND every worker
    assert "git clone" in setup and "vidsift" in setup
    assert "pip install" in setup and "vidsift-env" in setup
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        start = " ; ".join(launcher[key])
        assert "vidsift-env/bin" in start and "ray start" in start  # `vidsift` on PATH of the job entrypoints
    assert "--dashboard-host=127.0.0.1" in " ".join(launcher["head_start_ray_commands"])
    text = (DEPLOY / "ray-cluster.yaml").read_text()
    assert "ray up deploy/ray-cluster.yaml" in text
    assert "ray dashboard deploy/ray-cluster.yaml" in text
    assert "ray job submit --address http://127.0.0.1:8265 --working-dir ." in text


def test_launcher_config_passes_rays_own_validation(launcher):
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(copy.deepcopy(launcher))  # what `ray up` does before touching AWS
    validate_config(prepared)
    assert prepared["available_node_types"][prepared["head_node_type"]]["max_workers"] == 0


def test_readme_explains_files_and_node_requirements():
    text = (DEPLOY / "README.md").read_text()
    for needle in ("kuberay-rayjob.yaml", "ray-cluster.yaml", "--storage-option", "same path",
                   "ray job submit", "pip install ."):
        assert needle in text, needle
