"""The captioned training pairs as a set, so a first teacher (or a replay set) trains from a
versioned, hashed input like every student.

With `--model` the rows carry that model's vectors (a replay set for soft-label students); without
one there is no teacher yet, the teacher columns are null (1-d placeholders), and only the hard
CLAP loss can use the set.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from curator.curate.rows import CAPTIONS, Lineage, assemble, select_clips, select_texts, vectors
from curator.curate.strategies import Build
from curator.models.registry import get_model
from curator.store.store import Store
from schemas.errors import ParameterError
from schemas.tables import set_rows
from schemas.validate import conform


def build_pairs(store: Store, pairs_where: str | None, model_name: str | None = None,
                allow_contaminated: bool = False) -> Build:
    lin = Lineage(store)
    captions = select_texts(store, lin, CAPTIONS, pairs_where, "--pairs-where")
    clips = select_clips(store, lin, None, "--pairs-where", allow_contaminated,
                         ids=sorted(set(captions.column("audio_id").to_pylist())))
    clip_pos = {a: i for i, a in enumerate(clips.column("audio_id").to_pylist())}
    keep = [i for i, a in enumerate(captions.column("audio_id").to_pylist()) if a in clip_pos]
    captions = captions.take(pa.array(keep, pa.int64()))
    if captions.num_rows == 0:
        raise ParameterError(f"--pairs-where {pairs_where!r}: no caption has its clip in the store")
    audio_pos = np.array([clip_pos[a] for a in captions.column("audio_id").to_pylist()], np.int64)
    columns = {"text_id": captions.column("text_id"), "text": captions.column("text"),
               "label": captions.column("label")}
    params = {"pairs_where": pairs_where, "allow_contaminated": allow_contaminated}
    model = None
    if model_name:
        model = get_model(store, model_name)
        lin.add_table("models")
        tpos, tvecs = vectors(store, lin, model, "text", captions.column("text_id").to_pylist(), "captions")
        apos, avecs = vectors(store, lin, model, "audio", clips.column("audio_id").to_pylist(), "clips")
        a_row = np.full(clips.num_rows, -1, np.int64)
        a_row[apos] = np.arange(len(apos))
        has_both = np.zeros(captions.num_rows, bool)
        has_both[tpos] = True
        has_both &= a_row[audio_pos] >= 0
        t_row = np.full(captions.num_rows, -1, np.int64)
        t_row[tpos] = np.arange(len(tpos))
        idx = np.flatnonzero(has_both)
        if len(idx) == 0:
            raise ParameterError(f"no pair has both vectors of model {model.model_id!r}; run `curator embed` first")
        lin.stats["pairs_without_vectors"] = int(captions.num_rows - len(idx))
        columns = {k: v.take(pa.array(idx, pa.int64())) for k, v in columns.items()}
        rows = assemble(clips, audio_pos[idx], columns, avecs[a_row[audio_pos[idx]]], tvecs[t_row[idx]])
    else:
        taken = clips.take(pa.array(audio_pos, pa.int64()))
        data = {**{k: taken.column(k) for k in taken.column_names}, **columns}
        rows = conform(pa.table(data), set_rows(1, 1), "pairs")
    lin.stats["pairs"] = rows.num_rows
    return Build(rows, "pairs", params, lin.inputs, model, lin.stats)
