"""Sets for the scene workflow: the labelled clips themselves (`curator build labelled`), and the
union of sets (`curator build union`) that retraining on labelled + pseudo-labelled clips reads.

labelled: one row per clip of `--audio-where` with a non-empty `labels` list; label = labels[0];
text = the label's prompt (the first prompt of `--label-set` in text_id order, as pseudo-label
rows have it, or "this is a sound of {label}"); city / recorded_at ride along so the trainer can
build context captions. With `--model` (needs `--label-set`) the rows carry that model's clip
vector and the label's mean prompt vector; without one the teacher columns are 1-d null
placeholders, as in `curator build pairs`.

union: the rows of several set versions; a clip present in more than one keeps the rows of the
first set that has it (list the human-labelled set first, so ground truth beats a pseudo-label).
Parents are recorded as `set:NAME@N` inputs, so `curator sets show` walks back through each.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curator.curate.catalog import set_input, set_model_id
from curator.curate.rows import Lineage, assemble, label_classes, select_clips, vectors
from curator.curate.strategies import Build
from curator.models.registry import find_model, get_model
from curator.store.sql import query
from curator.store.store import Store
from schemas.errors import MixedModelsError, ParameterError
from schemas.ids import text_id as make_text_id
from schemas.sets import read_set
from schemas.tables import PROMPT_TEMPLATE, set_rows
from schemas.validate import conform


def _labelled_clips(store: Store, lin: Lineage, where: str | None, allow_contaminated: bool) -> tuple[pa.Table, list]:
    clips = select_clips(store, lin, where, "--audio-where", allow_contaminated)
    ids = clips.column("audio_id").combine_chunks()
    rows = query(store, "select audio_id, labels[1] as label from audio where len(labels) > 0")
    found = pc.index_in(ids, value_set=rows.column("audio_id").combine_chunks())
    keep = np.flatnonzero(found.is_valid().to_numpy(zero_copy_only=False))
    if len(keep) == 0:
        raise ParameterError(f"--audio-where {where!r}: none of the {clips.num_rows} selected clips has a label")
    labels = rows.column("label").take(found.filter(found.is_valid())).to_pylist()
    lin.stats.update({"clips_selected": clips.num_rows, "unlabelled_skipped": clips.num_rows - len(keep)})
    return clips.take(pa.array(keep, pa.int64())), labels


def build_labelled(store: Store, audio_where: str | None, label_set: str | None = None, model_name: str | None = None,
                   allow_contaminated: bool = False) -> Build:
    if model_name and not label_set:
        raise ParameterError("--model needs --label-set (the text side's vectors are the label prompts')")
    lin = Lineage(store)
    clips, labels = _labelled_clips(store, lin, audio_where, allow_contaminated)
    params = {"audio_where": audio_where, "label_set": label_set, "allow_contaminated": allow_contaminated}
    counts = {lab: labels.count(lab) for lab in sorted(set(labels))}
    lin.stats["per_class"] = counts
    if label_set is None:
        texts = [PROMPT_TEMPLATE.format(label=lab) for lab in labels]
        columns = {"text": texts, "label": labels,
                   "text_id": [make_text_id("labelled", t, None, "prompt") for t in texts]}
        return Build(_null_vectors(clips, columns), "labelled", params, lin.inputs, None, lin.stats)
    model = get_model(store, model_name) if model_name else None
    if model is not None:
        lin.add_table("models")
    classes, p_ids, p_texts, class_vecs = label_classes(store, lin, label_set, model)
    missing = sorted(set(labels) - set(classes))
    if missing:
        raise ParameterError(f"label set {label_set!r} has no prompt for label(s) {', '.join(map(repr, missing[:5]))}")
    cls = np.array([classes.index(lab) for lab in labels], np.int64)
    columns = {"text_id": [p_ids[c] for c in cls], "text": [p_texts[c] for c in cls], "label": labels}
    if model is None:
        return Build(_null_vectors(clips, columns), "labelled", params, lin.inputs, None, lin.stats)
    pos, avecs = vectors(store, lin, model, "audio", clips.column("audio_id").to_pylist(), "clips")
    if len(pos) == 0:
        raise ParameterError(f"no labelled clip has a vector from {model.model_id!r}; run `curator embed` first")
    columns = {k: [v[i] for i in pos] for k, v in columns.items()}
    rows = assemble(clips, pos, columns, avecs, class_vecs[cls[pos]])
    return Build(rows, "labelled", params, lin.inputs, model, lin.stats)


def _null_vectors(clips: pa.Table, columns: dict) -> pa.Table:
    data = {**{k: clips.column(k) for k in clips.column_names}, **columns}
    return conform(pa.table(data), set_rows(1, 1), "labelled")


def build_union(store: Store, refs: list[str]) -> Build:
    if len(refs) < 2:
        raise ParameterError("union needs at least two --from sets")
    lin = Lineage(store)
    parts, seen, models, dims = [], set(), set(), set()
    for ref in refs:
        table, resolved = read_set(store.uri, ref)
        lin.add(set_input(resolved))
        ids = table.column("audio_id")
        fresh = pc.invert(pc.is_in(ids, value_set=pa.array(sorted(seen), pa.string())))
        kept = table.filter(fresh)
        lin.stats[f"rows_from_{resolved.ref}"] = kept.num_rows
        seen.update(kept.column("audio_id").to_pylist())
        dims.add((kept.schema.field("teacher_audio").type.list_size, kept.schema.field("teacher_text").type.list_size))
        models.add(set_model_id(store, resolved))
        parts.append(kept)
    vectors_kept = len(dims) == 1 and len(models) == 1 and None not in models
    if not vectors_kept:
        if len(dims) == 1 and len(models) > 1 and max(d for d, _ in dims) > 1:
            lin.stats["note"] = "inputs come from different models: teacher vectors dropped"
        parts = [_drop_vectors(p) for p in parts]
    rows = pa.concat_tables(parts)
    model = {"model_id": models.pop(), "sha256": None} if vectors_kept else None
    if model is not None:
        model["sha256"] = _model_sha(store, model["model_id"])
    lin.stats["rows"] = rows.num_rows
    return Build(rows, "union", {"from": list(refs)}, lin.inputs, model, lin.stats)


def _model_sha(store: Store, model_id: str) -> str:
    model = find_model(store, model_id)
    if model is None:  # an unregistered model cannot vouch for its vectors
        raise MixedModelsError(f"union: model {model_id!r} of the inputs is not registered")
    return model.sha256


def _drop_vectors(table: pa.Table) -> pa.Table:
    """The rows with 1-d null teacher vectors (what a set without a single teacher carries)."""
    data = {k: table.column(k) for k in table.column_names if k not in ("teacher_audio", "teacher_text")}
    return conform(pa.table(data), set_rows(1, 1), "union")
