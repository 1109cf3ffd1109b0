"""Writing vectors into a model's embedding table: one Lance commit per buffer.

Each write is one Lance commit (atomic) of the ids that have no vector yet, checked and written
under the table's lock, so a crash loses at most the buffer in flight and never leaves half of it,
and concurrent embeds of overlapping shards write every id once.
"""

from __future__ import annotations

import time

import numpy as np
import pyarrow as pa

from curator.models.registry import ModelRecord
from curator.store.store import Store
from curator.store.vectors import ID_COLUMN, vector_array
from schemas.errors import MixedModelsError
from schemas.tables import embeddings

FLUSH_ROWS = 2048
FLUSH_SECONDS = 10.0


def table_schema(record: ModelRecord, modality: str) -> pa.Schema:
    # The metadata lets readers (curator.store.vectors) refuse a table that holds another model's vectors.
    return embeddings(ID_COLUMN[modality], record.dim).with_metadata(
        {"model_id": record.model_id, "model_sha256": record.sha256})


def ensure_table(store: Store, record: ModelRecord, modality: str):
    """Open (or create) the model's embedding table, refusing one made by another model."""
    name = record.table(modality)
    schema = table_schema(record, modality)
    table = store.table(name, schema)
    vec = table.schema.field("vector").type
    if getattr(vec, "list_size", None) != record.dim:
        raise MixedModelsError(f"table {name} holds {getattr(vec, 'list_size', '?')}-d vectors but model "
                               f"{record.model_id!r} is {record.dim}-d; refusing to mix models")
    stated = (table.schema.metadata or {}).get(b"model_id")
    if stated and stated.decode() != record.model_id:
        raise MixedModelsError(f"table {name} holds vectors of model {stated.decode()!r}, not {record.model_id!r}")
    return table


def vectors_table(ids: list[str], vecs: np.ndarray, schema: pa.Schema) -> pa.Table:
    return pa.Table.from_arrays([pa.array(ids, pa.string()), vector_array(vecs)], schema=schema)


def insert_vectors(store: Store, name: str, data: pa.Table, schema: pa.Schema) -> int:
    """Insert the vectors whose id has none yet (a keyed insert under the table's lock, with Lance
    commit races retried by the store): concurrent embeds of overlapping ids write each id once.
    Returns how many were new."""
    return store.upsert(name, data, key=(data.schema.names[0],), schema=schema)


class BufferedWriter:
    """Buffers vectors and appends them in large commits: every Lance commit is a version and a
    fragment, and thousands of 32-row fragments make every later read of the table slow. A crash
    loses at most the buffer (`flush_rows` rows or `FLUSH_SECONDS` of work), which the rerun redoes.

    Failed items (and non-finite vectors) go to the store's `errors` table, stage "embed".
    """

    def __init__(self, store: Store, record: ModelRecord, modality: str, flush_rows: int = FLUSH_ROWS):
        self.store, self.record, self.modality = store, record, modality
        self.schema = table_schema(record, modality)
        self.flush_rows = max(1, flush_rows)
        self.written = 0
        self.failures: list[dict] = []
        self._ids: list[str] = []
        self._vecs: list[np.ndarray] = []
        self._since = time.perf_counter()

    def write(self, ids: list[str], vecs: np.ndarray, failures: list[dict]) -> None:
        ok = np.isfinite(vecs).all(axis=1) if len(ids) else np.zeros(0, bool)
        for i in np.flatnonzero(~ok):
            failures.append({"item_id": ids[i], "uri": None, "message": f"{self.record.model_id}: non-finite vector"})
        if ok.any():
            self._ids.extend(ids[i] for i in np.flatnonzero(ok))
            self._vecs.append(vecs[ok])
            if len(self._ids) >= self.flush_rows or time.perf_counter() - self._since >= FLUSH_SECONDS:
                self.flush()
        if failures:
            self.store.record_errors([{**f, "stage": "embed"} for f in failures])
            self.failures.extend(failures)

    def flush(self) -> None:
        if self._ids:
            data = vectors_table(self._ids, np.concatenate(self._vecs), self.schema)
            self.written += insert_vectors(self.store, self.record.table(self.modality), data, self.schema)
        self._ids, self._vecs, self._since = [], [], time.perf_counter()
