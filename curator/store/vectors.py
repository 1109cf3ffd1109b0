"""Reading embedding vectors out of the store, fast.

LanceDB -> Python lists -> numpy ran at ~0.6 GB/s; here a fixed-size-list column is read in large
Arrow batches and each batch's flat float32 child buffer is copied once into a preallocated
(n, dim) array, so the read runs at memory-copy speed. Id filters are Arrow hash joins
(`pc.index_in`), then `take` of just those rows: no Python loop over millions of ids.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from schemas.errors import MixedModelsError, ParameterError, StoreError
from schemas.ids import model_slug
from schemas.tables import embedding_table_name

ID_COLUMN = {"audio": "audio_id", "text": "text_id"}
BATCH_ROWS = 131_072  # 512-d: 256 MB per batch; large enough that per-batch overhead vanishes


@dataclass
class Vectors:
    """Vectors of one modality of one model, row i of `vecs` belongs to `ids[i]`."""

    model_id: str
    modality: str
    table: str
    version: int
    ids: pa.Array
    vecs: np.ndarray
    missing: int = 0  # requested ids with no vector in the table
    meta: dict = field(default_factory=dict)

    @property
    def dim(self) -> int:
        return int(self.vecs.shape[1])

    @property
    def ref(self) -> str:
        return f"{self.table}@{self.version}"

    def __len__(self) -> int:
        return int(self.vecs.shape[0])


def embedding_table(model_id: str, modality: str) -> str:
    """`emb_<slug>_<modality>`: the table holding a model's vectors of one modality."""
    if modality not in ID_COLUMN:
        raise ParameterError(f"modality must be 'audio' or 'text', got {modality!r}")
    return embedding_table_name(model_slug(model_id), modality)


def vector_array(vecs: np.ndarray) -> pa.FixedSizeListArray:
    """(n, dim) vectors as the fixed-size float32 list column every vector table stores."""
    vecs = np.ascontiguousarray(vecs, dtype=np.float32)
    return pa.FixedSizeListArray.from_arrays(pa.array(vecs.reshape(-1)), int(vecs.shape[1]))


def _dataset(store, model_id: str, modality: str):
    name = embedding_table(model_id, modality)
    if not store.has(name):
        raise StoreError(
            f"model {model_id!r} has no {modality} embeddings: table {name!r} is missing "
            f"(run `curator embed {modality} --model {model_id}` first)"
        )
    return name, store.dataset(name)


def _vector_dim(schema: pa.Schema, name: str) -> int:
    idx = schema.get_field_index("vector")
    if idx < 0:
        raise StoreError(f"table {name!r} has no 'vector' column")
    t = schema.field(idx).type
    if not pa.types.is_fixed_size_list(t) or not pa.types.is_float32(t.value_type):
        raise StoreError(f"table {name!r}: column 'vector' is {t}, expected a fixed-size list of float32")
    return int(t.list_size)


def _copy_vectors(column, out: np.ndarray, start: int, dim: int) -> int:
    """Copy the chunks of a fixed-size-list column into `out[start:]`; return rows copied."""
    chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
    row = start
    for chunk in chunks:
        if chunk.null_count:
            raise StoreError("embedding table has null vectors; re-embed the affected items")
        flat = chunk.flatten().to_numpy(zero_copy_only=True)  # flatten() honours slice offsets
        n = len(chunk)
        out[row:row + n] = flat.reshape(n, dim)
        row += n
    return row - start


def _first_occurrences(ids: pa.Array) -> np.ndarray | None:
    """Row positions keeping the first row of each id, or None when ids are already unique."""
    if pc.count_distinct(ids).as_py() == len(ids):
        return None
    t = pa.table({"id": ids, "i": pa.array(np.arange(len(ids), dtype=np.int64))})
    first = t.group_by("id").aggregate([("i", "min")]).column("i_min").to_numpy()
    return np.sort(first)


def _read_all(ds, id_col: str, dim: int, n: int) -> tuple[pa.Array, np.ndarray]:
    out = np.empty((n, dim), dtype=np.float32)
    id_chunks = []
    row = 0
    for batch in ds.to_batches(columns=[id_col, "vector"], batch_size=BATCH_ROWS):
        if row + batch.num_rows > n:  # a concurrent append: grow rather than overrun
            out = np.concatenate([out, np.empty((batch.num_rows, dim), np.float32)])
        row += _copy_vectors(batch.column(1), out, row, dim)
        id_chunks.append(batch.column(0))
    ids = pa.chunked_array(id_chunks, type=pa.string()).combine_chunks() if id_chunks else pa.array([], pa.string())
    return ids, out[:row]


def _take(ds, positions: np.ndarray, dim: int) -> np.ndarray:
    out = np.empty((len(positions), dim), dtype=np.float32)
    row = 0
    for i in range(0, len(positions), BATCH_ROWS):
        part = ds.take(pa.array(positions[i:i + BATCH_ROWS]), columns=["vector"])
        row += _copy_vectors(part.column("vector"), out, row, dim)
    return out


def read_vectors(store, model_id: str, modality: str, ids=None) -> Vectors:
    """All vectors of `model_id`'s `modality` table (or of the given ids, in table order).

    Requested ids with no vector are skipped and counted in `.missing`; duplicate rows of one id
    (an interrupted embed) keep the first.
    """
    name, ds = _dataset(store, model_id, modality)
    id_col = ID_COLUMN[modality]
    dim = _vector_dim(ds.schema, name)
    meta = {k.decode(): v.decode() for k, v in (ds.schema.metadata or {}).items()}
    version = int(ds.version)
    missing = 0
    if ids is None:
        all_ids, vecs = _read_all(ds, id_col, dim, ds.count_rows())
        keep = _first_occurrences(all_ids)
        if keep is not None:
            all_ids, vecs = all_ids.take(pa.array(keep)), vecs[keep]
        return Vectors(model_id, modality, name, version, all_ids, vecs, 0, meta)
    wanted = pa.array(list(ids) if not isinstance(ids, (pa.Array, pa.ChunkedArray)) else ids, pa.string())
    if isinstance(wanted, pa.ChunkedArray):
        wanted = wanted.combine_chunks()
    wanted = pc.unique(wanted)
    table_ids = ds.to_table(columns=[id_col]).column(0).combine_chunks()
    hit = pc.is_in(table_ids, value_set=wanted)
    positions = np.flatnonzero(hit.to_numpy(zero_copy_only=False)).astype(np.int64)
    sel_ids = table_ids.take(pa.array(positions))
    keep = _first_occurrences(sel_ids)
    if keep is not None:
        positions, sel_ids = positions[keep], sel_ids.take(pa.array(keep))
    missing = len(wanted) - len(positions)
    vecs = _take(ds, positions, dim) if len(positions) else np.empty((0, dim), np.float32)
    return Vectors(model_id, modality, name, version, sel_ids, vecs, missing, meta)


def check_model(v: Vectors, model=None) -> None:
    """Refuse vectors that are not `v.model_id`'s: a table whose metadata names another model, or
    whose size disagrees with the registered model's (`model`, a ModelRecord)."""
    stated = v.meta.get("model_id") or v.meta.get("model")
    if stated and stated != v.model_id:
        raise MixedModelsError(f"table {v.table} holds vectors of model {stated!r}, not {v.model_id!r}")
    if model is not None and model.dim and model.dim != v.dim:
        raise MixedModelsError(f"model {model.model_id!r} is {model.dim}-d but {v.table} holds {v.dim}-d vectors")


def check_same_model(text: Vectors, audio: Vectors, model=None) -> int:
    """Refuse to score vectors of two models against each other; return the shared dimension.

    Catches a different model id and vectors of different sizes, then `check_model` on each side.
    """
    if text.model_id != audio.model_id:
        raise MixedModelsError(
            f"refusing to mix models: texts from {text.model_id!r} ({text.table}) and audio from "
            f"{audio.model_id!r} ({audio.table}); embed both with one model"
        )
    if text.dim != audio.dim:
        raise MixedModelsError(
            f"refusing to mix vectors: {text.table} is {text.dim}-d but {audio.table} is {audio.dim}-d "
            f"(they cannot come from one model {text.model_id!r})"
        )
    for v in (text, audio):
        check_model(v, model)
    return text.dim
