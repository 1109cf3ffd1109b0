"""Inputs every set builder needs and the one way set rows are assembled.

Builders (du / ds / ads in `curator.curate.strategies`, pseudo-labels in `curator.curate.pseudo`) select texts and
clips with SQL, fetch vectors of one model, and turn index arrays into Arrow rows here, so the
rules (contamination exclusion, missing vectors, lineage refs) are the same for all of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curator.curate.guard import contaminated_ids
from curator.store.sql import query
from curator.store.store import Store
from schemas.errors import MixedModelsError, ModelError, ParameterError, StoreError
from schemas.ids import model_slug
from schemas.tables import embedding_table_name, set_rows

AUDIO_META = ("audio_id", "uri", "city", "recorded_at")


@dataclass
class Lineage:
    """Table versions and parameters a build read, collected as it reads them."""

    store: Store
    inputs: list[str] = field(default_factory=list)
    stats: dict = field(default_factory=dict)

    def add_table(self, name: str) -> None:
        ref = self.store.table_ref(name)
        if ref not in self.inputs:
            self.inputs.append(ref)

    def add(self, item: str) -> None:
        if item not in self.inputs:
            self.inputs.append(item)


def emb_table(model_id: str, modality: str) -> str:
    return embedding_table_name(model_slug(model_id), modality)


def require(store: Store, name: str, hint: str) -> None:
    if not store.has(name):
        raise StoreError(f"store has no {name!r} table; {hint}")


def select_texts(store: Store, lin: Lineage, where: str, extra: str | None, what: str,
                 params: list | None = None) -> pa.Table:
    """texts rows (text_id, text, audio_id, label) matching a fixed condition and the user's filter."""
    require(store, "texts", "ingest captions or labels first")
    lin.add_table("texts")
    cond = f"({where})" + (f" and ({extra})" if extra else "")
    sql = f"select text_id, text, audio_id, label from texts where {cond} order by text_id"
    rows = query(store, sql, params=params)
    if rows.num_rows == 0:
        raise ParameterError(f"{what} selects no texts" + (f" (filter {extra!r})" if extra else ""))
    return rows


def select_clips(store: Store, lin: Lineage, where: str | None, what: str, allow_contaminated: bool,
                 ids: list[str] | None = None) -> pa.Table:
    """audio rows (AUDIO_META) matching `where` (or the given ids), minus contaminated clips."""
    require(store, "audio", "ingest audio first")
    lin.add_table("audio")
    meta = store.read("audio", columns=list(AUDIO_META))
    if ids is not None:
        meta = meta.filter(pc.is_in(meta.column("audio_id"), value_set=pa.array(ids, pa.string())))
    if where:
        chosen = query(store, f"select audio_id from audio where {where}").column("audio_id")
        meta = meta.filter(pc.is_in(meta.column("audio_id"), value_set=chosen.combine_chunks()))
    if ids is None and meta.num_rows == 0:
        raise ParameterError(f"{what} {where!r} selects no clips (empty pool)")
    if not allow_contaminated:
        bad = contaminated_ids(store)
        if bad:
            lin.add_table("contamination")
            keep = pc.invert(pc.is_in(meta.column("audio_id"), value_set=pa.array(sorted(bad), pa.string())))
            lin.stats["contaminated_excluded"] = lin.stats.get("contaminated_excluded", 0) + \
                meta.num_rows - pc.sum(keep.cast(pa.int64())).as_py()
            meta = meta.filter(keep)
            if ids is None and meta.num_rows == 0:
                raise ParameterError(f"{what} {where!r}: every selected clip is contaminated (see `curator guard`); "
                                     "pass --allow-contaminated to use them anyway")
    return meta.sort_by([("audio_id", "ascending")])


def vectors(store: Store, lin: Lineage, model, modality: str, ids: list[str],
            what: str) -> tuple[np.ndarray, np.ndarray]:
    """Vectors of `ids` (in that order) from one model; returns (positions in ids that have a
    vector, vectors). Items never embedded are skipped and counted in the build's stats."""
    from curator.store.vectors import read_vectors

    table = emb_table(model.model_id, modality)
    if not store.has(table):
        raise ModelError(f"model {model.model_id!r} has no {modality} embeddings ({table}); "
                         f"run `curator embed {modality} --model {model.model_id}` first")
    got = read_vectors(store, model.model_id, modality, ids=list(ids))
    lin.add(got.ref)
    stated = got.meta.get("model_id") or got.meta.get("model")
    if stated and stated != model.model_id:
        raise MixedModelsError(f"table {got.table} holds vectors of model {stated!r}, not {model.model_id!r}")
    dim = getattr(model, "dim", None)
    if dim and len(got) and got.dim != int(dim):
        raise MixedModelsError(f"model {model.model_id!r} is {dim}-d but {got.table} holds {got.dim}-d vectors")
    # Arrow hash join instead of a Python dict: pools run to millions of clips.
    where = pc.index_in(pa.array(list(ids), pa.string()), value_set=got.ids)
    found = where.is_valid().to_numpy(zero_copy_only=False)
    pos = np.flatnonzero(found).astype(np.int64)
    rows = where.filter(where.is_valid()).to_numpy(zero_copy_only=False).astype(np.int64)
    missing = len(ids) - len(pos)
    if missing:
        lin.stats[f"{what}_without_vectors"] = lin.stats.get(f"{what}_without_vectors", 0) + missing
    width = got.vecs.shape[1] if got.vecs.ndim == 2 else int(dim or 0)
    out = got.vecs[rows] if len(rows) else np.zeros((0, width), np.float32)
    return pos, np.ascontiguousarray(out, dtype=np.float32)


def same_model(what: str, expected: str, actual: str | None) -> None:
    if actual != expected:
        raise MixedModelsError(f"{what} was built with model {actual!r} but this build uses {expected!r}; "
                               "vectors of two different models cannot be mixed")


def fixed_list(vecs: np.ndarray) -> pa.FixedSizeListArray:
    vecs = np.ascontiguousarray(vecs, dtype=np.float32)
    return pa.FixedSizeListArray.from_arrays(pa.array(vecs.reshape(-1)), vecs.shape[1])


def assemble(meta: pa.Table, audio_pos: np.ndarray, columns: dict, audio_vecs: np.ndarray,
             text_vecs: np.ndarray) -> pa.Table:
    """Set rows from clip positions into `meta` (AUDIO_META rows), per-row columns (text_id, text,
    score, label, confidence, margin, entropy) and the teacher vectors of each row."""
    taken = meta.take(pa.array(audio_pos, pa.int64()))
    data = {k: taken.column(k) for k in AUDIO_META}
    data.update({k: v for k, v in columns.items()})
    data["teacher_audio"] = fixed_list(audio_vecs)
    data["teacher_text"] = fixed_list(text_vecs)
    schema = set_rows(audio_vecs.shape[1], text_vecs.shape[1])
    arrays = []
    for f in schema:
        col = data.get(f.name)
        arrays.append(pa.nulls(len(audio_pos), f.type) if col is None else pa.array(col, f.type)
                      if not isinstance(col, (pa.Array, pa.ChunkedArray)) else col.cast(f.type))
    return pa.Table.from_arrays(arrays, schema=schema)
