"""When each folder was last scanned, per model: a small table of its own in the archive.

The Library shows it ("last scanned 2 minutes ago: 3 added, 1 removed"). One row per (folder,
model), replaced at each scan (``merge_insert`` on ``scan_id``), so a ``--watch`` that records
once a minute for months does not grow the table; compacted now and then, since every commit
leaves a small fragment. The name cannot collide with a model's tables, which are all
``segments_*``, ``videos_*`` or ``frames_*`` (``pipeline.store``).
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import pyarrow as pa

from .records import now_utc
from .store import VideoStore
from .store_writes import guarded_write

SCANS_TABLE = "folder_scans"
COMPACT_AFTER_FRAGMENTS = 32  # compact the (tiny) table once this many commits have piled up

SCANS_SCHEMA = pa.schema([
    pa.field("scan_id", pa.string(), nullable=False,
             metadata={"lance-schema:unenforced-primary-key": "true"}),
    pa.field("folder", pa.string()),
    pa.field("model", pa.string()),
    pa.field("kind", pa.string()),         # index, prune or watch
    pa.field("scanned_at", pa.timestamp("us", tz="UTC")),
    pa.field("added", pa.int64()),
    pa.field("changed", pa.int64()),
    pa.field("removed", pa.int64()),
    pa.field("failed", pa.int64()),
])


@dataclass
class ScanCounts:
    """What one scan of a folder did (for ``--watch``: since the previous record)."""

    added: int = 0
    changed: int = 0
    removed: int = 0
    failed: int = 0

    def __bool__(self) -> bool:
        return bool(self.added or self.changed or self.removed or self.failed)

    def to_dict(self) -> dict:
        return {"added": self.added, "changed": self.changed, "removed": self.removed, "failed": self.failed}


def _table(store: VideoStore, create: bool):
    """The scans table, or None when it does not exist yet (and ``create`` is false)."""
    return store.open_or_create_table(SCANS_TABLE, SCANS_SCHEMA) if create else store.open_table(SCANS_TABLE)


def record_scan(store: VideoStore, folder: str, model_key: str, counts: ScanCounts, kind: str,
                at: dt.datetime | None = None) -> None:
    """Note that ``folder`` was scanned with ``model_key`` just now (or ``at``)."""
    row = {"scan_id": f"{model_key}|{folder}", "folder": folder, "model": model_key, "kind": kind,
           "scanned_at": at or now_utc(), **counts.to_dict()}

    def write():
        table = _table(store, create=True)
        (table.merge_insert("scan_id").when_matched_update_all().when_not_matched_insert_all()
         .execute(pa.Table.from_pylist([row], schema=SCANS_SCHEMA)))
        if len(table.to_lance().get_fragments()) > COMPACT_AFTER_FRAGMENTS:
            table.optimize()

    guarded_write(store.uri, write)


def last_scans(store: VideoStore, model_key: str | None = None) -> list[dict]:
    """The last scan of each folder (of ``model_key``'s scans only, when given), newest first:
    dicts with ``folder``, ``model``, ``kind``, ``scanned_at`` (UTC datetime), ``added``,
    ``changed``, ``removed`` and ``failed``. Empty for an archive never scanned."""
    table = _table(store, create=False)
    if table is None:
        return []
    latest: dict[str, dict] = {}
    for row in table.to_arrow().to_pylist():
        if model_key is not None and row["model"] != model_key:
            continue
        row.pop("scan_id")
        kept = latest.get(row["folder"])
        if kept is None or row["scanned_at"] > kept["scanned_at"]:
            latest[row["folder"]] = row
    return sorted(latest.values(), key=lambda r: r["scanned_at"], reverse=True)
