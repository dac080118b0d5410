"""What search shows of a segment, held in memory by row id for one version of its table.

Why: the vector search itself is fast (at 1M segments, probing the IVF partitions 4.5 ms and
re-ranking the candidates on their full vectors 4 ms), but having lance read the hits' other
columns (path, times, tags...) cost about 1 ms per column for every 10 rows, a random read per
column per row: most of a search's latency. So the search asks lance only for row ids and
distances, and the rest comes from here: 1.55x faster at 1M (``bench/RESULTS.md``). Loading it
scans those columns once per table version (0.5 s and ~90 MiB at 1M segments), which a
long-lived process (the app) pays once after each write; ``vidsift search``, one search per
process, does without (``VideoStore(search_catalog=False)``).

Row ids are only ever looked up, never trusted blindly: a lance row id names a physical row
(fragment and offset; this store does not enable stable row ids), so it never comes to mean a
different row; an id the catalog lacks means the table changed since it was loaded, and the
caller reloads it.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from .records import SEGMENT


def table_has_vector_index(table) -> bool:
    return table is not None and any("vector" in idx.columns for idx in table.list_indices())


@dataclass(frozen=True)
class SegmentCatalog:
    version: int
    has_vector_index: bool
    row_ids: np.ndarray   # uint64, ascending
    columns: pa.Table     # the segment columns marked ``catalog`` (``records.SEGMENT``), one row per id, in order

    @classmethod
    def load(cls, table) -> SegmentCatalog:
        """Scan ``table`` (a LanceDB segments table) at its current version."""
        version = table.version
        has_index = table_has_vector_index(table)
        data = table.to_lance().to_table(columns=list(SEGMENT.catalog_columns), with_row_id=True)
        row_ids = data.column("_rowid").to_numpy().astype(np.uint64)
        if np.any(row_ids[1:] < row_ids[:-1]):  # fragments need not come in row-id order
            order = np.argsort(row_ids, kind="stable")
            data, row_ids = data.take(order), row_ids[order]
        # One chunk per column: ``take`` across the scan's thousand batches cost 12 ms a search at 1M.
        return cls(version, has_index, row_ids, data.drop_columns(["_rowid"]).combine_chunks())

    def rows(self, row_ids) -> list[dict] | None:
        """The catalog rows of ``row_ids``, in that order, or None if any is unknown here."""
        wanted = np.asarray(row_ids, dtype=np.uint64)
        if len(wanted) == 0:
            return []
        positions = np.minimum(np.searchsorted(self.row_ids, wanted), max(len(self.row_ids) - 1, 0))
        if len(self.row_ids) == 0 or np.any(self.row_ids[positions] != wanted):
            return None
        return self.columns.take(pa.array(positions)).to_pylist()
