"""Importing vectors made elsewhere (another machine, a cluster job) into a model's embedding table.

Accepted files: a parquet file with an id column (`id`, `audio_id` or `text_id`) and a `vector`
column (list or fixed-size list of floats), or a `.npy` (n, dim) array plus an ids file with one id
per line. Every id must exist in `audio` / `texts`, the dimension must be the registered model's,
vectors must be finite and non-zero; they are L2-normalised on the way in. Ids that already have a
vector are skipped, so an import can be rerun.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curator.embed.pending import SOURCE, done_ids
from curator.embed.writer import ensure_table, insert_vectors, table_schema, vectors_table
from curator.models.registry import get_model
from curator.store.store import Store
from curator.store.vectors import ID_COLUMN
from schemas.errors import MixedModelsError, ModelError, ParameterError, StoreError

CHUNK_ROWS = 65_536


@dataclass(frozen=True)
class ImportSummary:
    model_id: str
    modality: str
    table: str
    rows: int
    imported: int
    skipped: int

    def line(self) -> str:
        return (f"imported {self.imported} {self.modality} vectors of {self.model_id} into {self.table} "
                f"({self.rows} in file, {self.skipped} already present)")


def _parquet(path: Path, modality: str) -> tuple[list[str], np.ndarray]:
    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises ArrowInvalid / OSError variants
        raise ParameterError(f"{path}: not a readable parquet file ({str(exc).splitlines()[0]})") from None
    id_col = next((c for c in ("id", ID_COLUMN[modality]) if c in table.column_names), None)
    if id_col is None or "vector" not in table.column_names:
        raise ParameterError(f"{path}: needs columns 'id' (or {ID_COLUMN[modality]!r}) and 'vector'; "
                             f"has {', '.join(table.column_names)}")
    vec = table.column("vector").combine_chunks()
    if not (pa.types.is_list(vec.type) or pa.types.is_large_list(vec.type) or pa.types.is_fixed_size_list(vec.type)):
        raise ParameterError(f"{path}: column 'vector' is {vec.type}, expected a list of floats")
    if vec.null_count:
        raise ParameterError(f"{path}: column 'vector' has {vec.null_count} null row(s)")
    lengths = pc.list_value_length(vec).to_numpy(zero_copy_only=False)
    if len(lengths) and (lengths != lengths[0]).any():
        raise ParameterError(f"{path}: vectors have different lengths ({lengths.min()}..{lengths.max()})")
    dim = int(lengths[0]) if len(lengths) else 0
    flat = vec.flatten().to_numpy(zero_copy_only=False).astype(np.float32)
    return table.column(id_col).to_pylist(), flat.reshape(len(vec), dim)


def _npy(path: Path, ids_path: str | None) -> tuple[list[str], np.ndarray]:
    if not ids_path:
        raise ParameterError(f"{path}: a .npy file needs --ids FILE (one id per line, in row order)")
    try:
        vecs = np.load(path, allow_pickle=False)
    except Exception as exc:  # ValueError for pickled / corrupt files
        raise ParameterError(f"{path}: not a readable .npy array ({str(exc).splitlines()[0]})") from None
    if vecs.ndim != 2:
        raise ParameterError(f"{path}: expected a 2-d (rows, dim) array, got shape {vecs.shape}")
    ids = [line.strip() for line in Path(ids_path).read_text(encoding="utf-8").splitlines() if line.strip()]
    return ids, vecs.astype(np.float32)


def read_vector_file(path: str, modality: str, ids_path: str | None = None) -> tuple[list[str], np.ndarray]:
    p = Path(path)
    if not p.is_file():
        raise ParameterError(f"{path}: no such file")
    if p.suffix == ".npy":
        return _npy(p, ids_path)
    return _parquet(p, modality)


def _check(ids: list[str], vecs: np.ndarray, dim: int, model_id: str, path: str) -> np.ndarray:
    if len(ids) != len(vecs):
        raise ParameterError(f"{path}: {len(ids)} ids but {len(vecs)} vectors")
    if None in ids:
        raise ParameterError(f"{path}: an id is null")
    if len(set(ids)) != len(ids):
        raise ParameterError(f"{path}: {len(ids) - len(set(ids))} duplicate id(s)")
    if vecs.shape[1] != dim:
        raise MixedModelsError(f"{path}: vectors are {vecs.shape[1]}-d but model {model_id!r} is {dim}-d; "
                               f"refusing to mix models")
    if not np.isfinite(vecs).all():
        raise ParameterError(f"{path}: {int((~np.isfinite(vecs).all(axis=1)).sum())} vector(s) have NaN or inf")
    norms = np.linalg.norm(vecs, axis=1, keepdims=True)
    if (norms == 0).any():
        raise ParameterError(f"{path}: {int((norms == 0).sum())} vector(s) are all zero")
    return (vecs / norms).astype(np.float32)


def import_embeddings(store: Store, model: str, modality: str, path: str, ids_path: str | None = None) -> ImportSummary:
    if modality not in ID_COLUMN:
        raise ParameterError(f"--modality must be audio or text, got {modality!r}")
    record = get_model(store, model)
    if modality not in record.modalities:
        raise ModelError(f"model {record.model_id!r} ({record.kind}) has no {modality} side")
    ids, vecs = read_vector_file(path, modality, ids_path)
    vecs = _check(ids, vecs, record.dim, record.model_id, path)
    source, _ = SOURCE[modality]
    if not store.has(source):
        raise StoreError(f"store has no {source!r} table; ingest first")
    known = store.read(source, columns=[ID_COLUMN[modality]]).column(0).combine_chunks()
    id_arr = pa.array(ids, pa.string())
    unknown = pc.invert(pc.is_in(id_arr, value_set=known)).to_numpy(zero_copy_only=False)
    if unknown.any():
        sample = ", ".join(id_arr.filter(pa.array(unknown)).to_pylist()[:3])
        raise ParameterError(f"{path}: {int(unknown.sum())} id(s) not in table {source}, e.g. {sample}")
    ensure_table(store, record, modality)
    new = pc.invert(pc.is_in(id_arr, value_set=done_ids(store, record, modality))).to_numpy(zero_copy_only=False)
    keep = np.flatnonzero(new)
    schema = table_schema(record, modality)
    for s in range(0, len(keep), CHUNK_ROWS):
        part = keep[s:s + CHUNK_ROWS]
        insert_vectors(store, record.table(modality), vectors_table([ids[i] for i in part], vecs[part], schema), schema)
    return ImportSummary(record.model_id, modality, record.table(modality), len(ids), len(keep), len(ids) - len(keep))
