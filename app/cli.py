"""`vidsift ...`: the command line. Each command (``app/commands/``) parses its flags, calls the
plain functions of ``pipeline``/``workers``, and prints a human table or ``--json`` on stdout.
Errors are one line on stderr naming the file and the cause, never a traceback (with ``--json``,
also a JSON object with ``error`` and ``exit_status`` on stdout).

Exit statuses: 0 done (`index`: all indexed, or already were; `verify`: clean), 3 `index`
completed with failures (recorded; see `vidsift status`) / `verify` found problems, 1 the command
failed, 2 bad arguments, 130 interrupted by Ctrl-C (SIGINT), 143 stopped by SIGTERM. An
interrupted `index` writes every finished video before it exits; the same command resumes.

Without ``--verbose`` a command shows its own lines and the progress bar only: what libraries
print (Ray, LanceDB, decord, FFmpeg, open_clip warnings) goes to a log file, kept and named when
the command fails.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import sys
import tempfile

from vidsift.models.errors import ModelUnavailableError
from vidsift.pipeline import interrupts
from vidsift.pipeline.errors import InputError, Interrupted, StoreBusyError, StoreWriteError, VideoError

from .exit_codes import EXIT_FAILED, EXIT_USAGE

from .commands import archive, classify, index, models, research, search, serve
from .commands.common import SHARED_NUMBERS, Command

# In the order `vidsift --help` lists them.
_ORDER = ("index", "search", "classify", "eval", "resegment", "train", "synth", "demo", "app", "status",
          "models", "calibrate", "verify")
_ALL: dict[str, Command] = {c.name: c for module in (index, search, classify, archive, models, research, serve)
                            for c in module.COMMANDS}
COMMANDS = {name: _ALL[name].run for name in _ORDER}  # what each command runs (tests may swap one)
WRITING_COMMANDS = tuple(name for name in _ORDER if _ALL[name].writes)  # signals: finish the write, then stop


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad argument is one line (``vidsift index: error: ...``), exit 2, as every
    other error of ours: no usage dump."""

    def error(self, message):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="vidsift", description="Search, tag and index video archives with CLIP.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in _ORDER:
        command = _ALL[name]
        p = sub.add_parser(name, help=command.help)
        command.add_arguments(p)
        p.add_argument("--verbose", action="store_true",
                       help="also show what libraries print (Ray, LanceDB, decord, FFmpeg, warnings)")
    return parser


def check_numbers(args) -> None:
    """Refuse a numeric flag outside its range with one line naming it (exit 2)."""
    rules = {**SHARED_NUMBERS, **_ALL[args.command].numbers}
    for dest, value in vars(args).items():
        rule = rules.get(dest)
        if rule is None or value is None or isinstance(value, bool):
            continue
        flag, low, high, open_low = rule
        if not (low < value <= high if open_low else low <= value <= high):
            bounds = f"above {low:g}" if open_low else f"at least {low:g}"
            raise InputError(f"{flag} must be {bounds} and at most {high:g}, got {value}")


class _Quiet:
    """Without --verbose: file descriptor 2 (where native code, Ray's processes, decord and FFmpeg
    write) goes to a log file, Python's warnings and library logging too; ``sys.stderr``, where
    the progress bar and vidsift's own lines go, stays on the terminal. The log is kept, and
    named, only when the command fails."""

    def __init__(self, command: str):
        sys.stderr.flush()
        try:
            fd, self.path = tempfile.mkstemp(prefix=f"vidsift-{command}-", suffix=".log")
        except OSError:  # no room for a log (a full disk, say): the noise goes nowhere
            fd, self.path = os.open(os.devnull, os.O_WRONLY), None
        self.saved_fd = os.dup(2)
        os.dup2(fd, 2)
        os.close(fd)
        self.saved_stderr = sys.stderr
        sys.stderr = open(os.dup(self.saved_fd), "w", buffering=1, encoding="utf-8", errors="replace",
                          closefd=True)
        root = logging.getLogger()
        self.saved_logging = (list(root.handlers), root.level)
        self.handler = logging.FileHandler(self.path or os.devnull, encoding="utf-8")
        self.handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.handlers = [self.handler]
        root.setLevel(logging.INFO)
        logging.captureWarnings(True)

    def close(self, keep: bool) -> str | None:
        logging.captureWarnings(False)
        root = logging.getLogger()
        root.handlers, level = self.saved_logging
        root.setLevel(level)
        self.handler.close()
        sys.stderr.flush()
        sys.stderr.close()
        sys.stderr = self.saved_stderr
        os.dup2(self.saved_fd, 2)
        os.close(self.saved_fd)
        if self.path is None:
            return None
        if keep and os.path.getsize(self.path):
            return self.path
        os.unlink(self.path)
        return None


def _failure_json(args, message: str, status: int, report=None) -> None:
    """With --json, a failed or interrupted command still answers on stdout."""
    if getattr(args, "json", False):
        payload = dict(report.to_dict()) if hasattr(report, "to_dict") else dict(report or {})
        payload.update(error=message, exit_status=status, db=getattr(args, "db", None))
        if status in (128 + 2, 128 + 15):
            payload["interrupted"] = "SIGINT" if status == 130 else "SIGTERM"
        json.dump(payload, sys.stdout, indent=2, default=str)
        sys.stdout.write("\n")


def _interrupted_line(args, exc: Interrupted) -> str:
    report = exc.report
    if hasattr(report, "indexed"):
        done = (f"{report.indexed} indexed and {len(report.failures)} failed videos were saved in {args.db}")
    elif isinstance(report, dict) and "done" in report:
        done = f"{report['done']} of {report['total']} videos were finished and saved in {args.db}"
    else:
        done = "what was finished is saved"
    return (f"vidsift {args.command}: interrupted by {exc.signal_name}; {done}; run the same command again to "
            f"resume (exit {exc.exit_status})") if args.command == "index" else \
        f"vidsift {args.command}: interrupted by {exc.signal_name} (exit {exc.exit_status})"


def _expected_failure(exc: Exception) -> bool:
    """Errors whose message is the whole story (one line naming the file or database and the
    cause). ``pipeline.storage`` imports pyarrow: its error is recognised without importing it for
    every command."""
    storage = sys.modules.get("vidsift.pipeline.storage")
    if storage is not None and isinstance(exc, storage.StorageError):
        return True
    return isinstance(exc, (VideoError, StoreBusyError, StoreWriteError, ModelUnavailableError))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    previous = {signum: signal.getsignal(signum) for signum in interrupts.SIGNALS}
    interrupts.reset()
    if args.command in WRITING_COMMANDS:  # the others keep Python's Ctrl-C (the app: a clean exit 0)
        interrupts.install()
    quiet = None if args.verbose or os.environ.get("VIDSIFT_VERBOSE") == "1" else _Quiet(args.command)
    args.quiet_log = quiet is not None
    status, message, report = EXIT_FAILED, None, None
    try:
        check_numbers(args)
        status = COMMANDS[args.command](args)
    except KeyboardInterrupt:  # before our handlers were in place
        exc = Interrupted(signal.SIGINT)
        status, message = exc.exit_status, _interrupted_line(args, exc)
    except Interrupted as exc:
        status, message, report = exc.exit_status, _interrupted_line(args, exc), exc.report
    except (InputError, ValueError) as exc:
        status, message = EXIT_USAGE, f"vidsift {args.command}: error: {exc}"
    except Exception as exc:  # noqa: BLE001
        if _expected_failure(exc):
            status, message = EXIT_FAILED, f"vidsift {args.command}: error: {exc}"
        elif os.environ.get("VIDSIFT_DEBUG"):  # a bug or an infrastructure failure: the traceback on demand
            raise
        else:
            first = (str(exc).strip().splitlines() or [""])[0][:300]
            status, message = EXIT_FAILED, (f"vidsift {args.command}: failed: {type(exc).__name__}: {first} (set "
                                            "VIDSIFT_DEBUG=1 for the traceback)")
    finally:
        for signum, handler in previous.items():
            with contextlib.suppress(TypeError, ValueError):
                signal.signal(signum, handler)
        log = quiet.close(keep=status == EXIT_FAILED and message is not None) if quiet else None
    if message is not None:
        _failure_json(args, message, status, report)
        print(message + (f" (details: {log})" if log else ""), file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
