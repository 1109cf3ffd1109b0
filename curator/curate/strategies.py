"""The paper's three improvement-set strategies (DESIGN.md section 6, items 3-5).

- DU: teacher-training captions x wild clips, keep teacher score >= tau (top-k bounded).
- DS: label prompts vs teacher-training captions (text-text cosine); keep the training pairs whose
  caption's best prompt similarity >= tau_ds, labelled with the prompt's label.
- ADS: the DS captions x wild clips, keep score >= tau (top-k bounded), label carried from DS.

Each builder returns a `Build` (rows + lineage); `curator.curate.catalog.write_set` turns it into a version.
Rows are computed in full before anything is written, so a failing build writes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curator.curate.balance import BalanceOptions, balance_rows
from curator.curate.catalog import check_set_model, set_input
from curator.curate.decisions import Decisions
from curator.curate.rows import (
    CAPTIONS,
    PROMPTS,
    Lineage,
    assemble,
    select_clips,
    select_texts,
    start_build,
    vector_source,
    vectors,
)
from curator.models.registry import get_model
from curator.store.store import Store
from curator.store.vectors import VectorBlocks
from schemas.errors import ParameterError
from schemas.sets import read_set
from schemas.validate import check_threshold

PERS = ("text", "audio", "both")


@dataclass
class Build:
    rows: pa.Table
    strategy: str
    params: dict
    inputs: list[str]
    model: object
    stats: dict = field(default_factory=dict)


@dataclass
class MatchOptions:
    threshold: float
    top_k: int | None = None
    per: str = "text"
    device: str = "auto"
    max_memory: int | None = None  # a pool whose vectors are larger is streamed (same pairs; not a param)

    def check(self) -> "MatchOptions":
        check_threshold(self.threshold)
        if self.top_k is not None and self.top_k < 1:
            raise ParameterError(f"--top-k {self.top_k}: must be at least 1")
        if self.per not in PERS:
            raise ParameterError(f"--per {self.per!r}: expected one of {', '.join(PERS)}")
        return self

    def params(self) -> dict:
        return {"threshold": self.threshold, "top_k": self.top_k, "per": self.per}


def _decision_params(decisions: Decisions | None, keep_accepted: bool, lin: Lineage) -> dict:
    if decisions is None:
        if keep_accepted:
            raise ParameterError("--keep-accepted needs --decisions FILE")
        return {}
    lin.add(f"decisions:{decisions.sha256}")
    return {"decisions": decisions.lineage(), "keep_accepted": keep_accepted}


def _filter_pairs(ti, ai, score, text_ids, audio_ids, decisions: Decisions | None, lin: Lineage):
    """Drop pairs a reviewer rejected."""
    if decisions is None or not decisions.rejected or len(ti) == 0:
        return ti, ai, score
    rejected = decisions.rejected
    pair_audio = audio_ids.take(pa.array(ai, pa.int64())).to_pylist()
    keep = np.fromiter(((text_ids[t], a) not in rejected for t, a in zip(ti, pair_audio)), bool, len(ti))
    lin.stats["rejected_dropped"] = int((~keep).sum())
    return ti[keep], ai[keep], score[keep]


def _accepted_extra(ti, ai, text_ids, audio_ids, tv, av, decisions: Decisions | None, keep: bool, lin: Lineage):
    """Accepted pairs that the threshold or top-k cut, scored exactly, when --keep-accepted."""
    empty = (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32))
    if decisions is None or not keep or not decisions.accepted:
        return empty
    t_index = {t: i for i, t in enumerate(text_ids)}
    accepted_audio = sorted({p[1] for p in decisions.accepted})
    found = pc.index_in(pa.array(accepted_audio, pa.string()), value_set=audio_ids).to_pylist()
    a_index = {a: i for a, i in zip(accepted_audio, found) if i is not None}  # only the accepted clips
    have = set(zip((text_ids[t] for t in ti), audio_ids.take(pa.array(ai, pa.int64())).to_pylist()))
    pairs = sorted(p for p in decisions.accepted if p not in have and p[0] in t_index and p[1] in a_index)
    lin.stats["accepted_added"] = len(pairs)
    lin.stats["accepted_outside_inputs"] = sum(1 for p in decisions.accepted
                                               if p[0] not in t_index or p[1] not in a_index)
    if not pairs:
        return empty
    t = np.array([t_index[p[0]] for p in pairs], np.int64)
    a = np.array([a_index[p[1]] for p in pairs], np.int64)
    return t, a, np.einsum("ij,ij->i", tv[t], _rows_of(av, a)).astype(np.float32)


def _cross(captions: pa.Table, cap_vecs: np.ndarray, labels, pool: pa.Table, pool_pos, pool_vecs,
           opts: MatchOptions, decisions, keep_accepted: bool, lin: Lineage) -> pa.Table:
    """Captions x clips through the exact matcher, decisions applied, assembled into set rows."""
    # The matcher needs torch; `curator build ... --help` and model-free builds must not load it.
    from curator.match.exact import collect, match_blocks
    from curator.match.stream import match_stream

    text_ids = captions.column("text_id").to_pylist()
    audio_ids = pool.column("audio_id").take(pa.array(pool_pos, pa.int64())).combine_chunks()  # Arrow: millions
    if isinstance(pool_vecs, VectorBlocks):
        chunks = match_stream(cap_vecs, pool_vecs, opts.threshold, top_k=opts.top_k, per=opts.per,
                              device=opts.device, max_memory=opts.max_memory)
    else:
        chunks = match_blocks(cap_vecs, pool_vecs, opts.threshold, top_k=opts.top_k, per=opts.per,
                              device=opts.device)
    ti, ai, score, _ = (np.asarray(x) for x in collect(chunks))
    ti, ai, score = ti.astype(np.int64), ai.astype(np.int64), score.astype(np.float32)
    ti, ai, score = _filter_pairs(ti, ai, score, text_ids, audio_ids, decisions, lin)
    et, ea, es = _accepted_extra(ti, ai, text_ids, audio_ids, cap_vecs, pool_vecs, decisions, keep_accepted, lin)
    ti, ai, score = np.concatenate([ti, et]), np.concatenate([ai, ea]), np.concatenate([score, es])
    take = pa.array(ti, pa.int64())
    columns = {"text_id": captions.column("text_id").take(take), "text": captions.column("text").take(take),
               "score": score, "label": pa.array(labels, pa.string()).take(take) if labels is not None else None}
    return assemble(pool, np.asarray(pool_pos)[ai], columns, _rows_of(pool_vecs, ai), cap_vecs[ti])


def _rows_of(vecs, idx: np.ndarray) -> np.ndarray:
    """Rows `idx` of an in-memory pool, or fetched from the store for a streamed one."""
    return vecs.take(idx) if isinstance(vecs, VectorBlocks) else vecs[idx]


def _pool(store: Store, lin: Lineage, model, pool_where: str, allow_contaminated: bool,
          max_memory: int | None = None):
    """The pool's clips and their vectors: in memory, or left in the store past `max_memory` bytes."""
    pool = select_clips(store, lin, pool_where, "--pool-where", allow_contaminated)
    pos, vecs = vector_source(store, lin, model, "audio", pool.column("audio_id"), "pool_clips")
    if max_memory is None or vecs.nbytes <= max_memory:
        vecs = vecs.read()
    if len(pos) == 0:
        raise ParameterError(f"--pool-where {pool_where!r}: none of the {pool.num_rows} clips has a vector from "
                             f"model {model.model_id!r}; run `curator embed` first")
    lin.stats["pool_clips"] = int(len(pos))
    return pool, pos, vecs


def _balanced(store: Store, lin: Lineage, rows: pa.Table, balance: BalanceOptions | None, model,
              params: dict) -> pa.Table:
    """With --balance: rows cut to a per-class quota (curator.curate.balance), counts in params."""
    if balance is None:
        return rows
    rows, params["balance"] = balance_rows(store, lin, rows, balance, model)
    lin.stats["per_class"] = params["balance"]["counts"]
    lin.stats["per_class_candidates"] = params["balance"]["candidates"]
    return rows


def build_du(store: Store, model_name: str, opts: MatchOptions, pool_where: str, pairs_where: str | None = None,
             allow_contaminated: bool = False, decisions: Decisions | None = None,
             keep_accepted: bool = False, balance: BalanceOptions | None = None) -> Build:
    """DU: every teacher-training caption x every wild clip with score >= tau (optionally balanced)."""
    opts.check()
    if balance is not None:
        balance.check()
    model, lin = start_build(store, model_name)
    dparams = _decision_params(decisions, keep_accepted, lin)
    captions = select_texts(store, lin, CAPTIONS, pairs_where, "--pairs-where")
    pos, cap_vecs = vectors(store, lin, model, "text", captions.column("text_id").to_pylist(), "captions")
    captions = captions.take(pa.array(pos, pa.int64()))
    pool, pool_pos, pool_vecs = _pool(store, lin, model, pool_where, allow_contaminated, opts.max_memory)
    lin.stats["captions"] = captions.num_rows
    rows = _cross(captions, cap_vecs, None, pool, pool_pos, pool_vecs, opts, decisions, keep_accepted, lin)
    params = {**opts.params(), "pairs_where": pairs_where, "pool_where": pool_where,
              "allow_contaminated": allow_contaminated, **dparams}
    rows = _balanced(store, lin, rows, balance, model, params)
    return Build(rows, "du", params, lin.inputs, model, lin.stats)


@dataclass
class DSOptions:
    label_set: str
    threshold: float
    pairs_where: str | None = None
    text_model: str | None = None

    def params(self) -> dict:
        return {"label_set": self.label_set, "ds_threshold": self.threshold, "pairs_where": self.pairs_where,
                "text_model": self.text_model}


def _best_prompt(store: Store, lin: Lineage, captions: pa.Table, opts: DSOptions, teacher) -> tuple:
    """(caption positions that have a text-model vector, best similarity, best label) per caption."""
    text_model = get_model(store, opts.text_model) if opts.text_model else teacher
    prompts = select_texts(store, lin, PROMPTS, None, f"label set {opts.label_set!r}", params=[opts.label_set])
    p_pos, p_vecs = vectors(store, lin, text_model, "text", prompts.column("text_id").to_pylist(), "prompts")
    if len(p_pos) == 0:
        raise ParameterError(f"label set {opts.label_set!r}: no prompt has a vector from {text_model.model_id!r}; "
                             "embed the prompts with that model first")
    c_pos, c_vecs = vectors(store, lin, text_model, "text", captions.column("text_id").to_pylist(),
                            "captions")
    labels = prompts.column("label").take(pa.array(p_pos, pa.int64())).to_pylist()
    best = np.full(len(c_pos), -np.inf, np.float32)
    arg = np.zeros(len(c_pos), np.int64)
    for start in range(0, len(c_pos), 65536):  # bounded memory for 10^5-10^6 captions
        sim = c_vecs[start:start + 65536] @ p_vecs.T
        arg[start:start + len(sim)] = sim.argmax(axis=1)  # ties: the first prompt in text_id order
        best[start:start + len(sim)] = sim.max(axis=1)
    return c_pos, best, [labels[i] for i in arg], text_model


def ds_rows(store: Store, model, lin: Lineage, opts: DSOptions, allow_contaminated: bool,
            decisions: Decisions | None, keep_accepted: bool) -> pa.Table:
    check_threshold(opts.threshold, "--ds-threshold")
    captions = select_texts(store, lin, CAPTIONS, opts.pairs_where, "--pairs-where")
    c_pos, best, labels, text_model = _best_prompt(store, lin, captions, opts, model)
    caps = captions.take(pa.array(c_pos, pa.int64()))
    keys = list(zip(caps.column("text_id").to_pylist(), caps.column("audio_id").to_pylist()))
    keep = best >= np.float32(opts.threshold)
    if decisions is not None:
        keep &= np.array([k not in decisions.rejected for k in keys], bool)
        if keep_accepted:
            keep |= np.array([k in decisions.accepted for k in keys], bool)
    caps, best = caps.filter(pa.array(keep)), best[keep]
    labels = [lab for lab, k in zip(labels, keep) if k]
    lin.stats["captions"], lin.stats["ds_pairs_matched"] = captions.num_rows, int(keep.sum())
    paired = caps.column("audio_id").to_pylist()
    clips = select_clips(store, lin, None, "paired clips", allow_contaminated, ids=paired)
    clip_index = {a: i for i, a in enumerate(clips.column("audio_id").to_pylist())}
    t_pos, t_vecs = vectors(store, lin, model, "text", caps.column("text_id").to_pylist(), "captions")
    a_pos, a_vecs = vectors(store, lin, model, "audio", paired, "paired_clips")
    t_map = dict(zip(t_pos.tolist(), range(len(t_pos))))
    a_map = dict(zip(a_pos.tolist(), range(len(a_pos))))
    ok = [i for i in range(caps.num_rows) if i in t_map and i in a_map and paired[i] in clip_index]
    lin.stats["ds_pairs_dropped"] = caps.num_rows - len(ok)
    sel = pa.array(ok, pa.int64())
    columns = {"text_id": caps.column("text_id").take(sel), "text": caps.column("text").take(sel),
               "score": best[ok], "label": [labels[i] for i in ok]}
    audio_pos = np.array([clip_index[paired[i]] for i in ok], np.int64)
    dim_a, dim_t = a_vecs.shape[1], t_vecs.shape[1]
    return assemble(clips, audio_pos, columns,
                    a_vecs[[a_map[i] for i in ok]] if ok else np.zeros((0, dim_a), np.float32),
                    t_vecs[[t_map[i] for i in ok]] if ok else np.zeros((0, dim_t), np.float32))


def build_ds(store: Store, model_name: str, opts: DSOptions, allow_contaminated: bool = False,
             decisions: Decisions | None = None, keep_accepted: bool = False) -> Build:
    """DS: teacher-training pairs whose caption is close to a label prompt of the target task."""
    model, lin = start_build(store, model_name)
    dparams = _decision_params(decisions, keep_accepted, lin)
    rows = ds_rows(store, model, lin, opts, allow_contaminated, decisions, keep_accepted)
    params = {**opts.params(), "allow_contaminated": allow_contaminated, **dparams}
    return Build(rows, "ds", params, lin.inputs, model, lin.stats)


def build_ads(store: Store, model_name: str, opts: MatchOptions, pool_where: str, from_set: str | None = None,
              ds: DSOptions | None = None, allow_contaminated: bool = False, decisions: Decisions | None = None,
              keep_accepted: bool = False, balance: BalanceOptions | None = None) -> Build:
    """ADS: DS captions (from a DS set, or computed now) x wild clips with score >= tau (optionally balanced)."""
    opts.check()
    if balance is not None:
        balance.check()
    if (from_set is None) == (ds is None):
        raise ParameterError("ads needs exactly one of --from-set DS_REF or --label-set (with --ds-threshold)")
    model, lin = start_build(store, model_name)
    dparams = _decision_params(decisions, keep_accepted, lin)
    if from_set is not None:
        ds_table, resolved = read_set(store.uri, from_set)
        check_set_model(store, resolved, model.model_id)
        lin.add(set_input(resolved))
        source = {"from_set": resolved.ref}
    else:
        ds_table = ds_rows(store, model, lin, ds, allow_contaminated, None, False)
        source = {"ds": ds.params()}
    captions, cap_vecs, labels = _unique_captions(ds_table)
    if captions.num_rows == 0:
        raise ParameterError(f"the DS input ({source}) has no captions to match")
    pool, pool_pos, pool_vecs = _pool(store, lin, model, pool_where, allow_contaminated, opts.max_memory)
    lin.stats["captions"] = captions.num_rows
    rows = _cross(captions, cap_vecs, labels, pool, pool_pos, pool_vecs, opts, decisions, keep_accepted, lin)
    params = {**opts.params(), "pool_where": pool_where, "allow_contaminated": allow_contaminated,
              **source, **dparams}
    rows = _balanced(store, lin, rows, balance, model, params)
    return Build(rows, "ads", params, lin.inputs, model, lin.stats)


def _unique_captions(ds_table: pa.Table) -> tuple[pa.Table, np.ndarray, list]:
    """One row per DS caption (text_id order) with its teacher text vector and DS label."""
    t = ds_table.select(["text_id", "text", "label", "teacher_text"]).sort_by([("text_id", "ascending")])
    ids = t.column("text_id").to_pylist()
    first = [i for i in range(len(ids)) if ids[i] is not None and (i == 0 or ids[i] != ids[i - 1])]
    t = t.take(pa.array(first, pa.int64()))
    col = t.column("teacher_text").combine_chunks()
    dim = col.type.list_size
    vecs = col.values.to_numpy(zero_copy_only=False).astype(np.float32).reshape(-1, dim)
    return t.select(["text_id", "text"]), vecs, t.column("label").to_pylist()
