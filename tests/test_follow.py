"""The archive follows the folder (issue 19): `index --prune` removes the rows of deleted files,
`index --watch` indexes files once they stop changing and prunes deleted ones, and each scan of a
folder is recorded for the Library.

Function-level tests drive ``pipeline.follow`` with synthetic rows (two models) and a fake clock;
one uses a real background process writing a video slowly and the bundled shapes-tiny model. The
CLI tests at the end need the index command wired to ``app.commands.follow``."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from vidsift.pipeline.follow import FolderUnreachable, prune, scan_once
from vidsift.pipeline.watch import Follower, Settler, WatchConfig
from vidsift.pipeline.scans import ScanCounts, last_scans, record_scan
from vidsift.pipeline.storage import ListedFile
from vidsift.pipeline.model_store import ModelRef
from vidsift.pipeline.records import FrameRows, SegmentRow, VideoRecord
from vidsift.pipeline.store import VideoStore
from tests.conftest import REPO, make_video

MODELS = {"alpha|random": "alpha_random_000001", "beta|random": "beta_random_000002"}
DIM = 8


def _ref(key: str) -> ModelRef:
    return ModelRef(key, MODELS[key])


def _record(path: Path, video_id: str) -> VideoRecord:
    st = path.stat() if path.exists() else None
    vec = np.ones(DIM, np.float32) / np.sqrt(DIM)
    return VideoRecord(
        video_id=video_id, path=str(path), size_bytes=st.st_size if st else 1, mtime_ns=st.st_mtime_ns if st else 1,
        duration=2.0, fps=10.0, width=160, height=120, n_frames=2, settings="{}", vector=vec,
        segments=[SegmentRow(0.0, 1.0, 1, b"t", vec), SegmentRow(1.0, 2.0, 1, b"t", vec)],
        frames=FrameRows(np.array([0.5, 1.5]), np.stack([vec, vec]), [b"t", b"t"]))


def _store_with(db: Path, paths_by_model: dict[str, list[Path]]) -> VideoStore:
    store = VideoStore(str(db))
    for key, paths in paths_by_model.items():
        records = [_record(p, f"id-{p.name}-{p.parent.name}") for p in paths]
        store.model(_ref(key)).write_videos(records, new_ids={r.video_id for r in records})
    return store


def _paths(store: VideoStore, key: str) -> dict[str, set[str]]:
    """Per table of model ``key``: the paths (videos, segments) or video ids (frames) it holds."""
    tables = store.model(_ref(key))
    return {"videos": {r["path"] for r in tables.video_rows(["path"])},
            "segments": set(tables.segments().to_arrow().column("path").to_pylist()),
            "frames": set(tables.frames().to_arrow().column("video_id").to_pylist())}


def _touch(path: Path, data: bytes = b"not decoded by these tests") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


@pytest.fixture
def archive(tmp_path):
    """Folder ``videos`` (a.mp4, b.mp4, sub/c.mp4, clip.bin named by a list), its sibling
    ``videos2`` (same prefix!) and ``other``; model alpha holds them all, beta some."""
    v = tmp_path / "videos"
    files = {name: _touch(tmp_path / name) for name in
             ("videos/a.mp4", "videos/b.mp4", "videos/sub/c.mp4", "videos/clip.bin", "videos2/d.mp4", "other/e.mp4")}
    store = _store_with(tmp_path / "db", {"alpha|random": list(files.values()),
                                          "beta|random": [files["videos/a.mp4"], files["videos/sub/c.mp4"],
                                                          files["videos2/d.mp4"]]})
    return store, v, files


def test_prune_removes_only_files_gone_under_path_for_every_model(archive):
    store, folder, files = archive
    from vidsift.pipeline.records import Failure

    store.record_failures("alpha|random", [Failure(str(folder / "broken.mp4"), "decode", "bad"),
                                           Failure(str(files["videos/b.mp4"]), "decode", "bad")])
    for name in ("videos/a.mp4", "videos/sub/c.mp4", "videos2/d.mp4", "other/e.mp4"):
        files[name].unlink()  # gone: two under the folder, two outside it (one in a look-alike sibling)
    report = prune(store, [str(folder)])
    gone = {str(files["videos/a.mp4"]), str(files["videos/sub/c.mp4"])}
    assert report.removed == {"alpha|random": sorted(gone), "beta|random": sorted(gone)}
    assert report.failures_cleared == {"alpha|random": [str(folder / "broken.mp4")]}
    kept_alpha = {str(files[n]) for n in ("videos/b.mp4", "videos/clip.bin", "videos2/d.mp4", "other/e.mp4")}
    alpha = _paths(store, "alpha|random")
    assert alpha["videos"] == alpha["segments"] == kept_alpha  # clip.bin exists though it is no video name
    assert len(alpha["frames"]) == 4
    beta = _paths(store, "beta|random")
    assert beta["videos"] == beta["segments"] == {str(files["videos2/d.mp4"])} and len(beta["frames"]) == 1
    assert {f["path"] for f in store.failures()} == {str(files["videos/b.mp4"])}  # exists: its failure stays
    again = prune(store, [str(folder)])
    assert again.removed == {} and again.failures_cleared == {}


def test_prune_refuses_a_missing_unreadable_or_emptied_folder(archive, tmp_path):
    store, folder, files = archive
    before = {key: _paths(store, key) for key in MODELS}
    with pytest.raises(FolderUnreachable, match=r"nowhere: no such folder"):
        prune(store, [str(tmp_path / "nowhere"), str(folder)])  # checked before anything is deleted
    mounted = tmp_path / "mnt"
    shutil.move(str(folder), str(mounted))
    folder.mkdir()  # an unmounted drive: its mount point, empty
    with pytest.raises(FolderUnreachable, match=r"the folder is empty but the archive holds 4 videos under it"):
        prune(store, [str(folder)])
    assert {key: _paths(store, key) for key in MODELS} == before
    if os.geteuid() != 0:  # root reads any folder
        folder.chmod(0)
        with pytest.raises(FolderUnreachable, match="cannot be read"):
            prune(store, [str(folder)])
        folder.chmod(0o755)
    report = prune(store, [str(folder)], allow_empty=True)  # the files really are gone
    assert len(report.removed["alpha|random"]) == 4 and len(report.removed["beta|random"]) == 2


def test_prune_of_one_file_and_of_a_list_file(archive, tmp_path):
    store, folder, files = archive
    files["videos/a.mp4"].unlink()
    files["videos/b.mp4"].unlink()
    listing = tmp_path / "some.txt"
    listing.write_text("videos/b.mp4\nvideos/clip.bin\n")
    report = prune(store, [str(files["videos/a.mp4"]), str(listing)])
    assert report.paths() == [str(files["videos/a.mp4"]), str(files["videos/b.mp4"])]
    with pytest.raises(FolderUnreachable, match="its folder .* does not exist"):
        prune(store, [str(tmp_path / "gone" / "x.mp4")])


def test_a_crash_between_deletes_leaves_only_orphans_that_the_next_job_clears(archive, monkeypatch):
    store, folder, files = archive
    files["videos/a.mp4"].unlink()
    calls = []
    real = VideoStore.delete_rows

    def crash_after_first(self, table, where):
        calls.append(table.name)
        real(self, table, where)
        raise RuntimeError("power cut")

    monkeypatch.setattr(VideoStore, "delete_rows", crash_after_first)
    with pytest.raises(RuntimeError, match="power cut"):
        prune(store, [str(folder)])
    monkeypatch.undo()
    assert calls[0].startswith("videos_")  # the "done" marker went first
    assert str(files["videos/a.mp4"]) not in _paths(store, "alpha|random")["videos"]
    assert str(files["videos/a.mp4"]) in _paths(store, "alpha|random")["segments"]  # orphans...
    assert store.model(_ref("alpha|random")).clear_orphans() == 2  # ...which the next job clears (segments + frames of one video)
    assert str(files["videos/a.mp4"]) not in _paths(store, "alpha|random")["segments"]


def test_settler_waits_for_size_and_mtime_to_stay_the_same():
    settler = Settler(settle_s=5)

    def seen(size, mtime, now):
        return settler.observe([ListedFile("/v/a.mp4", size, mtime)], now)

    assert seen(10, 1, 0.0) == ([], [])
    ready, changing = seen(20, 2, 1.0)
    assert ready == [] and [f.path for f in changing] == ["/v/a.mp4"]  # growing: said once
    assert seen(30, 3, 2.0) == ([], [])
    assert seen(30, 4, 6.5) == ([], [])  # same size, newer mtime: written again, the clock restarts
    assert seen(30, 4, 11.0) == ([], [])
    assert [f.size_bytes for f in seen(30, 4, 11.5)[0]] == [30]


class FakeIndexer:
    """``index_once`` that stores synthetic rows for model alpha (a file named bad*.mp4 fails)."""

    def __init__(self, store):
        self.store, self.calls = store, []

    def __call__(self, paths):
        from vidsift.pipeline.indexing import JobReport
        from vidsift.pipeline.storage import list_inputs
        from vidsift.pipeline.records import Failure

        self.calls.append(list(paths))
        listed = list_inputs(list(paths))
        known = self.store.model(_ref("alpha|random")).indexed_files()
        report = JobReport(total=len(listed))
        todo = [f for f in listed if (known.get(f.path, {}).get("size_bytes"), known.get(f.path, {}).get("mtime_ns"))
                != (f.size_bytes, f.mtime_ns)]
        report.skipped = len(listed) - len(todo)
        report.failures = [Failure(f.path, "decode", "not a video") for f in todo if Path(f.path).name.startswith("bad")]
        records = [_record(Path(f.path), f"id-{Path(f.path).name}-{f.size_bytes}") for f in todo
                   if not Path(f.path).name.startswith("bad")]
        self.store.model(_ref("alpha|random")).write_videos(records)
        report.indexed = len(records)
        return report


def test_watch_indexes_settled_files_once_prunes_deletions_and_records_scans(tmp_path):
    folder = tmp_path / "videos"
    old = _touch(folder / "old.mp4")
    store = _store_with(tmp_path / "db", {"alpha|random": [old], "beta|random": [old]})
    indexer, actions, now = FakeIndexer(store), [], [0.0]
    follower = Follower(store, [str(folder)], _ref("alpha|random"), indexer,
                        WatchConfig(settle_s=5, poll_s=1, record_every_s=60), clock=lambda: now[0],
                        on_action=actions.append)

    def tick(at):
        now[0] = at
        follower.tick()
        said = [(a.action, Path(a.path).name) for a in actions]
        actions.clear()
        return said

    assert tick(0) == []  # old.mp4 is stored already: nothing to do
    new = _touch(folder / "new.mp4", b"x" * 10)
    assert tick(1) == []
    with open(new, "ab") as fh:
        fh.write(b"x" * 10)
    assert tick(2) == [("waiting", "new.mp4")]
    assert tick(6.9) == [] and indexer.calls == []  # unchanged since 2 s: not yet settled
    _touch(folder / "bad.mp4")
    assert sorted(tick(7)) == [("added", "new.mp4")]
    assert indexer.calls == [[str(new)]]
    assert tick(13) == [("failed", "bad.mp4")]
    assert tick(20) == [] and len(indexer.calls) == 2  # a failed file is not retried until it changes
    new.write_bytes(b"y" * 50)  # rewritten in place
    assert tick(21) == [] and tick(27) == [("changed", "new.mp4")]
    old.unlink()
    assert tick(28) == [("removed", "old.mp4")]
    assert actions == [] and str(old) not in _paths(store, "beta|random")["videos"]  # every model
    scans = last_scans(store)
    assert [(s["folder"], s["model"], s["kind"]) for s in scans] == [(str(folder), "alpha|random", "watch")]
    assert (scans[0]["removed"], scans[0]["added"]) == (1, 0)  # the last record: since the one before


def test_watch_does_not_prune_a_folder_that_went_away(tmp_path):
    folder = tmp_path / "videos"
    kept = _touch(folder / "a.mp4")
    store = _store_with(tmp_path / "db", {"alpha|random": [kept]})
    actions = []
    follower = Follower(store, [str(folder)], _ref("alpha|random"), FakeIndexer(store),
                        WatchConfig(settle_s=1), clock=lambda: 0.0, on_action=actions.append)
    follower.tick()
    folder.rename(tmp_path / "elsewhere")  # unmounted
    follower.tick()
    folder.mkdir()  # the empty mount point
    follower.tick()
    assert [a.action for a in actions] == ["unreachable"] and "no such folder" in actions[0].detail
    assert _paths(store, "alpha|random")["videos"] == {str(kept)}
    folder.rmdir()
    (tmp_path / "elsewhere").rename(folder)
    follower.tick()
    assert [a.action for a in actions] == ["unreachable", "reachable"]
    assert _paths(store, "alpha|random")["videos"] == {str(kept)}


def test_watch_picks_up_a_file_written_slowly_by_another_process_only_once_complete(tmp_path):
    """A real writer (another process) copies a video in pieces, pausing between them for longer
    than the watch takes between listings; the watch, on the real clock with the bundled
    shapes-tiny model, indexes it only after the copy ended, in full."""
    from vidsift.models.encoder import ClipEncoder
    from vidsift.models.spec import resolve_spec
    from vidsift.pipeline.config import IndexConfig, SamplingConfig, SegmentConfig
    from vidsift.pipeline.indexing import index_sequential

    source = tmp_path / "source.mp4"
    make_video(source, fps=10, durations=(2.0,))
    folder, target = tmp_path / "videos", tmp_path / "videos" / "copy.mp4"
    folder.mkdir()
    store = VideoStore(str(tmp_path / "db"))
    encoder = ClipEncoder.from_spec(resolve_spec("shapes-tiny"))
    config = IndexConfig(sampling=SamplingConfig(fps=2.0), segments=SegmentConfig(mode="fixed", window_s=1.0))
    seen_at_call = []

    def index_once(paths):
        seen_at_call.append((list(paths), writer.poll(), os.path.getsize(target)))
        return index_sequential(store, encoder, paths, config)

    follower = Follower(store, [str(folder)], encoder.spec, index_once,
                        WatchConfig(settle_s=3, poll_s=0.1))
    writer = subprocess.Popen([sys.executable, "-c", (
        "import sys, time\ndata = open(sys.argv[1], 'rb').read()\nwith open(sys.argv[2], 'wb') as out:\n"
        "    for i in range(0, len(data), 1024):\n        out.write(data[i:i + 1024]); out.flush(); time.sleep(0.4)\n"),
        str(source), str(target)])
    try:
        deadline = time.monotonic() + 120
        while not seen_at_call and time.monotonic() < deadline:
            follower.tick()
            time.sleep(0.1)
    finally:
        writer.kill()
        writer.wait()
    assert seen_at_call, "the watch never indexed the copied file"
    (paths, writer_status, size), = seen_at_call
    assert paths == [str(target)] and writer_status == 0 and size == source.stat().st_size
    (row,) = store.model(encoder.spec).video_rows(["path", "duration", "size_bytes"])
    assert row["path"] == str(target) and row["size_bytes"] == source.stat().st_size
    assert row["duration"] == pytest.approx(2.0, abs=0.15)


def test_scan_records_keep_the_last_scan_of_each_folder(tmp_path):
    store = VideoStore(str(tmp_path / "db"))
    assert last_scans(store) == []
    import datetime as dt

    t0 = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.timezone.utc)
    record_scan(store, "/v", "alpha|random", ScanCounts(added=3), "index", at=t0)
    record_scan(store, "/v", "alpha|random", ScanCounts(removed=1), "prune", at=t0 + dt.timedelta(minutes=5))
    record_scan(store, "/v", "beta|random", ScanCounts(added=2), "index", at=t0 + dt.timedelta(minutes=1))
    record_scan(store, "/w", "alpha|random", ScanCounts(failed=1), "watch", at=t0 + dt.timedelta(minutes=2))
    scans = last_scans(store)
    assert [(s["folder"], s["model"], s["kind"], s["removed"], s["failed"]) for s in scans] == [
        ("/v", "alpha|random", "prune", 1, 0), ("/w", "alpha|random", "watch", 0, 1)]
    assert scans[0]["scanned_at"] == t0 + dt.timedelta(minutes=5)
    assert [s["added"] for s in last_scans(store, "beta|random")] == [2]
    assert store.db.open_table("folder_scans").count_rows() == 3  # one row per folder and model
    assert store.models() == []  # no model table was made


def test_scan_once_prunes_first_then_indexes_and_records(archive, tmp_path):
    store, folder, files = archive
    files["videos/b.mp4"].unlink()
    fresh = _touch(folder / "fresh.mp4")
    indexer = FakeIndexer(store)
    report, pruned, scans = scan_once(store, [str(folder)], _ref("alpha|random"), indexer,
                                      prune_first=True)
    assert indexer.calls == [[str(folder)]]  # the folder, listed by the indexer as usual
    assert pruned.paths() == [str(files["videos/b.mp4"])] and report.indexed == 1
    assert scans == {str(folder): ScanCounts(added=1, changed=0, removed=1, failed=0)}
    (scan,) = last_scans(store)
    assert (scan["folder"], scan["kind"], scan["added"], scan["removed"]) == (str(folder), "prune", 1, 1)
    assert str(fresh) in _paths(store, "alpha|random")["videos"]
    gone = str(files["videos/b.mp4"])  # a deleted file named by itself: pruned, not handed on to fail
    scan_once(store, [gone], _ref("alpha|random"), indexer, prune_first=True)
    assert indexer.calls[-1] == [] and gone not in {f["path"] for f in store.failures()}


# ---- through the CLI (needs `vidsift index` wired to app.commands.follow) ----------------------------
TINY = ["--model", "shapes-tiny", "--no-ray", "--fps", "2", "--segments", "fixed", "--window", "1"]


def _main(argv, capfd):
    from vidsift.app.cli import main

    code = main([str(a) for a in argv])
    out, err = capfd.readouterr()
    return code, out, [line for line in err.splitlines() if line.strip()]


def test_cli_index_prune_removes_deleted_files_from_results(tmp_path, capfd):
    folder, db = tmp_path / "videos", tmp_path / "db"
    make_video(folder / "a.mp4", fps=10, durations=(2.0,))
    make_video(folder / "b.mp4", fps=10, durations=(2.0,), pairs=[("green", "square")])
    code, out, err = _main(["index", folder, "--db", db, *TINY, "--json"], capfd)
    assert code == 0, err
    (folder / "b.mp4").unlink()
    code, out, err = _main(["index", folder, "--db", db, *TINY, "--prune", "--json"], capfd)
    assert code == 0, err
    payload = json.loads(out)
    assert payload["pruned"]["removed"] == [{"path": str(folder / "b.mp4"), "models": [payload["model"]]}]
    code, out, err = _main(["search", "a green square", "--db", db, "--model", "shapes-tiny", "--json"], capfd)
    assert code == 0 and {r["path"] for r in json.loads(out)["results"]} == {str(folder / "a.mp4")}
    code, out, err = _main(["index", folder, "--db", db, *TINY, "--prune"], capfd)
    assert code == 0 and "pruned 0 deleted videos" in out
    assert last_scans(VideoStore(str(db)))[0]["folder"] == str(folder)


def test_cli_prune_refuses_a_missing_folder_in_one_line(tmp_path, capfd):
    code, out, err = _main(["index", tmp_path / "unmounted", "--db", tmp_path / "db", *TINY, "--prune"], capfd)
    assert code == 2 and len(err) == 1 and "unmounted: no such folder" in err[0]
    code, out, err = _main(["index", tmp_path, "--db", tmp_path / "db", *TINY, "--watch", "--settle", "0"], capfd)
    assert code == 2 and len(err) == 1 and "--settle must be at least 0.5" in err[0]


def test_cli_watch_indexes_a_slow_copy_prunes_a_deletion_and_stops_on_sigterm(tmp_path):
    folder, db = tmp_path / "videos", tmp_path / "db"
    make_video(folder / "a.mp4", fps=10, durations=(2.0,))
    source = tmp_path / "source.mp4"
    make_video(source, fps=10, durations=(2.0,), pairs=[("green", "square")])
    watcher = subprocess.Popen([sys.executable, "-m", "vidsift.app.cli", "index", str(folder), "--db", str(db), *TINY,
                                "--watch", "--settle", "3", "--poll", "0.2", "--json"],
                               cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def next_action(*wanted):
        while True:
            line = watcher.stdout.readline()
            assert line, f"the watch ended: {watcher.stderr.read()}"
            event = json.loads(line)
            if event["action"] in wanted:
                return event["action"], Path(event["path"]).name

    try:
        assert next_action("watching")[0] == "watching"
        assert next_action("added", "failed") == ("added", "a.mp4")
        copier = subprocess.run([sys.executable, "-c", (
            "import sys, time\ndata = open(sys.argv[1], 'rb').read()\nwith open(sys.argv[2], 'wb') as out:\n"
            "    for i in range(0, len(data), 1024):\n        out.write(data[i:i + 1024]); out.flush(); time.sleep(0.4)\n"),
            str(source), str(folder / "copy.mp4")], timeout=60)
        assert copier.returncode == 0
        assert next_action("added", "failed") == ("added", "copy.mp4")  # never "failed": not read half-written
        (folder / "a.mp4").unlink()
        assert next_action("removed") == ("removed", "a.mp4")
        watcher.send_signal(signal.SIGTERM)
        assert next_action("stopped") == ("stopped", "videos")
        assert watcher.wait(timeout=60) == 0
    finally:
        if watcher.poll() is None:
            watcher.kill()
            watcher.wait()
    store = VideoStore(str(db))
    (model,) = store.archive_models()
    assert {r["path"] for r in store.model(model).video_rows(["path"])} == {str(folder / "copy.mp4")}
