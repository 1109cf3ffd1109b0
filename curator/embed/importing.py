"""Importing vectors made elsewhere (another machine, a cluster job) into a model's embedding table.

Accepted inputs:
- a parquet file with an id column (`id`, `audio_id` or `text_id`, or `--id-column`) and a `vector`
  column (list or fixed-size list of floats);
- a `.npy` (n, dim) array plus an ids file with one id per line;
- a folder of shards, read one shard at a time in chunks of `chunk_rows(dim)` rows (memory does not grow
  with the shard or the folder):
  * `NAME.npy` + a parquet of ids in row order: `NAME.parquet` beside it, or `metadata_K.parquet`
    in a `metadata/` folder for `..._K.npy` (the layout clip-retrieval writes and embedding-reader's
    `parquet_npy` format reads: `img_emb/img_emb_0.npy` + `metadata/metadata_0.parquet`);
  * parquet shards with an id column and a `vector` column.

Every id must exist in `audio` / `texts`, the dimension must be the registered model's, vectors must
be finite and non-zero, ids unique within a file; they are L2-normalised on the way in. A shard (or
file) is checked whole before any of its rows is written. Ids that already have a vector are
skipped, so an import can be rerun; a folder import also records each finished shard in the
`imports` table (by a fingerprint of its files), and a rerun skips those shards without reading them.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curator.embed.pending import SOURCE, done_ids
from curator.embed.writer import ensure_table, insert_vectors, table_schema, vectors_table
from curator.models.registry import ModelRecord, get_model
from curator.store.keys import is_in
from curator.store.store import Store, now
from curator.store.vectors import ID_COLUMN
from schemas.errors import MixedModelsError, ModelError, ParameterError, StoreError
from schemas.tables import IMPORTS

CHUNK_ROWS = 65_536  # at most this many rows per chunk read and per append...
CHUNK_BYTES = 64 << 20  # ...and at most this many bytes of vectors: 16,384 rows at 1024-d


def chunk_rows(dim: int) -> int:
    """Rows per chunk for `dim`-d vectors. Each chunk passes through a few transient copies (decoded
    Arrow batch, float32 array, Arrow table for the append), so its size, not the shard's, sets the
    import's memory: a 100 k x 1024 shard peaked at 2.65 GB of RSS with 65,536-row chunks."""
    return max(1024, min(CHUNK_ROWS, CHUNK_BYTES // max(4 * dim, 1)))
FINGERPRINT_BYTES = 1 << 16


@dataclass(frozen=True)
class ImportSummary:
    model_id: str
    modality: str
    table: str
    rows: int
    imported: int
    skipped: int
    shards: int = 0  # folder imports: shards found
    shards_skipped: int = 0  # of those, imported by an earlier run (not read again)

    def line(self) -> str:
        where = "in file" if not self.shards else f"in {self.shards - self.shards_skipped} shard(s) read"
        text = (f"imported {self.imported} {self.modality} vectors of {self.model_id} into {self.table} "
                f"({self.rows} {where}, {self.skipped} already present)")
        if self.shards:
            text += f"; {self.shards_skipped} of {self.shards} shard(s) skipped as imported before"
        return text


# -- reading -------------------------------------------------------------------------------------
def _id_column(names: list[str], modality: str, id_column: str | None, path: Path) -> str:
    wanted = (id_column,) if id_column else ("id", ID_COLUMN[modality])
    found = next((c for c in wanted if c in names), None)
    if found is None:
        raise ParameterError(f"{path}: needs an id column ({' or '.join(map(repr, wanted))}); has {', '.join(names)}")
    return found


def _vectors_of(vec: pa.Array, path: Path) -> np.ndarray:
    if not (pa.types.is_list(vec.type) or pa.types.is_large_list(vec.type) or pa.types.is_fixed_size_list(vec.type)):
        raise ParameterError(f"{path}: column 'vector' is {vec.type}, expected a list of floats")
    if vec.null_count:
        raise ParameterError(f"{path}: column 'vector' has {vec.null_count} null row(s)")
    lengths = pc.list_value_length(vec).to_numpy(zero_copy_only=False)
    if len(lengths) and (lengths != lengths[0]).any():
        raise ParameterError(f"{path}: vectors have different lengths ({lengths.min()}..{lengths.max()})")
    dim = int(lengths[0]) if len(lengths) else 0
    flat = vec.flatten().to_numpy(zero_copy_only=False).astype(np.float32)
    return flat.reshape(len(vec), dim)


def _open_parquet(path: Path) -> pq.ParquetFile:
    try:
        return pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises ArrowInvalid / OSError variants
        raise ParameterError(f"{path}: not a readable parquet file ({str(exc).splitlines()[0]})") from None


def _parquet_chunks(path: Path, modality: str, id_column: str | None,
                    rows: int = CHUNK_ROWS) -> Iterator[tuple[list, np.ndarray]]:
    """(ids, vectors) of a parquet file with id + vector columns, `rows` rows at a time."""
    pf = _open_parquet(path)
    names = pf.schema_arrow.names
    col = _id_column(names, modality, id_column, path)
    if "vector" not in names:
        raise ParameterError(f"{path}: needs columns {col!r} and 'vector'; has {', '.join(names)}")
    for batch in pf.iter_batches(batch_size=rows, columns=[col, "vector"]):
        yield batch.column(0).to_pylist(), _vectors_of(batch.column(1), path)


def _load_npy(path: Path) -> np.ndarray:
    try:
        vecs = np.load(path, mmap_mode="r", allow_pickle=False)
    except Exception as exc:  # ValueError for pickled / corrupt files
        raise ParameterError(f"{path}: not a readable .npy array ({str(exc).splitlines()[0]})") from None
    if vecs.ndim != 2:
        raise ParameterError(f"{path}: expected a 2-d (rows, dim) array, got shape {vecs.shape}")
    return vecs


def _npy_chunks(path: Path, ids: list, rows: int = CHUNK_ROWS) -> Iterator[tuple[list, np.ndarray]]:
    """(ids, vectors) of a memory-mapped .npy, `rows` rows at a time (ids in row order)."""
    vecs = _load_npy(path)
    if len(ids) != len(vecs):
        raise ParameterError(f"{path}: {len(ids)} ids but {len(vecs)} vectors")
    for s in range(0, len(vecs), rows):
        yield ids[s:s + rows], np.asarray(vecs[s:s + rows], dtype=np.float32)


def _parquet_ids(path: Path, modality: str, id_column: str | None) -> list:
    pf = _open_parquet(path)
    col = _id_column(pf.schema_arrow.names, modality, id_column, path)
    return pf.read(columns=[col]).column(0).to_pylist()


def read_vector_file(path: str, modality: str, ids_path: str | None = None,
                     id_column: str | None = None) -> tuple[list[str], np.ndarray]:
    """All (ids, vectors) of one file (a parquet, or a .npy with its ids file)."""
    p = Path(path)
    if not p.is_file():
        raise ParameterError(f"{path}: no such file")
    if p.suffix == ".npy":
        if not ids_path:
            raise ParameterError(f"{path}: a .npy file needs --ids FILE (one id per line, in row order)")
        ids = [line.strip() for line in Path(ids_path).read_text(encoding="utf-8").splitlines() if line.strip()]
        chunks = list(_npy_chunks(p, ids))
    else:
        chunks = list(_parquet_chunks(p, modality, id_column))
    if not chunks:
        return [], np.zeros((0, 0), np.float32)
    return [i for ids, _ in chunks for i in ids], np.concatenate([v for _, v in chunks])


# -- shards --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Shard:
    name: str  # the vector file's path relative to the imported folder
    vectors: Path
    ids: Path | None  # the parquet of ids of a .npy shard

    def fingerprint(self, model_id: str, modality: str) -> str:
        """Size plus head and tail bytes of the shard's files: cheap, and it survives a copy of the folder."""
        h = hashlib.sha256(f"{model_id}\0{modality}\0{self.name}".encode("utf-8"))
        for path in (self.vectors, self.ids):
            if path is None:
                continue
            size = path.stat().st_size
            h.update(f"\0{size}\0".encode())
            with open(path, "rb") as fh:
                h.update(fh.read(FINGERPRINT_BYTES))
                fh.seek(max(0, size - FINGERPRINT_BYTES))
                h.update(fh.read(FINGERPRINT_BYTES))
        return h.hexdigest()

    def chunks(self, modality: str, id_column: str | None, rows: int = CHUNK_ROWS) -> Iterator[tuple[list, np.ndarray]]:
        if self.ids is None:
            return _parquet_chunks(self.vectors, modality, id_column, rows)
        return _npy_chunks(self.vectors, _parquet_ids(self.ids, modality, id_column), rows)


_TRAILING_NUMBER = re.compile(r"(\d+)$")


def _ids_file(npy: Path, root: Path) -> Path | None:
    beside = npy.with_suffix(".parquet")
    if beside.is_file():
        return beside
    number = _TRAILING_NUMBER.search(npy.stem)
    if number:
        for folder in (npy.parent / "metadata", npy.parent.parent / "metadata", root / "metadata"):
            candidate = folder / f"metadata_{number.group(1)}.parquet"
            if candidate.is_file():
                return candidate
    return None


def find_shards(folder: str | Path) -> list[Shard]:
    """The shards of `folder` (see the module docstring), in a stable order."""
    root = Path(folder)
    if not root.is_dir():
        raise ParameterError(f"{folder}: no such folder")
    shards: list[Shard] = []
    used: set[Path] = set()
    for npy in sorted(root.rglob("*.npy")):
        ids = _ids_file(npy, root)
        if ids is None:
            raise ParameterError(f"{npy}: no parquet of ids for this shard ({npy.stem}.parquet beside it, or "
                                 f"metadata/metadata_K.parquet for a ..._K.npy)")
        used.add(ids)
        shards.append(Shard(npy.relative_to(root).as_posix(), npy, ids))
    for parquet in sorted(root.rglob("*.parquet")):
        if parquet not in used:
            shards.append(Shard(parquet.relative_to(root).as_posix(), parquet, None))
    if not shards:
        raise ParameterError(f"{folder}: no shards (*.npy with a parquet of ids, or *.parquet with id + vector)")
    return sorted(shards, key=lambda s: s.name)


# -- checking and writing ------------------------------------------------------------------------
def _check(ids: list, vecs: np.ndarray, dim: int, model_id: str, path: str) -> np.ndarray:
    if len(ids) != len(vecs):
        raise ParameterError(f"{path}: {len(ids)} ids but {len(vecs)} vectors")
    if None in ids:
        raise ParameterError(f"{path}: an id is null")
    if vecs.ndim != 2 or vecs.shape[1] != dim:
        width = vecs.shape[1] if vecs.ndim == 2 else "?"
        raise MixedModelsError(f"{path}: vectors are {width}-d but model {model_id!r} is {dim}-d; "
                               f"refusing to mix models")
    if not np.isfinite(vecs).all():
        raise ParameterError(f"{path}: {int((~np.isfinite(vecs).all(axis=1)).sum())} vector(s) have NaN or inf")
    norms = np.linalg.norm(vecs, axis=1, keepdims=True)
    if (norms == 0).any():
        raise ParameterError(f"{path}: {int((norms == 0).sum())} vector(s) are all zero")
    if vecs.dtype == np.float32 and vecs.flags.writeable and not isinstance(vecs, np.memmap):
        # Every caller passes a chunk decoded for this import (read-only memory maps excepted):
        # normalise it in place instead of holding a second copy.
        return np.divide(vecs, norms, out=vecs)
    return (vecs / norms).astype(np.float32, copy=False)


class _Importer:
    """The checks and the writes shared by file and folder imports, for one model and modality."""

    def __init__(self, store: Store, model: str, modality: str):
        if modality not in ID_COLUMN:
            raise ParameterError(f"--modality must be audio or text, got {modality!r}")
        record: ModelRecord = get_model(store, model)
        if modality not in record.modalities:
            raise ModelError(f"model {record.model_id!r} ({record.kind}) has no {modality} side")
        source, _ = SOURCE[modality]
        if not store.has(source):
            raise StoreError(f"store has no {source!r} table; ingest first")
        self.store, self.record, self.modality = store, record, modality
        self.known = store.read(source, columns=[ID_COLUMN[modality]]).column(0).combine_chunks()
        self.source = source
        ensure_table(store, record, modality)
        self.done = done_ids(store, record, modality)
        self.schema = table_schema(record, modality)

    def check_ids(self, ids: list, seen: set, path: str) -> None:
        dup = len(ids) - len(set(ids)) + sum(1 for i in set(ids) if i in seen)
        if dup:
            raise ParameterError(f"{path}: {dup} duplicate id(s)")
        id_arr = pa.array(ids, pa.string())
        unknown = pc.invert(is_in(id_arr, self.known)).to_numpy(zero_copy_only=False)
        if unknown.any():
            sample = ", ".join(id_arr.filter(pa.array(unknown)).to_pylist()[:3])
            raise ParameterError(f"{path}: {int(unknown.sum())} id(s) not in table {self.source}, e.g. {sample}")
        seen.update(ids)

    def write(self, ids: list, vecs: np.ndarray) -> int:
        """Append the rows whose id has no vector yet; return how many."""
        id_arr = pa.array(ids, pa.string())
        keep = np.flatnonzero(pc.invert(is_in(id_arr, self.done)).to_numpy(zero_copy_only=False))
        step = chunk_rows(self.record.dim)
        for s in range(0, len(keep), step):
            part = keep[s:s + step]
            insert_vectors(self.store, self.record.table(self.modality),
                            vectors_table([ids[i] for i in part], vecs[part], self.schema), self.schema)
        if len(keep):
            self.done = pa.concat_arrays([self.done, id_arr.take(pa.array(keep))])
        return len(keep)

    def shard(self, shard: Shard, id_column: str | None) -> tuple[int, int]:
        """Check a shard whole (pass 1), then write it chunk by chunk (pass 2); (rows, imported)."""
        seen: set = set()
        rows, step = 0, chunk_rows(self.record.dim)
        for ids, vecs in shard.chunks(self.modality, id_column, step):
            _check(ids, vecs, self.record.dim, self.record.model_id, str(shard.vectors))
            self.check_ids(ids, seen, str(shard.vectors))
            rows += len(ids)
        imported = 0
        for ids, vecs in shard.chunks(self.modality, id_column, step):
            imported += self.write(ids, _check(ids, vecs, self.record.dim, self.record.model_id, str(shard.vectors)))
        return rows, imported


def _imported_fingerprints(store: Store, model_id: str, modality: str) -> set[str]:
    if not store.has("imports"):
        return set()
    rows = store.read("imports", columns=["model_id", "modality", "fingerprint"]).to_pylist()
    return {r["fingerprint"] for r in rows if r["model_id"] == model_id and r["modality"] == modality}


def import_folder(store: Store, model: str, modality: str, folder: str, id_column: str | None = None,
                  progress=None) -> ImportSummary:
    """Import a folder of shards one at a time; shards recorded in `imports` are skipped.

    `progress(shard_name)` is called after each shard is done (imported or skipped).
    """
    shards = find_shards(folder)
    imp = _Importer(store, model, modality)
    record = imp.record
    before = _imported_fingerprints(store, record.model_id, modality)
    rows = imported = skipped_shards = 0
    for shard in shards:
        fingerprint = shard.fingerprint(record.model_id, modality)
        if fingerprint in before:
            skipped_shards += 1
        else:
            n, new = imp.shard(shard, id_column)
            rows, imported = rows + n, imported + new
            store.append("imports", pa.Table.from_pylist([{
                "model_id": record.model_id, "modality": modality, "fingerprint": fingerprint, "shard": shard.name,
                "rows": n, "imported": new, "at": now()}], schema=IMPORTS))
        if progress:
            progress(shard.name)
    return ImportSummary(record.model_id, modality, record.table(modality), rows, imported, rows - imported,
                         len(shards), skipped_shards)


def import_embeddings(store: Store, model: str, modality: str, path: str, ids_path: str | None = None,
                      id_column: str | None = None, progress=None) -> ImportSummary:
    """Import one vector file, or a folder of shards (`import_folder`)."""
    if Path(path).is_dir():
        if ids_path:
            raise ParameterError(f"{path}: --ids is for one .npy file; a folder's shards carry their own ids")
        return import_folder(store, model, modality, path, id_column, progress)
    imp = _Importer(store, model, modality)
    ids, vecs = read_vector_file(path, modality, ids_path, id_column)
    vecs = _check(ids, vecs, imp.record.dim, imp.record.model_id, path)
    imp.check_ids(ids, set(), path)
    new = imp.write(ids, vecs)
    return ImportSummary(imp.record.model_id, modality, imp.record.table(modality), len(ids), new, len(ids) - new)
