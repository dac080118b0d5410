"""The four core commands through the real `vidsift` CLI in subprocesses; indexing on local Ray
(`--address local`) against the default in-process pipeline."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from vidsift.pipeline.store import VideoStore
from tests.conftest import REPO, make_video, run_cli, writer_held_by_another_process

RANDOM = ["--model", "ViT-B-32", "--pretrained", "none"]


@pytest.fixture(scope="module")
def messy_folder(tmp_path_factory, small_archive):
    """Good videos plus a truncated video, a zero-byte file and a text file named .mp4."""
    root = tmp_path_factory.mktemp("messy")
    shutil.copytree(small_archive, root, dirs_exist_ok=True)
    make_video(root / "long.mp4", fps=24, durations=(6.0,), pairs=[("orange", "triangle")])
    good = (root / "long.mp4").read_bytes()
    (root / "truncated.mp4").write_bytes(good[: len(good) // 2])
    (root / "empty.mp4").write_bytes(b"")
    (root / "notes.mp4").write_text("this is not a video\n")
    (root / "README.txt").write_text("ignored: not a video extension\n")
    return root


def test_index_on_local_ray_records_failures_and_resumes(tmp_path, messy_folder):
    db = tmp_path / "db"
    result = run_cli("index", messy_folder, "--db", db, *RANDOM, "--fps", "2", "--segments", "fixed", "--json",
                     "--address", "local")
    assert result.returncode == 3, result.stderr  # completed with failures
    assert json.loads(result.stdout)["runner"] == "ray"
    report = json.loads(result.stdout)
    assert (report["total"], report["indexed"], report["failed"]) == (7, 4, 3)
    reasons = {f["path"].rsplit("/", 1)[-1]: f for f in report["failures"]}
    assert set(reasons) == {"truncated.mp4", "empty.mp4", "notes.mp4"}
    assert "0 bytes" in reasons["empty.mp4"]["reason"]
    assert all(f["reason"] and f["stage"] for f in report["failures"])

    status = run_cli("status", "--db", db, "--json")
    assert status.returncode == 0
    state = json.loads(status.stdout)
    assert state["models"][0]["videos"] == 4 and state["models"][0]["model"] == "ViT-B-32|random"
    assert {f["path"].rsplit("/", 1)[-1] for f in state["failures"]} == set(reasons)
    human = run_cli("status", "--db", db)
    assert "truncated.mp4" in human.stdout and "0 bytes" in human.stdout

    # Resume: nothing new is decoded; the good videos are skipped, the bad ones fail again.
    again = run_cli("index", messy_folder, "--db", db, *RANDOM, "--fps", "2", "--segments", "fixed", "--json",
                    "--address", "local")
    report = json.loads(again.stdout)
    assert (report["indexed"], report["skipped"], report["failed"]) == (0, 4, 3)
    store = VideoStore(str(db))
    assert store.summary()[0]["segments"] == sum(1 for _ in store.model(
        store.archive_models()[0]).segments().to_arrow().column("segment_id").unique())

    # The Ray job and the default in-process pipeline store the same vectors.
    local_db = tmp_path / "local"
    local = run_cli("index", messy_folder, "--db", local_db, *RANDOM, "--fps", "2", "--segments", "fixed", "--no-ray", "--json")
    assert local.returncode == 3
    ray_rows = {r["segment_id"]: r for r in store.model(store.archive_models()[0]).segments().to_arrow().to_pylist()}
    other = VideoStore(str(local_db))
    local_rows = {r["segment_id"]: r for r in other.model(other.archive_models()[0]).segments().to_arrow().to_pylist()}
    assert ray_rows.keys() == local_rows.keys()
    for key, row in ray_rows.items():
        assert (row["start"], row["end"], row["n_frames"]) == (local_rows[key]["start"], local_rows[key]["end"],
                                                                 local_rows[key]["n_frames"])
        assert np.dot(row["vector"], local_rows[key]["vector"]) > 0.9999

    search = run_cli("search", "an orange triangle", "--db", db, *RANDOM, "-k", "3", "--json",
                     "--thumbnails", tmp_path / "thumbs")
    assert search.returncode == 0, search.stderr
    results = json.loads(search.stdout)["results"]
    assert len(results) == 3
    assert [r["rank"] for r in results] == [1, 2, 3]
    assert results[0]["score"] >= results[1]["score"] >= results[2]["score"]
    assert all(r["end"] > r["start"] >= 0 for r in results)
    assert all((tmp_path / "thumbs").joinpath(r["thumbnail_file"].rsplit("/", 1)[-1]).stat().st_size > 100
               for r in results)
    per_video = json.loads(run_cli("search", "x", "--db", db, *RANDOM, "--per-video", "--json").stdout)
    assert len({r["video_id"] for r in per_video["results"]}) == len(per_video["results"]) == 4


def test_classify_cli(tmp_path):
    clip = tmp_path / "clip.mp4"
    make_video(clip, fps=25, durations=(3.0, 3.0))
    labels = tmp_path / "labels.txt"
    labels.write_text("# shapes\na red circle\na blue square\n\nan orange star\n")
    result = run_cli("classify", clip, "--labels-file", labels, *RANDOM, "--segments", "fixed", "--window", "3", "--per-segment",
                     "--json", "--template", "a photo of {}.", "--template", "{}")
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert {r["label"] for r in out["labels"]} == {"a red circle", "a blue square", "an orange star"}
    assert sum(r["probability"] for r in out["labels"]) == pytest.approx(1.0, abs=1e-4)
    assert [(s["start"], s["end"]) for s in out["segments"]] == [(0.0, 3.0), (3.0, 6.0)]
    assert out["templates"] == ["a photo of {}.", "{}"]
    human = run_cli("classify", clip, "--labels", "a red circle,a blue square", *RANDOM)
    assert human.returncode == 0 and "a red circle" in human.stdout


@pytest.fixture(scope="module")
def indexed_clip(tmp_path_factory):
    folder = tmp_path_factory.mktemp("one")
    clip = folder / "clip.mp4"
    make_video(clip, fps=10, durations=(2.0,))
    db = folder / "db"
    assert run_cli("index", clip, "--db", db, *RANDOM, "--no-ray").returncode == 0
    return clip, db


@pytest.mark.parametrize("args,code,needle", [
    (["search", "", *RANDOM], 2, "query is empty"),
    (["search", "cats", *RANDOM, "-k", "0"], 2, "k must be"),
    (["classify", "/nonexistent/clip.mp4", "--labels", "a,b", *RANDOM], 1, "/nonexistent/clip.mp4"),
    (["classify", "CLIP", "--labels-file", "/nonexistent/labels.txt", *RANDOM], 2, "labels.txt"),
    (["index", "/nonexistent/folder", *RANDOM], 2, "/nonexistent/folder"),
    (["index", "FOLDER", *RANDOM, "--fps", "-3"], 2, "--fps"),
    (["index", "FOLDER", *RANDOM, "--window", "0"], 2, "--window"),
    (["index", "FOLDER", *RANDOM, "--embed-threads", "0"], 2, "--embed-threads"),
])
def test_bad_arguments_get_one_clear_line(indexed_clip, args, code, needle):
    clip, db = indexed_clip
    args = [str(clip) if a == "CLIP" else str(clip.parent) if a == "FOLDER" else a for a in args]
    result = run_cli(*args, "--db", db)
    assert result.returncode == code, result.stderr
    assert needle in result.stderr
    assert "Traceback" not in result.stderr


def test_unreachable_weights_fail_fast_naming_the_offline_options(tmp_path):
    result = run_cli("search", "a dog", "--db", tmp_path / "db", timeout=120)
    assert result.returncode == 2 and "Nothing is indexed" in result.stderr  # checked before loading
    clip = tmp_path / "clip.mp4"
    make_video(clip, fps=10, durations=(2.0,))
    result = run_cli("classify", clip, "--labels", "a,b", "--model", "ViT-B-32", "--pretrained",
                     "laion2b_s34b_b79k", env={"HF_HUB_OFFLINE": "1"}, timeout=120)
    assert result.returncode == 1
    message = result.stderr
    assert "ViT-B-32" in message and "laion2b_s34b_b79k" in message
    assert "shapes-tiny" in message and "--pretrained none" in message
    assert "Traceback" not in message


def test_no_refine_cuts_leaves_cuts_midway_between_samples(tmp_path):
    """`--no-refine-cuts` skips the decoding around each cut: the segments then start midway
    between the two sampled frames around each cut, instead of on the exact frame."""
    from vidsift.models.spec import resolve_spec

    path = tmp_path / "three.mp4"
    entry = make_video(path, fps=25, durations=(4.0, 6.0, 3.0), size=(320, 240))
    starts = {}
    for flag in ([], ["--no-refine-cuts"]):
        db = tmp_path / f"db{len(flag)}"
        result = run_cli("index", path, "--db", db, *RANDOM, "--fps", "2", "--no-ray", "--json", *flag)
        assert result.returncode == 0, result.stderr
        table = VideoStore(str(db)).model(resolve_spec("ViT-B-32", "none")).segments()
        starts[bool(flag)] = sorted(r["start"] for r in table.to_arrow().to_pylist())
    truth = [s["start"] for s in entry["scenes"]]
    assert starts[False] == pytest.approx(truth, abs=1 / 25 + 1e-6)  # refined: on the frame
    assert starts[True] == pytest.approx([0.0, 3.74, 9.74], abs=0.011)  # midway between the samples


def test_a_second_index_job_on_a_busy_database_stops_with_one_line(tmp_path):
    """While another job holds the database, `vidsift index` exits 1 at once with a message that
    says so (no traceback), and writes nothing."""
    path = tmp_path / "v.mp4"
    make_video(path, fps=10, durations=(2.0,))
    db = tmp_path / "db"
    with writer_held_by_another_process(db):
        result = run_cli("index", path, "--db", db, *RANDOM, "--no-ray")
    assert result.returncode == 1
    assert "being written by another vidsift indexing job (pid" in result.stderr
    assert "Traceback" not in result.stderr
    assert VideoStore(str(db)).summary() == []


# ---- issue 16 -----------------------------------------------------------------------------------
def _main_in_process(argv, capfd):
    """`app.cli.main` in this process (no subprocess start-up): status, stdout, stderr lines."""
    from vidsift.app.cli import main

    code = main([str(a) for a in argv])
    out, err = capfd.readouterr()
    return code, out, [line for line in err.splitlines() if line.strip()]


@pytest.mark.parametrize("argv,needle", [
    (["index", "IN", "--num-cpus", "0"], "--num-cpus must be at least 1"),
    (["index", "IN", "--num-cpus", "0", "--no-ray"], "--num-cpus must be at least 1"),
    (["index", "IN", "--embed-workers", "0"], "--embed-workers must be at least 1"),
    (["index", "IN", "--batch-size", "0"], "--batch-size"),
    (["index", "IN", "--attempts", "-1"], "--attempts"),
    (["index", "IN", "--video-timeout", "nan"], "--video-timeout"),
    (["index", "IN", "--fps", "inf"], "--fps must be above 0"),
    (["index", "IN", "--frames", "0"], "--frames"),
    (["index", "IN", "--min-scene", "nan"], "--min-scene"),
    (["index", "IN", "--cut-threshold", "2.5"], "--cut-threshold"),
    (["search", "x", "-k", "100001"], "-k/--top-k"),
    (["classify", "c.mp4", "--labels", "a", "--top", "0"], "--top"),
    (["train", "DATA", "--out", "o", "--warmup-steps", "-5"], "--warmup-steps"),
    (["train", "DATA", "--out", "o", "--lr", "nan"], "--lr"),
    (["synth", "o", "--scenes", "0"], "--scenes"),
    (["synth", "o", "--max-size", "-1"], "--max-size"),
    (["app", "--port", "70000"], "--port"),
    (["app", "--concurrency", "0"], "--concurrency"),
    (["app", "--max-upload-mb", "0"], "--max-upload-mb"),
    (["demo", "--videos", "0"], "--videos"),
    (["index", "IN", "--num-cpus", "abc"], "argument --num-cpus: invalid int value: 'abc'"),
])
def test_every_numeric_flag_is_checked_at_once_with_one_line(tmp_path, capfd, argv, needle):
    """`--num-cpus 0` hung forever in Ray, `--embed-workers 0` was taken as 1 (and named
    --embed-actors), `--no-ray` checked none of them; argparse's own errors came with a usage
    dump. Every numeric flag of every command is refused before any work, in one line, exit 2."""
    argv = [str(tmp_path) if a == "IN" else a for a in argv]
    code, out, err = _main_in_process([*argv, *(["--db", tmp_path / "db"] if argv[0] in ("index", "search") else [])],
                                      capfd) if argv[-1] != "abc" else _parse_error(argv, capfd)
    assert code == 2
    assert len(err) == 1 and needle in err[0], err
    assert not (tmp_path / "db").exists()


def _parse_error(argv, capfd):
    from vidsift.app.cli import main

    with pytest.raises(SystemExit) as caught:
        main(argv)
    out, err = capfd.readouterr()
    return caught.value.code, out, [line for line in err.splitlines() if line.strip()]


def test_a_filter_that_does_not_parse_completely_is_refused(indexed_clip):
    clip, db = indexed_clip
    assert run_cli("search", "x", "--db", db, *RANDOM, "--where", f"path LIKE '%{clip.name}%'",
                   "--json").returncode == 0
    for where in ("path LIKE '%00003%' garbage", "1=1; DROP TABLE x"):
        result = run_cli("search", "x", "--db", db, *RANDOM, "--where", where)
        assert result.returncode == 2, result.stdout
        (line,) = result.stderr.strip().splitlines()
        assert line.startswith("vidsift search: error: Bad filter") and result.stdout == ""


def test_a_busy_database_is_refused_before_anything_slow_is_loaded(tmp_path):
    """The refusal came after Ray, torch and the model had started (26 s under load): now the
    lock comes first, and the refused command never imports them."""
    clip = tmp_path / "v.mp4"
    make_video(clip, fps=10, durations=(2.0,))
    db = tmp_path / "db"
    probe = ("import sys\nfrom app.cli import main\n"
             f"code = main(['index', {str(clip)!r}, '--db', {str(db)!r}, '--model', 'shapes-tiny'{{}}])\n"
             "print(code, sorted(m for m in ('torch', 'ray', 'lancedb', 'open_clip', 'decord') if m in sys.modules))")
    with writer_held_by_another_process(db):
        for extra in ("", ", '--no-ray'"):
            result = subprocess.run([sys.executable, "-c", probe.format(extra)], cwd=REPO, capture_output=True,
                                    text=True, timeout=120)
            assert result.stdout.split("\n")[0] == "1 []", result.stdout + result.stderr
            assert "being written by another vidsift indexing job" in result.stderr


def test_library_noise_goes_to_a_log_unless_verbose(tmp_path):
    """What libraries print (native code on fd 2, warnings, logging) is kept off the terminal;
    vidsift's own lines stay; --verbose shows everything; a failure keeps and names the log."""
    script = ("import logging, os, sys, warnings\nimport app.cli as cli\n"
              "def noisy(args):\n"
              "    os.write(2, b'E core_worker.cc:2465 native noise\\n')\n"
              "    warnings.warn('lance is not fork-safe')\n"
              "    logging.warning(\"No pretrained weights loaded for model 'x'\")\n"
              "    print('vidsift status: our own line', file=sys.stderr)\n"
              "    if os.environ.get('FAIL'):\n"
              "        raise RuntimeError('boom')\n"
              "    return 0\n"
              "cli.COMMANDS['status'] = noisy\n"
              f"sys.exit(cli.main(['status', '--db', {str(tmp_path)!r}, *sys.argv[1:]]))\n")
    quiet = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True)
    assert quiet.returncode == 0 and quiet.stderr == "vidsift status: our own line\n"
    loud = subprocess.run([sys.executable, "-c", script, "--verbose"], cwd=REPO, capture_output=True, text=True)
    assert loud.returncode == 0
    for noise in ("native noise", "fork-safe", "No pretrained weights", "our own line"):
        assert noise in loud.stderr
    failed = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True,
                            env={**os.environ, "FAIL": "1"})
    assert failed.returncode == 1
    lines = failed.stderr.splitlines()
    assert lines[0] == "vidsift status: our own line" and len(lines) == 2
    assert lines[1].startswith("vidsift status: failed: RuntimeError: boom") and "(details: " in lines[1]
    log = lines[1].rsplit("(details: ", 1)[1].rstrip(")")
    assert "native noise" in Path(log).read_text()
    os.unlink(log)


def test_no_ray_symbolic_link_loop_is_recorded_and_the_real_video_indexed(tmp_path):
    folder = tmp_path / "in"
    make_video(folder / "real.mp4", fps=10, durations=(2.0,))
    (folder / "a.mp4").symlink_to(folder / "b.mp4")
    (folder / "b.mp4").symlink_to(folder / "a.mp4")
    (folder / "dangling.mp4").symlink_to(folder / "nowhere.mp4")
    result = run_cli("index", folder, "--db", tmp_path / "db", "--model", "shapes-tiny", "--no-ray", "--json")
    assert result.returncode == 3, result.stderr
    report = json.loads(result.stdout)
    assert report["indexed"] == 1
    assert {f["path"]: f["reason"] for f in report["failures"]} == {
        str(folder / "a.mp4"): "symbolic link loop", str(folder / "b.mp4"): "symbolic link loop",
        str(folder / "dangling.mp4"): "broken symbolic link"}
    assert result.stderr == ""
