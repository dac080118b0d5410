"""The ANN index over a model's segment vectors: how it is built, searched and kept up.

One policy for every path that writes (``ModelTables.upkeep_ann_index``): the default local run,
the Ray job, ``--no-ray`` and the app's uploads and folder indexing all end with it, so the same
files leave the same index state whichever path indexed them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

ANN_AUTO_THRESHOLD = 100_000  # rows past which `index` builds an ANN index by itself
FILTER_INDEX_COLUMNS = ("path", "video_id")  # B-trees built with the ANN index, for prefilters
MIN_TRAINING_ROWS = 256  # fewer segments cannot train the partitions: exact search is used


@dataclass(frozen=True)
class VectorIndexConfig:
    """The ANN index over segment vectors and how it is searched.

    ``kind``: ``ivf_sq`` (default: 8-bit scalar quantisation, 4x smaller than float32 and accurate
    enough that ranking inside the probed partitions stays right), ``ivf_pq`` (64 bytes a vector,
    smallest, but its coarse distances missed true neighbours: recall@10 0.62 against IVF_SQ's
    1.00 at 1M rows, ``bench/RESULTS.md``) or ``ivf_flat``.
    Partitions default to sqrt(rows); ``nprobes`` partitions are searched at least (more under a
    narrow filter), and ``refine_factor`` x limit candidates are re-ranked on the full vectors.
    Each candidate is one random read: at 1M segments 5 gave the same recall@10 (1.000) as 10 in
    0.85-0.9x the time; 16 probes instead of 32 was as fast or faster, but how many partitions a
    query's true neighbours spread over depends on the embeddings, so 32 stays (``bench/RESULTS.md``).
    """

    kind: str = "ivf_sq"
    partitions: int | None = None
    nprobes: int = 32
    refine_factor: int = 5
    kmeans_iterations: int = 25

    def __post_init__(self):
        if self.kind not in ("ivf_sq", "ivf_pq", "ivf_flat"):
            raise ValueError(f"unknown vector index kind {self.kind!r}")

    def lancedb_config(self, rows: int, dim: int):
        # lazy: lancedb.index loads with the first index build, not with every command that reads this module
        from lancedb.index import IvfFlat, IvfPq, IvfSq

        common = dict(distance_type="cosine", max_iterations=self.kmeans_iterations,
                      num_partitions=self.partitions or max(1, min(4096, int(math.sqrt(rows)))))
        if self.kind == "ivf_pq":
            sub_vectors = next(d for d in (dim // 8, dim // 4, dim // 2, dim, 1) if d >= 1 and dim % d == 0)
            return IvfPq(num_sub_vectors=sub_vectors, **common)
        return (IvfSq if self.kind == "ivf_sq" else IvfFlat)(**common)

    def tune(self, query, filtered: bool):
        """``query`` (a LanceDB vector query) probing as this index is meant to be searched.
        Unfiltered: exactly ``nprobes`` partitions (letting lance probe on, maximum_nprobes 0, cost
        2.4x the latency for nothing). Under a filter, keep probing until ``limit`` rows pass it,
        else a narrow filter's recall collapses (0.39 measured)."""
        query = query.minimum_nprobes(self.nprobes).maximum_nprobes(0) if filtered else query.nprobes(self.nprobes)
        return query.refine_factor(self.refine_factor)


def build_vector_index(table, config: VectorIndexConfig) -> str:
    """Build the ANN index over ``table``'s vectors, and the B-trees filters use. Returns a description."""
    rows = table.count_rows()
    if rows < MIN_TRAINING_ROWS:
        return f"not built: {rows} segments are too few to train an index (exact search is used)"
    dim = table.schema.field("vector").type.list_size
    lancedb_config = config.lancedb_config(rows, dim)
    table.create_index("vector", config=lancedb_config, replace=True)
    build_filter_indexes(table)
    return (f"{config.kind.upper()} index built: {rows} segments, {lancedb_config.num_partitions} partitions; "
            f"B-tree on {', '.join(FILTER_INDEX_COLUMNS)}")


def build_filter_indexes(table) -> None:
    """B-trees on the columns filters name most (``path LIKE 'folder/%'`` for a folder,
    ``video_id IN (...)`` for a video's rows): a prefilter then reads the index instead of every
    row's path, 58 -> 15 ms a filtered search at 300K segments (``bench/RESULTS.md``). lance
    uses a B-tree for ``LIKE 'prefix%'`` too. Built in well under a second; ``optimize`` keeps
    them up to date with the vector index."""
    from lancedb.index import BTree  # lazy: as in ``lancedb_config``

    for column in FILTER_INDEX_COLUMNS:
        table.create_index(column, config=BTree(), replace=True)
