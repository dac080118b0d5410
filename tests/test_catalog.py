"""Search reads row ids from lance and the rest of each hit from an in-memory catalog
(``pipeline.catalog``), or from lance for a one-shot search: either way it must return exactly
what asking lance for every column returns (the reference path), through writes, updates,
deletes and compaction, by this store or another."""
import numpy as np
import pytest

from vidsift.pipeline.ann_index import VectorIndexConfig
from vidsift.pipeline.catalog import SegmentCatalog
from vidsift.pipeline.model_store import ModelRef
from vidsift.pipeline.records import SEGMENT
from vidsift.pipeline.search import search_vector
from vidsift.pipeline.store import VideoStore

DIM = 32
SUFFIX = "t"
MODEL = ModelRef("m", SUFFIX)
CATALOG_COLUMNS = SEGMENT.catalog_columns


def _rows(first: int, count: int, rng, tag: str = "", path_prefix: str = "/a") -> list[dict]:
    vectors = rng.normal(size=(count, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return [{"segment_id": f"v{i}:{i % 3:05d}", "video_id": f"v{i}", "path": f"{path_prefix}/v{i}.mp4",
             "segment_index": i % 3, "start": float(i), "end": float(i) + 2.5, "n_frames": 3 + i % 4,
             "starts_scene": i % 2 == 0, "model": "m", "tags": [tag] if tag else [],
             "thumbnail": f"jpeg-of-{i}{tag}".encode(), "vector": v.tolist()}
            for i, v in zip(range(first, first + count), vectors)]


def _reference(store: VideoStore, query: np.ndarray, limit: int, where=None, exact=False) -> list[dict]:
    """The same search asking lance for every column (what the store did before the catalog)."""
    table = store.model(MODEL).segments()
    search = table.search(query, vector_column_name="vector").distance_type("cosine")
    if where:
        search = search.where(where, prefilter=True)
    if exact:
        search = search.bypass_vector_index()
    elif store.model(MODEL).has_vector_index():
        ann = store.vector_index
        search = (search.minimum_nprobes(ann.nprobes).maximum_nprobes(0) if where
                  else search.nprobes(ann.nprobes)).refine_factor(ann.refine_factor)
    return search.select([*CATALOG_COLUMNS, "_distance"]).limit(limit).to_list()


def _same(store: VideoStore, queries, **kwargs) -> None:
    for query in queries:
        fast = store.model(MODEL).search_segments(query, 12, **kwargs)
        slow = _reference(store, query, 12, **kwargs)
        assert [r["segment_id"] for r in fast] == [r["segment_id"] for r in slow]
        for f, s in zip(fast, slow):
            assert {c: f[c] for c in CATALOG_COLUMNS} == {c: s[c] for c in CATALOG_COLUMNS}
            assert f["score"] == pytest.approx(1.0 - s["_distance"], abs=1e-6)


@pytest.mark.parametrize("catalog", [True, False], ids=["catalog", "one-shot"])
def test_search_equals_the_all_columns_reference_through_writes(tmp_path, catalog):
    rng = np.random.default_rng(0)
    store = VideoStore(str(tmp_path / "db"), vector_index=VectorIndexConfig(nprobes=4), search_catalog=catalog)
    queries = rng.normal(size=(5, DIM)).astype(np.float32)
    store.model(MODEL).replace_segments(DIM, _rows(0, 300, rng), "false")
    _same(store, queries, exact=True)

    # Another writer (a second store on the same database) adds rows, updates some (new tags,
    # i.e. new physical rows) and deletes others: this store's catalog must follow.
    writer = VideoStore(str(tmp_path / "db"))
    writer.model(MODEL).replace_segments(DIM, _rows(300, 200, rng), "false")
    updated = _rows(0, 50, np.random.default_rng(0), tag="edited")
    writer.model(MODEL).replace_segments(DIM, updated, "video_id IN ('v0', 'v1', 'v2', 'v60', 'v61')")
    writer.model(MODEL).segments().delete("video_id IN ('v100', 'v101', 'v102')")
    _same(store, queries, exact=True)
    found = {r["segment_id"] for q in queries for r in store.model(MODEL).search_segments(q, 500, exact=True)}
    assert "v60:00000" not in found and "v100:00001" not in found and "v400:00001" in found
    edited = [r for q in queries for r in store.model(MODEL).search_segments(q, 500, exact=True) if r["video_id"] == "v7"]
    assert edited and edited[0]["tags"] == ["edited"]

    # ANN index, filters, then compaction (rows move to new fragments: new row ids)
    writer.model(MODEL).build_vector_index()
    _same(store, queries)
    _same(store, queries, where="path LIKE '/a/v1%'")
    writer.model(MODEL).replace_segments(DIM, _rows(500, 100, rng, path_prefix="/b"), "false")
    writer.model(MODEL).optimize()
    _same(store, queries)
    _same(store, queries, where="path LIKE '/b/%'", exact=True)


def test_a_catalog_knows_only_the_rows_of_its_version(tmp_path):
    rng = np.random.default_rng(1)
    store = VideoStore(str(tmp_path / "db"))
    store.model(MODEL).replace_segments(DIM, _rows(0, 20, rng), "false")
    table = store.model(MODEL).segments()
    catalog = SegmentCatalog.load(table)
    assert catalog.version == table.version and not catalog.has_vector_index
    known = table.to_lance().to_table(columns=["segment_id"], with_row_id=True)
    ids = known.column("_rowid").to_pylist()[::-1]
    assert [r["segment_id"] for r in catalog.rows(ids)] == known.column("segment_id").to_pylist()[::-1]
    assert catalog.rows([]) == []
    table.add(_as_arrow(_rows(20, 5, rng)))
    grown = store.model(MODEL).segments().to_lance().to_table(columns=[], with_row_id=True)
    new_ids = grown.column("_rowid").to_pylist()
    assert catalog.rows(new_ids) is None  # the table changed: the caller must reload
    assert SegmentCatalog.load(store.model(MODEL).segments()).rows(new_ids) is not None


def _as_arrow(rows):
    return SEGMENT.to_arrow(rows, DIM)


def test_hits_carry_their_own_thumbnails_only_when_asked(tmp_path):
    rng = np.random.default_rng(2)
    store = VideoStore(str(tmp_path / "db"))
    rows = _rows(0, 40, rng)
    store.model(MODEL).replace_segments(DIM, rows, "false")
    query = np.asarray(rows[13]["vector"], dtype=np.float32)
    hits = search_vector(store, SUFFIX, query, k=5)
    assert hits[0].video_id == "v13"
    by_video = {r["video_id"]: r["thumbnail"] for r in rows}
    assert [h.thumbnail for h in hits] == [by_video[h.video_id] for h in hits]
    assert all(h.thumbnail == b"" for h in search_vector(store, SUFFIX, query, k=5, thumbnails=False))


def test_rows_written_while_the_catalog_reloads_are_read_from_the_table(tmp_path, monkeypatch):
    """The last resort (the table changed again between a reload and the lookup): the hits'
    columns are read from lance, and still equal the reference."""
    rng = np.random.default_rng(3)
    store = VideoStore(str(tmp_path / "db"))
    store.model(MODEL).replace_segments(DIM, _rows(0, 50, rng), "false")
    stale = SegmentCatalog.load(store.model(MODEL).segments())
    store.model(MODEL).replace_segments(DIM, _rows(50, 50, rng, tag="later"), "false")
    monkeypatch.setattr(store.model(MODEL), "_catalog", lambda table, reload=False: stale)
    queries = rng.normal(size=(3, DIM)).astype(np.float32)
    _same(store, queries, exact=True)
    assert any(r["tags"] == ["later"] for q in queries for r in store.model(MODEL).search_segments(q, 100, exact=True))
