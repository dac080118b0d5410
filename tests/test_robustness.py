"""Issue 16, in-process: the same damaged file always gets the same answer in plain words; symbolic
links that lead nowhere never stop discovery; a user's filter is one whole expression, the app's
own filters are escaped; a signal never cuts a write in half; the writer lock is re-entrant for
its holder only."""
from __future__ import annotations

import re
import signal
import threading

import numpy as np
import pytest

import vidsift.pipeline.decode as decode
from vidsift.pipeline import interrupts
from vidsift.pipeline.config import IndexConfig
from vidsift.pipeline.decode import decode_video, plain_decoder_reason
from vidsift.pipeline.errors import InputError, Interrupted, StoreBusyError, VideoError
from vidsift.pipeline.frames import FrameTransform
from vidsift.pipeline.lock import writer_lock
from vidsift.pipeline.search_request import SearchFilters
from vidsift.pipeline.sources import discover, identify
from vidsift.pipeline.model_store import ModelRef
from vidsift.pipeline.records import SegmentRow, VideoRecord
from vidsift.pipeline.sql_filters import check_filter
from vidsift.pipeline.store import VideoStore
from tests.conftest import make_video

TRANSFORM = FrameTransform.from_preprocess_cfg({"size": 64, "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5),
                                                "interpolation": "bicubic", "resize_mode": "squash"})


@pytest.fixture(scope="module")
def truncated_avi(tmp_path_factory):
    """A 10 s MPEG-4 AVI cut to its first third (`head -c`): its index is gone."""
    folder = tmp_path_factory.mktemp("avi")
    whole = folder / "whole.avi"
    make_video(whole, fps=24, durations=(5.0, 5.0), container="avi", size=(320, 240))
    data = whole.read_bytes()
    (folder / "cut.avi").write_bytes(data[: len(data) // 3])
    return folder / "cut.avi"


def _outcome(path) -> str:
    try:
        info, chunks = decode_video(str(path), TRANSFORM, IndexConfig())
        return f"indexed {info.duration:.2f} s, {sum(len(c.times) for c in chunks)} frames"
    except VideoError as exc:
        return f"{exc.stage}: {exc.reason}"


def test_a_truncated_avi_always_gets_the_same_plain_failure(truncated_avi):
    outcomes = {_outcome(truncated_avi) for _ in range(12)}
    assert len(outcomes) == 1
    (outcome,) = outcomes
    assert outcome.startswith("decode: truncated or damaged: its video stops at 3.0 s but its header declares 10.0 s")
    assert not re.search(r"\d{5,}|\.cc:|Check failed", outcome)


class _FlakyReader:
    """What decord made of such a file, run to run: a single frame, or part of the video."""

    def __init__(self, frames: int):
        self.frames = frames

    def __len__(self):
        return self.frames

    def get_frame_timestamp(self, idx):
        idx = np.asarray(idx)
        return np.stack([idx / 24.0, (idx + 1) / 24.0], axis=1)

    def get_avg_fps(self):
        return 24.0

    def next(self):
        return np.zeros((240, 320, 3), np.uint8)

    def seek(self, _):
        pass

    def get_batch(self, idx):
        raise RuntimeError("[12:00:00] /github/workspace/src/video/video_reader.cc:563: Check failed: "
                           "av_read_frame failed with 1094995529")


@pytest.mark.parametrize("decord_does", ["raises its C++ text", "one frame", "2.5 s", "fails mid-way"])
def test_whatever_decord_makes_of_a_truncated_file_the_answer_is_the_same(truncated_avi, monkeypatch, decord_does):
    want = _outcome(truncated_avi)

    def fake_open(path, size=None):
        if decord_does == "raises its C++ text":
            raise VideoError(path, "open", decode._clean_decord_message(RuntimeError(
                "[12:00:00] /github/workspace/src/video/video_reader.cc:83: ERROR opening: x, Invalid data found")))
        return _FlakyReader({"one frame": 1, "2.5 s": 60, "fails mid-way": 240}[decord_does])

    monkeypatch.setattr(decode, "_open_decord", fake_open)
    assert _outcome(truncated_avi) == want


@pytest.mark.parametrize("raw,words", [
    ("av_read_frame failed with 1094995529", "not a readable video"),
    ("[09:01:02] /github/workspace/src/video/ffmpeg/threaded_decoder.cc:218: Check failed: "
     "avcodec_send_packet(dec_ctx_.get(), pkt.get()) >= 0 (-1094995529 vs. 0) Thread worker: Error sending packet.",
     "its video data is corrupt"),
    ("ERROR opening: /x.mp4, moov atom not found", "moov atom) is missing"),
    ("cannot find video stream with wanted index: -1", "no video stream"),
    ("something nobody expected 0xdeadbeef at src/x.cc:12", "the decoder cannot read it"),
])
def test_decoder_messages_become_words_without_codes_or_source_paths(raw, words):
    reason = plain_decoder_reason(raw)
    assert words in reason
    assert not re.search(r"\d{4,}|\.cc|0x|Check failed|workspace", reason)


def test_files_that_are_no_video_fail_before_decord_sees_them(tmp_path, monkeypatch):
    """decord prints `ERROR opening` on stderr for these before raising: it is never asked."""
    good = tmp_path / "good.mp4"
    make_video(good, fps=10, durations=(2.0,))
    data = good.read_bytes()
    (tmp_path / "cut.mp4").write_bytes(data[: len(data) // 2])  # MP4: its index (moov) comes last
    (tmp_path / "text.mp4").write_text("not a video\n" * 50)
    called = []
    monkeypatch.setattr(decode, "_open_decord", lambda path, size=None: called.append(path))
    assert _outcome(tmp_path / "cut.mp4") == ("open: its MP4 index (moov atom) is missing: the file is truncated or "
                                             "was never finished")
    assert _outcome(tmp_path / "text.mp4").startswith("open: not a readable video")
    assert called == []


def test_symbolic_links_that_lead_nowhere_are_listed_as_the_links_themselves(tmp_path):
    """`Path.resolve()` raised on a loop (Python 3.11), stopping the whole listing; a dangling
    link came back as its target's path. The app still lists with `discover`."""
    make_video(tmp_path / "real.mp4", fps=10, durations=(2.0,))
    (tmp_path / "a.mp4").symlink_to(tmp_path / "b.mp4")
    (tmp_path / "b.mp4").symlink_to(tmp_path / "a.mp4")
    (tmp_path / "dangling.mp4").symlink_to(tmp_path / "elsewhere" / "gone.mp4")
    (tmp_path / "alias.mp4").symlink_to(tmp_path / "real.mp4")
    found = discover([str(tmp_path)])
    assert sorted(found) == [str(tmp_path / n) for n in ("a.mp4", "b.mp4", "dangling.mp4", "real.mp4")]
    reasons = {}
    for path in (p for p in found if not p.endswith("real.mp4")):
        with pytest.raises(OSError) as caught:
            identify(path)
        reasons[path.rsplit("/", 1)[1]] = caught.value.strerror
    assert reasons == {"a.mp4": "symbolic link loop", "b.mp4": "symbolic link loop",
                       "dangling.mp4": "broken symbolic link"}


# ---- filters --------------------------------------------------------------------------------------
@pytest.mark.parametrize("where,message", [
    ("1=1; DROP TABLE x", "';' is not allowed"),
    ("1=1) garbage (2=2", "closes nothing"),
    ("(path = 'x'", "not closed"),
    ("path = 'x", "unterminated string"),
])
def test_a_filter_that_is_not_one_expression_is_refused_before_lancedb(where, message):
    with pytest.raises(InputError, match=re.escape(message)):
        check_filter(where)


MODEL = ModelRef("m", "m")  # a model known by key and table suffix alone: the vectors are made here


def _store_with_paths(tmp_path, paths: list[str], tags: list[list[str]]) -> VideoStore:
    """A store holding one 1-segment video per path (unit vectors, no decoding)."""
    store = VideoStore(str(tmp_path / "db"))
    rng = np.random.default_rng(0)
    records = []
    for i, (path, tag) in enumerate(zip(paths, tags)):
        vector = rng.normal(size=8).astype(np.float32)
        vector /= np.linalg.norm(vector)
        records.append(VideoRecord(video_id=f"id{i}", path=path, size_bytes=1, mtime_ns=1, duration=2.0, fps=10.0,
                                   width=8, height=8, n_frames=1, settings="{}", vector=vector, tags=tuple(tag),
                                   segments=[SegmentRow(0.0, 2.0, 1, b"", vector)]))
    store.model(MODEL).write_videos(records, new_ids={r.video_id for r in records})
    return store


def test_filters_are_whole_expressions_and_the_apps_filters_are_escaped(tmp_path):
    paths = ["/v/it's/a.mp4", "/v/back\\slash/b.mp4", "/v/per%cent_/c.mp4", '/v/dq"uote/d.mp4', "/v/plain/e.mp4",
             "/v/ünï/f.mp4"]
    tags = [["it's"], ["back\\slash"], ["50%"], ['say "hi"'], ["x') OR (1=1"], ["ünï"]]
    store = _store_with_paths(tmp_path, paths, tags)

    def hits(where):
        return sorted(r["path"] for r in store.model(MODEL).search_segments(np.ones(8, np.float32), 10, where=where))

    assert hits("path LIKE '%plain%'") == ["/v/plain/e.mp4"]
    for garbage in ("path LIKE '%plain%' garbage", "path LIKE '%plain%' AND", "1=1; DROP TABLE x"):
        with pytest.raises(InputError):
            hits(garbage)

    for folder, tag, want in [("it's", None, "/v/it's/a.mp4"), ("back\\slash", None, "/v/back\\slash/b.mp4"),
                              ("per%cent_", None, "/v/per%cent_/c.mp4"), ('dq"uote', None, '/v/dq"uote/d.mp4'),
                              (None, "x') OR (1=1", "/v/plain/e.mp4"), (None, "50%", "/v/per%cent_/c.mp4"),
                              ("ünï", "ünï", "/v/ünï/f.mp4"), ("' OR '1'='1", None, None)]:
        # the app's filters with no duration limits: the videos' rows are never read
        where, _ = SearchFilters(tags=(tag,) if tag else (), folder=folder or "").where(video_rows=None)
        assert hits(where) == ([want] if want else []), (folder, tag, where)


# ---- signals and the lock ----------------------------------------------------------------------------
def test_a_signal_during_a_write_waits_for_the_write_and_the_next_safe_point():
    previous = {s: signal.getsignal(s) for s in interrupts.SIGNALS}
    interrupts.reset()
    interrupts.install()
    try:
        written = []
        with interrupts.deferred():
            signal.raise_signal(signal.SIGTERM)
            written.append("whole")  # the write goes on
        written.append("bookkeeping")  # what the caller does right after a write is not cut either
        with pytest.raises(Interrupted) as caught:
            interrupts.safe_point()
        assert written == ["whole", "bookkeeping"] and caught.value.exit_status == 143
        signal.raise_signal(signal.SIGINT)  # later signals: ignored while the command finishes writing
        interrupts.safe_point()

        interrupts.reset()
        with pytest.raises(Interrupted) as caught:  # outside writes: at once
            signal.raise_signal(signal.SIGINT)
        assert caught.value.exit_status == 130
    finally:
        interrupts.reset()
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def test_the_writer_lock_is_reentrant_for_its_thread_only(tmp_path):
    db = str(tmp_path / "db")
    outcome = []
    with writer_lock(db), writer_lock(db):
        thread = threading.Thread(target=lambda: outcome.append(_try_lock(db)))
        thread.start()
        thread.join()
    assert outcome == ["busy"]
    assert _try_lock(db) == "held"


def _try_lock(db: str) -> str:
    try:
        with writer_lock(db):
            return "held"
    except StoreBusyError:
        return "busy"
