"""Inputs every set builder needs and the one way set rows are assembled.

Builders (du / ds / ads in `curator.curate.strategies`, pseudo-labels in `curator.curate.pseudo`,
pairs, labelled) select texts and clips with SQL, fetch vectors of one model, take a label set's
classes, and turn index arrays into Arrow rows here, so the rules (contamination exclusion,
missing vectors, lineage refs) are the same for all of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curator.curate.guard import contaminated_ids
from curator.models.registry import ModelRecord, get_model
from curator.store.sql import filter_query, query
from curator.store.store import Store
from curator.store.vectors import VectorBlocks, check_model, open_vectors, vector_array
from schemas.errors import ModelError, ParameterError, StoreError
from schemas.tables import set_rows

AUDIO_META = ("audio_id", "uri", "city", "recorded_at")
CAPTIONS = "kind = 'caption' and audio_id is not null"  # teacher-training captions: paired with a clip
PROMPTS = "kind = 'prompt' and label_set = ?"


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


def start_build(store: Store, model_name: str) -> tuple[ModelRecord, Lineage]:
    """The registered model a build uses and a lineage that already names the registry version."""
    model = get_model(store, model_name)
    lin = Lineage(store)
    lin.add_table("models")
    return model, lin


def require(store: Store, name: str, hint: str) -> None:
    if not store.has(name):
        raise StoreError(f"store has no {name!r} table; {hint}")


def select_texts(store: Store, lin: Lineage, where: str, extra: str | None, what: str,
                 params: list | None = None) -> pa.Table:
    """texts rows (text_id, text, audio_id, label) matching a fixed condition and the user's filter."""
    require(store, "texts", "ingest captions or labels first")
    lin.add_table("texts")
    # `where` is ours; `extra` is the user's filter, checked to be one expression by filter_query
    select = "select text_id, text, audio_id, label from texts"
    if extra:
        rows = filter_query(store, select, extra, what, "order by text_id", params, fixed=where)
    else:
        rows = query(store, f"{select} where ({where}) order by text_id", params=params)
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
        chosen = filter_query(store, "select audio_id from audio", where, what).column("audio_id")
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


def vector_source(store: Store, lin: Lineage, model, modality: str, ids,
                  what: str) -> tuple[np.ndarray, VectorBlocks]:
    """Vectors of `ids` (a list or an Arrow string array, in that order) from one model, left in the
    store: (positions in ids that have a vector, their `VectorBlocks`). Items never embedded are
    skipped and counted in the build's stats."""
    table = model.table(modality)
    if not store.has(table):
        raise ModelError(f"model {model.model_id!r} has no {modality} embeddings ({table}); "
                         f"run `curator embed {modality} --model {model.model_id}` first")
    # Pools run to millions of clips: their ids stay one Arrow array (no Python strings, no dict).
    if isinstance(ids, pa.ChunkedArray):
        ids = ids.combine_chunks()
    elif not isinstance(ids, pa.Array):
        ids = pa.array(list(ids), pa.string())
    got = open_vectors(store, model.model_id, modality, ids=ids)
    lin.add(got.ref)
    check_model(got, model)
    where = pc.index_in(ids, value_set=got.ids)
    found = where.is_valid().to_numpy(zero_copy_only=False)
    pos = np.flatnonzero(found).astype(np.int64)
    rows = where.filter(where.is_valid()).to_numpy(zero_copy_only=False).astype(np.int64)
    missing = len(ids) - len(pos)
    if missing:
        lin.stats[f"{what}_without_vectors"] = lin.stats.get(f"{what}_without_vectors", 0) + missing
    return pos, got.reorder(rows)


def vectors(store: Store, lin: Lineage, model, modality: str, ids,
            what: str) -> tuple[np.ndarray, np.ndarray]:
    """`vector_source`, read into memory: (positions in ids that have a vector, vectors)."""
    pos, src = vector_source(store, lin, model, modality, ids, what)
    return pos, src.read()


def label_classes(store: Store, lin: Lineage, label_set: str, model: ModelRecord | None = None):
    """(class labels sorted, first prompt text_id per class, its text, unit class vectors or None).

    With a model only prompts it embedded count, and a class vector is the renormalised mean of
    its prompts' vectors (prompt ensembling); "first" is in text_id order."""
    prompts = select_texts(store, lin, PROMPTS, None, f"label set {label_set!r}", params=[label_set])
    vecs = None
    if model is not None:
        pos, vecs = vectors(store, lin, model, "text", prompts.column("text_id").to_pylist(), "prompts")
        if len(pos) == 0:
            raise ParameterError(f"label set {label_set!r}: no prompt has a vector from {model.model_id!r}; "
                                 "embed the prompts first")
        prompts = prompts.take(pa.array(pos, pa.int64()))
    labels = prompts.column("label").to_pylist()
    ids, texts = prompts.column("text_id").to_pylist(), prompts.column("text").to_pylist()
    classes = sorted({lab for lab in labels if lab is not None})
    members = {c: [i for i, lab in enumerate(labels) if lab == c] for c in classes}
    first_id = [ids[members[c][0]] for c in classes]
    first_text = [texts[members[c][0]] for c in classes]
    if vecs is None:
        return classes, first_id, first_text, None
    means = [vecs[members[c]].mean(axis=0) for c in classes]
    class_vecs = [v / max(float(np.linalg.norm(v)), 1e-12) for v in means]
    return classes, first_id, first_text, np.stack(class_vecs).astype(np.float32)


def assemble(meta: pa.Table, audio_pos: np.ndarray, columns: dict, audio_vecs: np.ndarray,
             text_vecs: np.ndarray) -> pa.Table:
    """Set rows from clip positions into `meta` (AUDIO_META rows), per-row columns (text_id, text,
    score, label, confidence, margin, entropy) and the teacher vectors of each row."""
    taken = meta.take(pa.array(audio_pos, pa.int64()))
    data = {k: taken.column(k) for k in AUDIO_META}
    data.update({k: v for k, v in columns.items()})
    data["teacher_audio"] = vector_array(audio_vecs)
    data["teacher_text"] = vector_array(text_vecs)
    schema = set_rows(audio_vecs.shape[1], text_vecs.shape[1])
    arrays = []
    for f in schema:
        col = data.get(f.name)
        arrays.append(pa.nulls(len(audio_pos), f.type) if col is None else pa.array(col, f.type)
                      if not isinstance(col, (pa.Array, pa.ChunkedArray)) else col.cast(f.type))
    return pa.Table.from_arrays(arrays, schema=schema)
