"""`vidsift calibrate`: a rival bank fitted on the user's own archive (no labels), stored in it.

Why in the archive: the fitted bank describes *that* archive's segments, so it belongs with them,
one table per model (``calibration_<model table suffix>``), and every search of the archive, by any
process, reads the same one. Loaded banks are kept per table version, so a re-fit is seen at once.
"""
from __future__ import annotations

import datetime as dt
import json
import threading

import numpy as np
import pyarrow as pa

from .confidence_bank import RivalBank, fit_bank
from .confidence_words import VOCABULARY_SIZE, model_vocabulary, world_descriptions
from .errors import InputError
from .search import require_indexed

CALIBRATION_META_KEY = b"vidsift_calibration"
SAMPLE_SEGMENTS = 20_000

_BANKS: dict[tuple, RivalBank] = {}
_LOCK = threading.Lock()


def calibration_table_name(suffix: str) -> str:
    return f"calibration_{suffix}"


def _sample_vectors(table, sample: int, seed: int) -> np.ndarray:
    dataset = table.to_lance()
    total = dataset.count_rows()
    if total == 0:
        return np.zeros((0, 0), dtype=np.float32)
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(total, size=min(total, sample), replace=False))
    column = dataset.take(rows.tolist(), columns=["vector"]).column("vector")
    return np.asarray(column.combine_chunks().flatten().to_numpy(zero_copy_only=False),
                      dtype=np.float32).reshape(len(rows), -1)


def fit_calibration(store, encoder, sample: int = SAMPLE_SEGMENTS, vocabulary_size: int = VOCABULARY_SIZE,
                    seed: int = 0, progress=None) -> dict:
    """`vidsift calibrate`: fit the rival bank of ``encoder``'s model on this archive (no labels) and
    store it in ``calibration_<model>`` (replacing a previous one). Returns a report."""
    spec = encoder.spec
    require_indexed(store, spec)
    table = store.model(spec).segments()
    if table is None or table.count_rows() == 0:
        raise InputError(f"Nothing is indexed with {spec.key}: index videos before calibrating.")
    segments = table.count_rows()
    x = _sample_vectors(table, sample, seed)
    # A closed world's rivals are its descriptions (see models.registry.ClosedWorld): the fit keeps
    # those that describe this archive. Any other model's are its words and pairs of them.
    world = world_descriptions(spec)
    candidates, origin = world or model_vocabulary(spec, vocabulary_size)
    bank = fit_bank(encoder, x, candidates, progress=progress, pairs=world is None)
    bank.info["vocabulary"] = origin
    info = {**bank.info, "model": spec.key, "segments": segments, "table_version": int(table.version),
            "fitted_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "phrases": len(bank.phrases), "seed": seed}
    dim = bank.vectors.shape[1] if len(bank.phrases) else encoder.embed_dim
    schema = pa.schema([pa.field("phrase", pa.string()), pa.field("vector", pa.list_(pa.float32(), dim))],
                       metadata={CALIBRATION_META_KEY: json.dumps(info).encode()})
    data = pa.table({"phrase": pa.array(bank.phrases, pa.string()),
                     "vector": pa.FixedSizeListArray.from_arrays(pa.array(bank.vectors.ravel(), pa.float32()), dim)},
                    schema=schema)
    with store.exclusive_writer():
        store.db.create_table(calibration_table_name(spec.table_suffix), data, mode="overwrite")
    with _LOCK:
        _BANKS.clear()
    return {**info, "examples": bank.phrases[:12]}


def format_calibration(report: dict) -> str:
    """`vidsift calibrate`'s human text."""
    return (f"calibrated {report['model']} on this archive ({report['segments']} segments, "
            f"{report['segments_sampled']} sampled, no labels): {report['phrases']} rival phrases from "
            f"{report['candidates']} candidates ({report['vocabulary']}); e.g. "
            + ", ".join(report["examples"][:8]))


def load_fitted_bank(store, suffix: str) -> RivalBank | None:
    """The stored rival bank of a model, or None; cached per table version."""
    table = store.open_table(calibration_table_name(suffix))
    if table is None:
        return None
    key = (store.uri, suffix, int(table.version))
    with _LOCK:
        if key in _BANKS:
            return _BANKS[key]
    data = table.to_arrow()
    info = json.loads((data.schema.metadata or {}).get(CALIBRATION_META_KEY, b"{}"))
    vectors = np.asarray(data.column("vector").combine_chunks().flatten().to_numpy(zero_copy_only=False),
                         dtype=np.float32).reshape(data.num_rows, -1)
    bank = RivalBank(data.column("phrase").to_pylist(), vectors, "fitted", info)
    with _LOCK:
        _BANKS[key] = bank
    return bank
