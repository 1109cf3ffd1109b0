"""Reading embedding vectors out of the store, fast.

LanceDB -> Python lists -> numpy ran at ~0.6 GB/s; here a fixed-size-list column is read in large
Arrow batches and each batch's flat float32 child buffer is copied once into a preallocated
(n, dim) array, so the read runs at memory-copy speed. Id filters are Arrow hash joins
(`pc.index_in`), then `take` of just those rows: no Python loop over millions of ids.

Tables holding vectors are written in Lance's legacy (0.1) file format (see `Store`): its
fixed-size-list pages decode at memory-copy speed, ~5-15x faster than the 2.x formats here.
`open_vectors` leaves the vectors in the store and reads them block by block (`VectorBlocks.blocks`),
for pools larger than memory; `read_vectors` reads them all at once.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from schemas.errors import MixedModelsError, ParameterError, StoreError
from schemas.ids import model_slug
from schemas.tables import embedding_table_name

ID_COLUMN = {"audio": "audio_id", "text": "text_id"}
# Largest Arrow batch read at once (2,048 rows of 1024-d). Batches over glibc's mmap threshold (32 MB at
# most) are mmapped and unmapped one by one, so every batch is freshly faulted and zeroed memory: 64 MB
# batches cost 2.4 CPU s per 2 GB read against 0.97 CPU s for 8 MB ones, which the allocator reuses
# (500 k x 1024, this 2-core VM, medians of 8 interleaved reads).
BATCH_BYTES = 8 << 20
# Lance decodes batches ahead of the reader; while a streamed block is being scored that read-ahead
# would fill up (16 batches by default, 4 GB of 256 MB batches in a 2 GB --max-memory run), so keep it short.
READAHEAD = {"batch_readahead": 2, "fragment_readahead": 1, "io_buffer_size": 128 << 20}


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
    """Row positions keeping the first row of each id, or None when ids are already unique.

    Uniqueness is checked on the sorted ids (neighbours equal?): `count_distinct`'s hash table cost
    ~370 MB of RSS for 2 M ids, the sort ~50 MB."""
    if len(ids) < 2:
        return None
    ordered = ids.take(pc.array_sort_indices(ids))
    if not pc.any(pc.equal(ordered.slice(1), ordered.slice(0, len(ordered) - 1))).as_py():
        return None
    t = pa.table({"id": ids, "i": pa.array(np.arange(len(ids), dtype=np.int64))})
    first = t.group_by("id").aggregate([("i", "min")]).column("i_min").to_numpy()
    return np.sort(first)


def _batch_rows(n: int, dim: int) -> int:
    """Rows per Arrow batch: at most BATCH_BYTES and at most ~1/8 of the read (so the transient batch
    stays a small fraction of what is read)."""
    cap = max(1024, BATCH_BYTES // max(4 * dim, 1))
    return int(max(1024, min(cap, max(n // 8, 1024))))


def _select(ds, id_col: str, ids) -> tuple[np.ndarray | None, pa.Array, int]:
    """(table positions to read, or None for every row in table order; their ids; requested ids missing)."""
    table_ids = ds.to_table(columns=[id_col]).column(0).combine_chunks()
    if ids is None:
        keep = _first_occurrences(table_ids)
        if keep is None:
            return None, table_ids, 0
        return keep.astype(np.int64), table_ids.take(pa.array(keep)), 0
    wanted = pa.array(list(ids) if not isinstance(ids, (pa.Array, pa.ChunkedArray)) else ids, pa.string())
    if isinstance(wanted, pa.ChunkedArray):
        wanted = wanted.combine_chunks()
    wanted = pc.unique(wanted)
    hit = pc.is_in(table_ids, value_set=wanted)
    positions = np.flatnonzero(hit.to_numpy(zero_copy_only=False)).astype(np.int64)
    sel_ids = table_ids.take(pa.array(positions))
    keep = _first_occurrences(sel_ids)
    if keep is not None:
        positions, sel_ids = positions[keep], sel_ids.take(pa.array(keep))
    return positions, sel_ids, len(wanted) - len(positions)


@dataclass
class VectorBlocks:
    """Vectors of one modality of one model, left in the store and read block by block.

    Row i belongs to `ids[i]`; its vector is table row `positions[i]` (or row i when `positions`
    is None: every row, in table order). The dataset is pinned to the version the ids were read
    from, so a concurrent append cannot shift rows. `blocks(n)` reuses one (n, dim) buffer, so
    holding a pool costs its ids and one block, not its vectors.
    """

    model_id: str
    modality: str
    table: str
    version: int
    ids: pa.Array
    dim: int
    dataset: object = field(repr=False)
    positions: np.ndarray | None = None
    missing: int = 0
    meta: dict = field(default_factory=dict)

    @property
    def ref(self) -> str:
        return f"{self.table}@{self.version}"

    @property
    def nbytes(self) -> int:
        return len(self) * self.dim * 4

    def __len__(self) -> int:
        return len(self.ids)

    def reorder(self, order: np.ndarray) -> "VectorBlocks":
        """The rows `order` (indices into this selection), in that order."""
        order = np.asarray(order, np.int64)
        if self.positions is None and np.array_equal(order, np.arange(len(self))):
            return self  # already in this order: keep the sequential scan
        pos = order if self.positions is None else self.positions[order]
        return replace(self, ids=self.ids.take(pa.array(order)), positions=pos)

    def take(self, idx) -> np.ndarray:
        """Vectors of rows `idx` (indices into this selection), read from the store in that order."""
        idx = np.asarray(idx, np.int64)
        pos = idx if self.positions is None else self.positions[idx]
        out = np.empty((len(pos), self.dim), np.float32)
        self._take_into(pos, out)
        return out

    def _take_into(self, pos: np.ndarray, out: np.ndarray) -> None:
        step = _batch_rows(len(pos), self.dim)
        row = 0
        for i in range(0, len(pos), step):
            part = self.dataset.take(pa.array(pos[i:i + step]), columns=["vector"])
            row += _copy_vectors(part.column("vector"), out, row, self.dim)

    def blocks(self, rows: int) -> Iterator[tuple[int, np.ndarray]]:
        """(first row, vectors of rows first .. first + rows) in order; the array is reused."""
        rows = max(1, int(rows))
        buf = np.empty((min(rows, len(self)), self.dim), np.float32)
        if self.positions is not None:
            for start in range(0, len(self), rows):
                n = min(rows, len(self) - start)
                self._take_into(self.positions[start:start + n], buf[:n])
                yield start, buf[:n]
            return
        start = fill = 0
        for batch in self.dataset.to_batches(columns=["vector"], batch_size=_batch_rows(rows, self.dim), **READAHEAD):
            col = batch.column(0)
            while len(col):
                n = min(len(col), len(buf) - fill)
                _copy_vectors(col.slice(0, n), buf, fill, self.dim)
                col, fill = col.slice(n), fill + n
                if fill == len(buf):
                    yield start, buf
                    start, fill = start + fill, 0
        if fill:
            yield start, buf[:fill]

    def read(self, rows: int | None = None) -> np.ndarray:
        """Every vector of the selection in one (n, dim) array (one copy from the Arrow batches);
        `rows`: the selection's size when `ids` is not known yet (every row, in table order)."""
        out = np.empty((len(self) if rows is None else rows, self.dim), np.float32)
        if self.positions is not None:
            self._take_into(self.positions, out)
            return out
        row = 0
        for batch in self.dataset.to_batches(columns=["vector"], batch_size=_batch_rows(len(out), self.dim),
                                             **READAHEAD):
            row += _copy_vectors(batch.column(0), out, row, self.dim)
        return out[:row]


def _open(store, model_id: str, modality: str):
    """(table name, Lance dataset, vector dim, schema metadata) of a model's embedding table."""
    name, ds = _dataset(store, model_id, modality)
    meta = {k.decode(): v.decode() for k, v in (ds.schema.metadata or {}).items()}
    return name, ds, _vector_dim(ds.schema, name), meta


def open_vectors(store, model_id: str, modality: str, ids=None) -> VectorBlocks:
    """The vectors of `model_id`'s `modality` table (or of the given ids, in table order), unread.

    Requested ids with no vector are skipped and counted in `.missing`; duplicate rows of one id
    (an interrupted embed) keep the first.
    """
    name, ds, dim, meta = _open(store, model_id, modality)
    positions, sel_ids, missing = _select(ds, ID_COLUMN[modality], ids)
    return VectorBlocks(model_id, modality, name, int(ds.version), sel_ids, dim, ds, positions, missing, meta)


def read_vectors(store, model_id: str, modality: str, ids=None) -> Vectors:
    """All vectors of `model_id`'s `modality` table (or of the given ids, in table order), in memory.

    Requested ids with no vector are skipped and counted in `.missing`; duplicate rows of one id
    (an interrupted embed) keep the first.
    """
    if ids is None:
        return _read_whole_table(store, model_id, modality)
    src = open_vectors(store, model_id, modality, ids)
    return Vectors(model_id, modality, src.table, src.version, src.ids, src.read(), src.missing, src.meta)


def _read_whole_table(store, model_id: str, modality: str) -> Vectors:
    """Every row, read while a second thread reads the ids and checks them for duplicates (both
    release the GIL): the id work was a quarter of the read of 500 k x 1024 vectors. Our writers insert
    each id once; if another tool wrote duplicate ids, the first rows are then picked out of the array."""
    src = whole_table(store, model_id, modality)
    ds = src.dataset
    with ThreadPoolExecutor(1, thread_name_prefix="vector-ids") as pool:
        selected = pool.submit(_select, ds, ID_COLUMN[modality], None)
        vecs = src.read(ds.count_rows())
        positions, sel_ids, _ = selected.result()
    if positions is not None:
        vecs = vecs[positions]
    return Vectors(model_id, modality, src.table, src.version, sel_ids, vecs, 0, src.meta)


def whole_table(store, model_id: str, modality: str) -> VectorBlocks:
    """Every row of the table, in table order, without reading its ids (`ids` is empty; `read(rows)`
    takes the row count): the vectors alone, as `np.load` would read them from a file."""
    name, ds, dim, meta = _open(store, model_id, modality)
    return VectorBlocks(model_id, modality, name, int(ds.version), pa.array([], pa.string()), dim, ds, None, 0, meta)


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
