"""``vidsift index --watch``: the archive follows its folders while they change.

Each tick lists the folders, prunes what vanished since the last listing (``pipeline.follow``;
everything gone on the first tick, and when a folder comes back after being unreachable), and
hands the files that need work to the caller's ``index_once`` once their size and mtime have not
changed for ``settle_s``: a file still being copied changes at every listing, so it is never
read half-written. A folder that goes missing or empty (an unmounted drive) is reported and left
alone, rows included, until it comes back. ``clock`` is a parameter and ``watch`` takes
``sleep``, so tests drive the loop with a fake clock.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from . import interrupts
from .follow import FolderUnreachable, Root, list_root, prune_root, root_of
from .scans import ScanCounts, record_scan
from .storage import ListedFile
from .store import VideoStore


@dataclass(frozen=True)
class WatchConfig:
    """``settle_s``: a file is indexed once its size and mtime have not changed for this long
    (never while it is still being copied); ``poll_s``: time between listings; ``record_every_s``:
    a quiet folder's scan is recorded this often (a busy one at every change)."""

    settle_s: float = 5.0
    poll_s: float = 2.0
    record_every_s: float = 60.0
    allow_empty: bool = False


@dataclass(frozen=True)
class Action:
    """One thing the watch did or saw: added, changed, failed, skipped (same content as an indexed
    video), removed, waiting (still being written), unreachable, reachable."""

    action: str
    path: str
    models: tuple[str, ...] = ()
    detail: str | None = None

    def to_dict(self) -> dict:
        return {"action": self.action, "path": self.path, **({"models": list(self.models)} if self.models else {}),
                **({"detail": self.detail} if self.detail else {})}


class Settler:
    """Which listed files have kept the same size and mtime for ``settle_s``."""

    def __init__(self, settle_s: float):
        self.settle_s = settle_s
        self.seen: dict[str, tuple[int, int, float]] = {}  # path -> (size, mtime, first seen so)
        self.waiting: set[str] = set()  # reported as still changing

    def observe(self, files: list[ListedFile], now: float) -> tuple[list[ListedFile], list[ListedFile]]:
        """(files stable for ``settle_s``, files newly seen changing)."""
        ready, changing = [], []
        for f in files:
            before = self.seen.get(f.path)
            if before is None or before[:2] != (f.size_bytes, f.mtime_ns):
                if before is not None and f.path not in self.waiting:
                    self.waiting.add(f.path)
                    changing.append(f)
                self.seen[f.path] = (f.size_bytes, f.mtime_ns, now)
            elif now - before[2] >= self.settle_s:
                ready.append(f)
        current = {f.path for f in files}
        for path in [p for p in self.seen if p not in current]:
            del self.seen[path]
        self.waiting &= current
        return ready, changing

    def done(self, path: str) -> None:
        self.seen.pop(path, None)
        self.waiting.discard(path)


class Follower:
    """Keeps ``store`` following ``inputs`` for one model (``spec``: a ``ModelSpec``): each ``tick``
    lists the folders, prunes what vanished (everything gone, on the first tick and when a folder
    comes back), and hands the files that need work and have settled to ``index_once``. Hold the
    database's writer lock around it (one writer)."""

    def __init__(self, store: VideoStore, inputs: list[str], spec,
                 index_once: Callable[[list[str]], object], config: WatchConfig = WatchConfig(),
                 storage_options: dict | None = None, clock: Callable[[], float] = time.monotonic,
                 on_action: Callable[[Action], None] = lambda action: None):
        self.store, self.tables = store, store.model(spec)
        self.roots = [root_of(item) for item in inputs]
        self.index_once, self.config, self.options = index_once, config, storage_options
        self.clock, self.on_action = clock, on_action
        self.settler = Settler(config.settle_s)
        # path -> (size, mtime) already handed to the indexer (or stored): not redone unless it changes
        self.handled = {path: (row["size_bytes"], row["mtime_ns"]) for path, row in self.tables.indexed_files().items()}
        self.listed: dict[Root, set[str]] = {}   # each reachable root's last listing
        self.down: set[Root] = set()
        self.counts = {root: ScanCounts() for root in self.roots}
        self.recorded: dict[Root, float] = {}

    def tick(self) -> None:
        now = self.clock()
        files: dict[str, ListedFile] = {}
        for root in self.roots:
            try:
                listed = list_root(root, self.options)
            except FolderUnreachable as exc:
                if root not in self.down:
                    self.down.add(root)
                    self.on_action(Action("unreachable", root.path, detail=str(exc)))
                self.listed.pop(root, None)  # when it comes back: a full prune
                continue
            current = {f.path for f in listed}
            previous = self.listed.get(root)
            vanished = None if previous is None else previous - current
            if vanished is None or vanished:
                try:
                    self._prune(root, listed, vanished)
                except FolderUnreachable as exc:  # emptied: an unmounted drive, most likely
                    if root not in self.down:
                        self.down.add(root)
                        self.on_action(Action("unreachable", root.path, detail=str(exc)))
                    continue
            if root in self.down:
                self.down.discard(root)
                self.on_action(Action("reachable", root.path))
            self.listed[root] = current
            files.update((f.path, f) for f in listed)
        todo = [f for f in files.values() if self.handled.get(f.path) != (f.size_bytes, f.mtime_ns)]
        ready, changing = self.settler.observe(todo, now)
        for f in changing:
            self.on_action(Action("waiting", f.path, detail="still being written"))
        if ready:
            self._index(ready)
        self._record(now)
        interrupts.safe_point()

    def _prune(self, root: Root, listed: list[ListedFile], vanished: set[str] | None) -> None:
        with self.store.exclusive_writer():
            report = prune_root(self.store, root, listed, self.options, only=vanished,
                                allow_empty=self.config.allow_empty)
        for path in report.paths():
            self.handled.pop(path, None)
            self.settler.done(path)
            self.on_action(Action("removed", path, tuple(report.models_of(path))))
        self.counts[root].removed += len(report.paths())

    def _index(self, ready: list[ListedFile]) -> None:
        before = self.tables.indexed_files()
        paths = [f.path for f in ready]
        report = self.index_once(paths)
        after = self.tables.indexed_files()
        failed = {f.path: f for f in getattr(report, "failures", [])}
        models = (self.tables.key,)
        for f in ready:
            self.handled[f.path] = (f.size_bytes, f.mtime_ns)
            self.settler.done(f.path)
            old, new = before.get(f.path), after.get(f.path)
            if f.path in failed:
                action = Action("failed", f.path, models, f"{failed[f.path].stage}: {failed[f.path].reason}")
            elif new is None:
                action = Action("skipped", f.path, models, "same content as a video already indexed")
            elif old is None or old["video_id"] != new["video_id"]:
                action = Action("added" if old is None else "changed", f.path, models)
            else:
                continue  # the same bytes (only touched): nothing to say
            self.on_action(action)
            for root in self.roots:
                if root.covers(f.path, frozenset(self.listed.get(root, ()))):
                    counts = self.counts[root]
                    if action.action in ("added", "changed", "failed"):
                        setattr(counts, action.action, getattr(counts, action.action) + 1)

    def _record(self, now: float, force: bool = False) -> None:
        """A scan record for each reachable folder that changed, or was not recorded for a while."""
        for root in self.roots:
            if root.kind != "folder" or root in self.down or root not in self.listed:
                continue
            last = self.recorded.get(root)
            if force or self.counts[root] or last is None or now - last >= self.config.record_every_s:
                with self.store.exclusive_writer():
                    record_scan(self.store, root.path, self.tables.key, self.counts[root], "watch")
                self.counts[root], self.recorded[root] = ScanCounts(), now

    def flush(self) -> None:
        """Record what was done since the last record (on the way out)."""
        self._record(self.clock(), force=True)


def watch(follower: Follower, sleep: Callable[[float], None] = time.sleep,
          until: Callable[[], bool] | None = None) -> None:
    """``follower.tick()`` every ``poll_s`` until ``until()`` is true, or forever: SIGINT/SIGTERM
    (``pipeline.interrupts``) end it with ``Interrupted`` between writes."""
    while True:
        follower.tick()
        if until is not None and until():
            return
        interrupts.safe_point()
        sleep(follower.config.poll_s)
