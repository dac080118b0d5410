"""The LanceDB store: what is archive-wide (opening the database, the writer lock, the ``models``
table and its default, the failures table, the summary), and ``VideoStore.model(spec)``, the handle
of one model's tables (``pipeline.model_store``).

Vectors of different models never mix: every model key (name + weights) gets its own tables, named
after it, and a small ``models`` table says which key each belongs to, how to load its weights again
and which model is the archive's default (``pipeline.archive_models``). The records' columns are
declared in ``pipeline.records``, the SQL helpers are in ``pipeline.sql_filters``, the ANN index in
``pipeline.ann_index``.
"""
from __future__ import annotations

import contextlib
import errno
import os

import pyarrow as pa

from .ann_index import VectorIndexConfig
from .archive_models import ArchiveModel, default_model, pretrained_from_key
from .lock import is_local, local_folder, writer_lock
from .model_store import ModelRef, ModelTables, table_name
from .records import FAILURE, FAILURES_SCHEMA, Failure, failure_id, failure_rows, now_utc
from .sql_filters import sql_in, sql_str
from .storage import StorageError, explain_storage_error
from .store_writes import write_failure, writes

MODELS_TABLE = "models"
FAILURES_TABLE = "failures"

MODELS_SCHEMA = pa.schema([
    pa.field("suffix", pa.string(), nullable=False),
    pa.field("model", pa.string()),
    pa.field("dim", pa.int32()),
    # Added after the first release: what loads the weights again, and the archive's default
    # (``pipeline.archive_models``); older archives get them on their next write.
    pa.field("pretrained", pa.string()),
    pa.field("is_default", pa.bool_()),
])


class VideoStore:
    """Reads and writes one LanceDB database (a folder, or any LanceDB URI such as s3://...)."""

    def __init__(self, uri: str, storage_options: dict | None = None,
                 vector_index: VectorIndexConfig = VectorIndexConfig(), search_catalog: bool = True):
        """``search_catalog``: keep what search shows of each segment in memory (``pipeline.catalog``),
        for a process that searches more than once (the app, evaluation). A process that searches
        once (``vidsift search``) is better off without: loading the catalog costs more than the
        one search it speeds up (0.55 s against ~10 ms at 1M segments)."""
        import lancedb  # lazy: `vidsift --help` and an app-routed search never open a database

        self.uri = uri
        self.vector_index = vector_index
        self.search_catalog = search_catalog
        if is_local(uri) and local_folder(uri).exists() and not local_folder(uri).is_dir():
            raise StorageError(f"{uri}: it is a file, not a database folder: give --db a folder")
        with self._reaching():
            self.db = lancedb.connect(uri, storage_options=storage_options)
        self._handles: dict[str, ModelTables] = {}  # per model suffix, see ``model``
        self._weights_given: dict[str, str] = {}  # model key -> pretrained, see ``remember_spec``
        self._registered: set[str] = set()  # suffixes this store has registered (or found registered)
        self._models_cache: tuple[int, list[ArchiveModel]] | None = None  # (models table version, models)

    @contextlib.contextmanager
    def exclusive_writer(self):
        """Hold the database for one indexing job. Jobs append new videos without reading the
        table, so two jobs indexing the same new file at once would store it twice: a second job
        on a local database fails at once with a message instead (an OS file lock, released
        even when the process dies; ``pipeline.lock``). Remote URIs (s3://...) cannot be locked
        this way: run one indexing job per database at a time there."""
        with writer_lock(self.uri):
            yield

    # ---- tables -------------------------------------------------------------------------
    def _names(self) -> set[str]:
        names, token = set(), None
        while True:
            page = self.db.list_tables(page_token=token)
            names.update(page.tables)
            token = page.page_token
            if not token:
                return names

    def open_or_create_table(self, name: str, schema: pa.Schema):
        table = self.open_table(name)
        if table is not None:
            return table
        with self._reaching():
            return self.db.create_table(name, schema=schema, exist_ok=True)

    def open_table(self, name: str):
        """The table, or None if it does not exist (one call: listing the tables first doubled
        the cost of opening one, which every search pays)."""
        try:
            with self._reaching():
                return self.db.open_table(name)
        except ValueError as exc:  # LanceDB: "Table 'name' was not found"
            if "not found" in str(exc):
                return None
            raise

    @contextlib.contextmanager
    def _reaching(self):
        """LanceDB's errors for a store it cannot reach or is refused by are Rust debug dumps;
        turn them into one line naming the URI and the cause (``pipeline.storage``)."""
        try:
            yield
        except ValueError as exc:
            if "not found" in str(exc) and "bucket" not in str(exc).lower():
                raise
            raise self._unreachable(exc) from None
        except (OSError, RuntimeError) as exc:
            failure = write_failure(self.uri, exc)  # creating a table on a full or read-only disk
            if failure is None or getattr(failure, "errno", None) not in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
                failure = self._unreachable(exc)
            raise failure from None

    def _unreachable(self, exc: BaseException) -> Exception:
        return StorageError(explain_storage_error(self.uri, exc))

    def remember_spec(self, spec) -> None:
        """Note how ``spec``'s weights are loaded, so that registering its key records it: a
        checkpoint's key holds its content hash, not its path (``pipeline.archive_models``)."""
        self._weights_given[spec.key] = os.path.abspath(spec.pretrained) if spec.is_local_file else spec.pretrained

    def _models_for_write(self):
        """The ``models`` table, with the columns of this version (an older archive's gain them:
        nullable, so its rows read as before)."""
        table = self.open_or_create_table(MODELS_TABLE, MODELS_SCHEMA)
        missing = [f for f in MODELS_SCHEMA if f.name not in table.schema.names]
        if missing:
            try:
                table.add_columns(missing)
            except Exception:  # noqa: BLE001 - another process migrated it at the same moment
                table = self.open_table(MODELS_TABLE)
                if any(f.name not in table.schema.names for f in MODELS_SCHEMA):
                    raise
        return table

    @writes
    def register_model(self, model_key: str, suffix: str, dim: int, pretrained: str | None = None) -> None:
        """Record a model before its first rows are written. The first model of an archive becomes
        its default; adding a second to an archive from before defaults were kept marks the one it
        had, so that the app serving it goes on serving it."""
        if suffix not in self._registered:
            if pretrained is None:
                pretrained = self._weights_given.get(model_key, pretrained_from_key(model_key))
            table = self._models_for_write()
            rows = table.to_arrow().to_pylist()
            known = next((r for r in rows if r["suffix"] == suffix), None)
            if known is None:
                if len(rows) == 1 and not rows[0].get("is_default"):
                    table.update(where=f"suffix = {sql_str(rows[0]['suffix'])}", values={"is_default": True})
                table.add(pa.Table.from_pylist([{"suffix": suffix, "model": model_key, "dim": dim,
                                                 "pretrained": pretrained, "is_default": not rows}],
                                               schema=MODELS_SCHEMA))
            elif known.get("pretrained") is None and pretrained is not None:  # a checkpoint's path, learnt now
                table.update(where=f"suffix = {sql_str(suffix)}", values={"pretrained": pretrained})
            self._registered.add(suffix)
        existing = self.open_table(table_name("videos", suffix))
        if existing is not None:
            stored_dim = existing.schema.field("vector").type.list_size
            if stored_dim != dim:
                raise ValueError(f"Table for {model_key} holds {stored_dim}-d vectors, model gives {dim}-d")

    def models(self) -> list[dict]:
        table = self.open_table(MODELS_TABLE)
        return table.to_arrow().to_pylist() if table is not None else []

    def archive_models(self) -> list[ArchiveModel]:
        """The archive's models (``pipeline.archive_models``), read again only when the table has
        changed: a server asks before every search (opening the table to see its version costs
        well under a millisecond, reading it several)."""
        table = self.open_table(MODELS_TABLE)
        if table is None:
            return []
        cached, version = self._models_cache, table.version
        if cached is None or cached[0] != version:
            rows = table.to_arrow().to_pylist()
            # In a stable order (an update rewrites the rows it changes at the table's end).
            models = sorted((ArchiveModel.from_row(r) for r in rows), key=lambda m: (m.key.casefold(), m.suffix))
            cached = self._models_cache = (version, models)
        return list(cached[1])

    def default_model(self) -> ArchiveModel | None:
        """The model used when none is named (see ``archive_models.default_model``)."""
        return default_model(self.archive_models(), where=self.uri)

    @writes
    def set_default(self, suffix: str) -> None:
        """Make the model of ``suffix`` the archive's default: one commit, so a reader sees the old
        default or the new one, never none or two."""
        if suffix not in {m.suffix for m in self.archive_models()}:
            raise ValueError(f"no model with table suffix {suffix!r} in {self.uri}")
        self._models_for_write().update(values_sql={"is_default": f"suffix = {sql_str(suffix)}"})

    @writes
    def record_failures(self, model_key: str, failures: list[Failure]) -> None:
        if not failures:
            return
        table = self.open_or_create_table(FAILURES_TABLE, FAILURES_SCHEMA)
        (table.merge_insert(FAILURE.key).when_matched_update_all().when_not_matched_insert_all()
         .execute(FAILURE.to_arrow(failure_rows(failures, model_key, now_utc()))))

    @writes
    def delete_rows(self, table, where: str) -> None:
        """Delete the rows of one of this store's tables matching ``where`` (one commit)."""
        if table is not None:
            table.delete(where)

    @writes
    def delete_failure(self, model_key: str, path: str) -> None:
        table = self.open_table(FAILURES_TABLE)
        if table is not None:
            table.delete(f"{FAILURE.key} = {sql_str(failure_id(model_key, path))}")

    @writes
    def clear_failures(self, model_key: str, paths: list[str]) -> None:
        table = self.open_table(FAILURES_TABLE)
        if table is not None and paths:
            table.delete(f"model = {sql_str(model_key)} AND {sql_in('path', paths)}")

    def failures(self, model_key: str | None = None) -> list[dict]:
        table = self.open_table(FAILURES_TABLE)
        if table is None:
            return []
        rows = table.to_arrow().to_pylist()
        rows = [r for r in rows if model_key is None or r["model"] == model_key]
        return sorted(rows, key=lambda r: r["time"])


    # ---- one model's tables ----------------------------------------------------------------
    def model(self, spec) -> ModelTables:
        """The handle of one model's tables, writes, search and ANN index (``pipeline.model_store``).
        ``spec``: anything with ``key`` and ``table_suffix`` (a ``ModelSpec``, an ``ArchiveModel``,
        a ``ModelRef``). Made once per model and kept: it holds that model's search catalog."""
        handle = self._handles.get(spec.table_suffix)
        if handle is None or handle.key != spec.key:
            handle = self._handles[spec.table_suffix] = ModelTables(self, spec.key, spec.table_suffix)
        return handle

    def model_by_suffix(self, suffix: str) -> ModelTables:
        """``model`` for a caller that holds only a table suffix (a search by suffix): the key is
        the one the ``models`` table records for it (None for a suffix never registered, whose
        handle can read, and finds nothing, but not write)."""
        handle = self._handles.get(suffix)
        if handle is not None:
            return handle
        key = next((m.key for m in self.archive_models() if m.suffix == suffix), None)
        return self.model(ModelRef(key, suffix))

    # ---- summaries -------------------------------------------------------------------------
    def summary(self) -> list[dict]:
        """Each model: its key (``model``), name, weights, what loads them (``pretrained``; None
        for a checkpoint whose path is not recorded), dimension, videos, segments, ANN index, last
        indexed, and whether it is the default (the marked one, or the only one)."""
        models = self.archive_models()
        marked = any(m.is_default for m in models)
        return [{"model": model.key, "name": model.name, "weights": model.weights, "pretrained": model.pretrained,
                 "dim": model.dim, **self.model(model).stats(),
                 "default": model.is_default if marked else len(models) == 1}
                for model in models]
