"""A match run against the store: resolve the model, read the vectors, match, write the results.

Everything that can be refused (threshold, model, mixed vectors, empty pools, an existing run
name) is checked before the first write, so a refused run writes nothing. Pairs are streamed into
`candidates` in large appends; the `runs` row is written last, so a run without a `runs` row is an
interrupted one and its leftover candidates are removed when the name is used again. Rerunning a
complete run with the same parameters and inputs writes nothing and returns it (`reused`).
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curator.match.ann import match_ann
from curator.match.exact import match_blocks
from curator.match.params import check_params
from curator.match.reference import match_sql
from curator.match.stream import match_stream
from curator.models.registry import get_model
from curator.store.sql import ids_where
from curator.store.store import Store, now
from curator.store.vectors import Vectors, check_same_model, open_vectors, read_vectors
from schemas.errors import ModelError, ParameterError
from schemas.faults import crash_point
from schemas.tables import CANDIDATES, RUNS

METHODS = ("exact", "ann", "sql")
_RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
WRITE_ROWS = 500_000  # rows per append: few Lance fragments, and a 1 M-pair run holds half its pairs


@dataclass
class RunSummary:
    run_id: str
    method: str
    model_id: str
    threshold: float
    top_k: int | None
    per: str
    n_texts: int
    n_audio: int
    pairs: int
    recall: float | None
    duration_s: float
    inputs: list[str] = field(default_factory=list)
    params: dict = field(default_factory=dict)
    reused: bool = False  # the run was already complete with these parameters and inputs: nothing written

def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def run_row(store: Store, run_id: str) -> dict | None:
    """The `runs` row of a complete run (None: no such run, or an interrupted one)."""
    if not store.has("runs"):
        return None
    rows = store.read("runs").filter(pc.equal(store.read("runs", columns=["run_id"]).column(0), run_id))
    return rows.to_pylist()[0] if rows.num_rows else None


def run_exists(store: Store, run_id: str) -> bool:
    return run_row(store, run_id) is not None


def delete_run(store: Store, run_id: str) -> None:
    for name in ("candidates", "runs"):
        store.delete(name, f"run_id = {_quote(run_id)}")


def _check_run_name(run_name: str | None) -> str:
    if not run_name or not _RUN_NAME.match(run_name):
        raise ParameterError(f"run name {run_name!r}: use letters, digits, _ . - (starting with a letter or digit)")
    return run_name


def _same_request(row: dict, method: str, model_id: str, threshold: float, top_k, per: str, inputs: list[str],
                  params: dict, ann: dict) -> bool:
    """Whether a complete run was made by this very request (parameters and input versions)."""
    if (row["method"], row["model_id"], row["threshold"], row["top_k"], row["per"], list(row["inputs"] or [])) != (
            method, model_id, threshold, top_k, per, inputs):
        return False
    stored = json.loads(row["params"] or "{}")
    if any(_canon(stored.get(k)) != _canon(v) for k, v in params.items()):
        return False
    return all(stored.get("ann", {}).get(k) == v for k, v in ann.items())


def _canon(value) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _reused(row: dict) -> RunSummary:
    return RunSummary(row["run_id"], row["method"], row["model_id"], row["threshold"], row["top_k"], row["per"],
                      row["n_texts"], row["n_audio"], row["pairs"], row["recall"], row["duration_s"],
                      list(row["inputs"] or []), json.loads(row["params"] or "{}"), reused=True)


def _existing(store: Store, run_id: str, replace: bool, request: tuple) -> RunSummary | None:
    """A complete run of this name: the same request returns it; another one is refused (or replaced)."""
    row = run_row(store, run_id)
    if row is None or replace:
        return None
    if _same_request(row, *request):
        return _reused(row)
    raise ParameterError(f"run {run_id!r} already exists with other parameters or inputs; pass --replace to "
                         f"overwrite it or choose another name")


def _inputs(store: Store, tv, av, filtered: list[str]) -> list[str]:
    refs = [tv.ref, av.ref]
    refs += [store.table_ref(t) for t in filtered if store.has(t)]
    return refs


def _load(store: Store, model_id: str, texts_where: str | None, audio_where: str | None, max_memory: int | None):
    text_ids = ids_where(store, "texts", "text_id", texts_where, "--texts-where") if texts_where else None
    audio_ids = ids_where(store, "audio", "audio_id", audio_where, "--audio-where") if audio_where else None
    tv = read_vectors(store, model_id, "text", text_ids)
    av = open_vectors(store, model_id, "audio", audio_ids)
    if max_memory is None or av.nbytes <= max_memory:  # the pool fits: read it once
        av = Vectors(model_id, "audio", av.table, av.version, av.ids, av.read(), av.missing, av.meta)
    return tv, av


def _refuse_empty(tv, av, texts_where, audio_where) -> None:
    for v, what, flag, where in ((tv, "captions", "--texts-where", texts_where), (av, "clips", "--audio-where", audio_where)):
        if len(v) == 0:
            why = f"no row selected by {flag} {where!r} has a vector in {v.table}" if where else f"{v.table} is empty"
            raise ParameterError(f"no {what} to match: {why}")


def load_pool(store: Store, model: str, texts_where: str | None = None, audio_where: str | None = None,
              max_memory: int | None = None):
    """(text Vectors, audio Vectors, ModelRecord) of a model, filtered, checked, non-empty.

    With `max_memory` (bytes), a pool whose vectors are larger comes back as `VectorBlocks`, left
    in the store to be streamed block by block."""
    info = get_model(store, model)
    if info.modalities and not {"audio", "text"} <= set(info.modalities):
        raise ModelError(f"model {info.model_id!r} embeds only {', '.join(info.modalities)}; matching needs audio and text")
    tv, av = _load(store, info.model_id, texts_where, audio_where, max_memory)
    check_same_model(tv, av, info)
    _refuse_empty(tv, av, texts_where, audio_where)
    return tv, av, info


def run_match(store: Store, model: str, threshold: float, top_k: int | None = None, per: str = "text",
              method: str = "exact", texts_where: str | None = None, audio_where: str | None = None,
              run_name: str | None = None, replace: bool = False, device: str = "auto", block=None,
              precision: str = "auto", ann: dict | None = None, progress=None,
              max_memory: int | None = None) -> RunSummary:
    """Match every (filtered) caption of `model` against every (filtered) clip; write the run.

    `max_memory` (bytes; None = no limit): an exact run over a pool whose vectors are larger
    streams clip blocks from the store (`curator.match.stream`); the pairs are the same."""
    t0 = time.perf_counter()
    t = check_params(threshold, top_k, per)
    if method not in METHODS:
        raise ParameterError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    run_id = _check_run_name(run_name)
    tv, av, info = load_pool(store, model, texts_where, audio_where, max_memory if method == "exact" else None)
    params = {"texts_where": texts_where, "audio_where": audio_where,
              "missing_vectors": {"text": tv.missing, "audio": av.missing}}
    if method == "exact":
        params |= {"device": str(device), "precision": precision, "block": block}
    inputs = _inputs(store, tv, av, [n for n, w in (("texts", texts_where), ("audio", audio_where)) if w])
    request = (method, info.model_id, t, top_k, per, inputs, params, ann or {})
    done = _existing(store, run_id, replace, request)
    if done is not None:
        return done
    recall = None
    if method == "exact":
        if isinstance(av, Vectors):
            blocks = match_blocks(tv.vecs, av.vecs, t, top_k, per, device=device, block=block,
                                  precision=precision, progress=progress)
        else:
            blocks = match_stream(tv.vecs, av, t, top_k, per, device=device, block=block, precision=precision,
                                  max_memory=max_memory, progress=progress)
    elif method == "sql":
        blocks = match_sql(tv.vecs, av.vecs, t, top_k, per)
    else:
        blocks, recall, ann_params = match_ann(store, info, tv, av, t, top_k, per, ann or {}, progress=progress)
        params |= {"ann": ann_params}
    with store.lock(f"run-{run_id}"):  # one writer per run name: a twin that finished meanwhile wins
        done = _existing(store, run_id, replace, request)
        if done is not None:
            return done
        delete_run(store, run_id)  # a replaced run, or leftovers of an interrupted one
        pairs = _write_candidates(store, run_id, tv.ids, av.ids, blocks)
        crash_point("candidates written")
        summary = RunSummary(run_id, method, info.model_id, t, top_k, per, len(tv), len(av), pairs, recall,
                             round(time.perf_counter() - t0, 3), inputs, params)
        _write_run(store, summary)
    return summary


def _write_candidates(store: Store, run_id: str, text_ids: pa.Array, audio_ids: pa.Array, blocks) -> int:
    pending: list[tuple[np.ndarray, ...]] = []
    held = total = 0
    for r, c, s, rank in blocks:
        if len(r) == 0:
            continue
        pending.append((r, c, s, rank))
        held += len(r)
        if held >= WRITE_ROWS:
            total += _flush(store, run_id, text_ids, audio_ids, pending)
            pending, held = [], 0
    total += _flush(store, run_id, text_ids, audio_ids, pending)
    return total


def _flush(store, run_id, text_ids, audio_ids, pending) -> int:
    if not pending:
        return 0
    r, c, s, rank = (np.concatenate([p[i] for p in pending]) for i in range(4))
    data = pa.table({
        "run_id": pa.array(np.full(len(r), run_id, dtype=object), pa.string()),
        "text_id": text_ids.take(pa.array(r)),
        "audio_id": audio_ids.take(pa.array(c)),
        "score": pa.array(s.astype(np.float32)),
        "rank": pa.array(rank.astype(np.int32)),
    }, schema=CANDIDATES)
    return store.append("candidates", data)


def _write_run(store: Store, s: RunSummary) -> None:
    row = {
        "run_id": s.run_id, "method": s.method, "model_id": s.model_id, "threshold": s.threshold,
        "top_k": s.top_k, "per": s.per, "params": json.dumps(s.params, sort_keys=True, default=str),
        "inputs": s.inputs, "n_texts": s.n_texts, "n_audio": s.n_audio, "pairs": s.pairs,
        "recall": s.recall, "duration_s": s.duration_s, "created_at": now(),
    }
    store.append("runs", pa.Table.from_pylist([row], schema=RUNS))
