"""Where a running `vidsift app` can be found: a small JSON file per server, so that a one-shot
`vidsift search` on the same database asks the app (model loaded, calibration cached) instead of
importing torch, open_clip and LanceDB and loading the model itself (seconds; see
bench/results/cli_speed.txt).

One file per server, in a per-user folder (``$VIDSIFT_RUNTIME_DIR``, else
``$XDG_RUNTIME_DIR/vidsift``, else ``~/.cache/vidsift/servers``; mode 0700, files 0600), named
``<hash of the database URI>-<pid>.json``: a database is found by the hash of its normalised URI
(an absolute real path, or an object-storage URI as given), so ``s3://`` archives work alike, and
two apps on one database (two models) each have theirs. A file is removed when its server exits;
one left by a server that died (its pid is gone) is ignored and removed by ``find_server``.

Standard library only: the CLI reads these files before it decides whether to import anything heavy.
"""
from __future__ import annotations

import atexit
import contextlib
import dataclasses
import hashlib
import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

RUNTIME_ENV = "VIDSIFT_RUNTIME_DIR"
FORMAT = 1  # the file's layout; a reader ignores files of another format


def runtime_dir() -> Path:
    """The per-user folder of announcements (not created here)."""
    if os.environ.get(RUNTIME_ENV):
        return Path(os.environ[RUNTIME_ENV])
    if os.environ.get("XDG_RUNTIME_DIR"):
        return Path(os.environ["XDG_RUNTIME_DIR"]) / "vidsift"
    return Path.home() / ".cache" / "vidsift" / "servers"


def normalise_db(db: str) -> str:
    """One spelling per database: an object-storage URI without its trailing slashes, a local
    folder as its absolute real path (``./a.lance``, ``a.lance/`` and a symlink to it are one)."""
    db = str(db)
    if "://" in db and not db.startswith("file://"):
        return db.rstrip("/")
    if db.startswith("file://"):
        db = db[len("file://"):]
    return os.path.realpath(os.path.expanduser(db))


def db_hash(db: str) -> str:
    return hashlib.sha256(normalise_db(db).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class ServerInfo:
    """What an app says about itself. ``models``: the archive's models when it started (rows of
    ``pipeline.archive_models.ArchiveModel`` as dicts), so a client can tell which model a plain
    `vidsift search` would choose without opening the archive."""

    url: str
    pid: int
    db: str
    model: str
    max_k: int
    device: str
    precision: str
    started: float
    models: tuple[dict, ...] = ()
    format: int = FORMAT
    path: str = ""  # the file it was read from (not written)


class Announcement:
    """A written announcement; ``remove()`` deletes it (also run at interpreter exit)."""

    def __init__(self, path: Path, info: ServerInfo):
        self.path, self.info = path, info
        atexit.register(self.remove)

    def remove(self) -> None:
        with contextlib.suppress(OSError):
            self.path.unlink()
        atexit.unregister(self.remove)


def announce(config, url: str, spec, archive_models=()) -> Announcement:
    """Announce the app serving ``config.db`` (an ``app.web.AppConfig``) at ``url`` (its local,
    loopback URL) with ``spec`` (the served ``ModelSpec``); ``archive_models``: the archive's
    ``ArchiveModel`` rows. Written atomically (a reader never sees half a file), mode 0600."""
    folder = runtime_dir()
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    rows = tuple(dataclasses.asdict(m) if dataclasses.is_dataclass(m) else dict(m) for m in archive_models)
    info = ServerInfo(url=url.rstrip("/"), pid=os.getpid(), db=normalise_db(config.db), model=spec.key,
                      max_k=int(config.max_k), device=spec.device, precision=spec.precision, started=time.time(),
                      models=rows)
    body = {k: v for k, v in dataclasses.asdict(info).items() if k != "path"}
    path = folder / f"{db_hash(config.db)}-{os.getpid()}.json"
    fd, staging = tempfile.mkstemp(prefix=".announce-", dir=folder)  # created 0600
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(body, fh, indent=1)
        os.replace(staging, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(staging)
        raise
    return Announcement(path, info)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's (cannot be ours: the folder is per user)
        return True
    except (OverflowError, ValueError):
        return False
    return True


def announced(db: str) -> list[ServerInfo]:
    """The live announcements for ``db``, newest first; files of dead servers are removed,
    unreadable ones skipped."""
    folder, key, found = runtime_dir(), db_hash(db), []
    try:
        paths = sorted(folder.glob(f"{key}-*.json"))
    except OSError:
        return []
    for path in paths:
        try:
            if path.stat().st_uid != os.getuid():  # only this user's apps are asked (a shared $VIDSIFT_RUNTIME_DIR)
                continue
            data = json.loads(path.read_text())
            if data.get("format") != FORMAT:
                continue
            data["models"] = tuple(data.get("models") or ())
            info = ServerInfo(**{**data, "path": str(path)})
        except (OSError, ValueError, TypeError):
            continue
        if info.db != normalise_db(db):  # a hash collision, or a file written by hand
            continue
        if not pid_alive(info.pid):
            with contextlib.suppress(OSError):
                path.unlink()
            continue
        found.append(info)
    return sorted(found, key=lambda i: i.started, reverse=True)


def find_server(db: str, model_key: str | None = None) -> ServerInfo | None:
    """A live app serving ``db`` (with the model ``model_key``, when given), or None."""
    for info in announced(db):
        if model_key is None or info.model == model_key:
            return info
    return None
