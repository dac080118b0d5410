"""The indexing job's progress: a bar on a terminal, plain lines in a log (``pipeline.progress``)."""
from __future__ import annotations

import io

from tests.conftest import make_video, run_cli
from vidsift.pipeline.progress import job_progress, show_frames

RANDOM = ("--model", "ViT-B-32", "--pretrained", "none")


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_into_a_log_progress_is_whole_lines_without_carriage_returns():
    log = io.StringIO()
    bar = job_progress(3, enabled=True, stream=log, log_every=0)
    for frames in (10, 25, 40):
        bar.update(1)
        show_frames(bar, frames)
    bar.close()
    text = log.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    assert lines[-1].startswith("indexing: 3/3 videos [")
    assert "frames=40" in lines[-1]
    assert all(line.startswith("indexing: ") for line in lines)


def test_into_a_log_the_job_loop_does_not_write_a_line_per_turn():
    """The jobs call ``show_frames`` at every turn of their loop (every half second or faster):
    within the log interval that writes nothing; the end is always written."""
    log = io.StringIO()
    bar = job_progress(2, enabled=True, stream=log, log_every=3600)
    for turn in range(500):
        show_frames(bar, turn)
        if turn in (100, 400):
            bar.update(1)
    bar.close()
    lines = log.getvalue().splitlines()
    assert len(lines) <= 3, lines  # the start, at most one more, the end
    assert lines[-1].startswith("indexing: 2/2 videos") and "frames=499" in lines[-1]


def test_on_a_terminal_it_is_a_bar_redrawn_at_its_own_pace():
    screen = Terminal()
    bar = job_progress(4, enabled=True, stream=screen)
    for turn in range(300):
        show_frames(bar, turn)
    bar.update(4)
    bar.close()
    text = screen.getvalue()
    assert "4/4" in text and "|" in text  # tqdm's bar
    assert text.count("\r") < 60  # not one redraw per loop turn (300 before)


def test_disabled_writes_nothing():
    out = Terminal()
    bar = job_progress(2, enabled=False, stream=out)
    bar.update(2)
    show_frames(bar, 5)
    bar.close()
    assert out.getvalue() == ""


def test_vidsift_index_into_a_log_writes_plain_progress_lines(tmp_path):
    """stderr is a pipe here, as in a cluster job's log: whole lines, and the last says it all."""
    for name in ("a.mp4", "b.mp4"):
        make_video(tmp_path / "videos" / name, fps=10, durations=(2.0,))
    result = run_cli("index", tmp_path / "videos", "--db", tmp_path / "db", *RANDOM, "--fps", "2")
    assert result.returncode == 0, result.stderr
    assert "\r" not in result.stderr
    progress = [line for line in result.stderr.splitlines() if line.startswith("indexing: ")]
    assert progress and progress[-1].startswith("indexing: 2/2 videos [")
    assert "frames=" in progress[-1]
