"""Zero-shot classification and cross-modal retrieval: the same protocol every time.

Zero-shot: every class is the prompt `template.format(label=...)` embedded by the model's text
tower; a clip's class is the argmax of its (centre-windowed) audio vector against those prompts.
Retrieval: recall@K of text->audio and audio->text over paired rows.
The store is read through `schemas.reading` (the trainer never imports `curator`).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

from schemas.errors import ModelError, ParameterError
from schemas.filters import where_clause
from schemas.reading import query
from schemas.tables import PROMPT_TEMPLATE, check_template
from trainer.data.rows import eval_loader
from trainer.eval.confusion import confusion_report
from trainer.students.loading import build_student, load_student
from trainer.students.named import resolve_model  # noqa: F401  (a name or a folder; re-exported for callers)

RECALL_KS = (1, 5, 10)


# -- reading the store -------------------------------------------------------------------------
def audio_filter(where: str | None, option: str = "--audio-where") -> tuple[str, str]:
    """(`where (<expr>)` or "", what a DuckDB error starts with) for the user's filter over `audio`,
    checked to be one boolean expression (schemas.filters) before it is put into SQL."""
    if not where:
        return "", "query failed"
    return f"where {where_clause(where, option)}", f"{option} {where!r}"


def prompt_labels(store_uri: str, label_set: str) -> list[str]:
    """The classes of a label set: labels of its `texts` rows of kind 'prompt'."""
    rows = query(store_uri, "select distinct label from texts where kind = 'prompt' and label_set = ? "
                                  "and label is not null order by label", [label_set])
    labels = rows.column("label").to_pylist()
    if not labels:
        known = query(store_uri, "select distinct label_set from texts where kind = 'prompt' "
                                       "and label_set is not null order by 1").column(0).to_pylist()
        raise ParameterError(f"label set {label_set!r} has no prompts in texts; known: {', '.join(known) or 'none'}")
    return labels


def eval_clips(store_uri: str, where: str | None, option: str = "--audio-where") -> pa.Table:
    """`audio` rows matching `where`, ground truth = first element of `labels`."""
    cond, what = audio_filter(where, option)
    clips = query(store_uri, f"select audio_id, uri, labels[1] as label from audio {cond} order by audio_id",
                  what=what)
    if clips.num_rows == 0:
        raise ParameterError(f"no audio rows match {where!r}" if where else "the audio table is empty")
    return clips


def paired_captions(store_uri: str, where: str | None, option: str = "--audio-where") -> pa.Table:
    """Captions in `texts` with their paired clip, the clip filtered by `where` over `audio`."""
    cond, what = audio_filter(where, option)
    return query(store_uri, f"with a as (select * from audio {cond}) select t.text_id, t.text, a.audio_id, a.uri "
                                  "from texts t join a on t.audio_id = a.audio_id where t.kind = 'caption' "
                                  "order by a.audio_id, t.text_id", what=what)


def load_model(path: str, device: str = "cpu"):
    """A student checkpoint folder (student.json) or a Hugging Face ClapModel folder."""
    folder = Path(path)
    if (folder / "student.json").exists():
        return load_student(folder, device=device)
    config = folder / "config.json"
    try:
        model_type = json.loads(config.read_text()).get("model_type") if config.exists() else None
    except json.JSONDecodeError as exc:
        raise ModelError(f"{config}: not valid JSON ({exc})") from None
    if model_type == "clap":
        return build_student("clap-hf", init_path=str(folder)).to(device)
    raise ModelError(f"{path}: neither a student checkpoint (student.json) nor a ClapModel folder")


# -- encoding --------------------------------------------------------------------------------
def _device_of(model) -> torch.device:
    return next(model.parameters()).device


def _as_clip_table(clips) -> pa.Table:
    if isinstance(clips, pa.Table):
        table = clips
    else:
        rows = [c if isinstance(c, dict) else {"uri": c[0], "label": c[1]} for c in clips]
        table = pa.Table.from_pylist(rows)
    if "uri" not in table.column_names:
        raise ParameterError("clips need a 'uri' column")
    if "audio_id" not in table.column_names:
        table = table.append_column("audio_id", table.column("uri"))
    return table


@torch.no_grad()
def embed_clips(model, clips: pa.Table, batch_size: int = 32) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """(vectors (n, dim) with zero rows for failed clips, ok mask, errors) for centre windows."""
    device = _device_of(model)
    vecs = np.zeros((clips.num_rows, model.dim), dtype=np.float32)
    ok = np.zeros(clips.num_rows, dtype=bool)
    errors: list[dict] = []
    was_training = model.training
    model.eval()
    try:
        for batch in eval_loader(clips, model.sample_rate, model.window_samples, batch_size):
            errors.extend(batch["errors"])
            if batch["n"]:
                out = model.encode_audio(batch["wave"].to(device)).float().cpu().numpy()
                vecs[batch["rows"]] = out
                ok[batch["rows"]] = True
    finally:
        model.train(was_training)
    return vecs, ok, errors


@torch.no_grad()
def embed_texts(model, texts: list[str], batch_size: int = 64) -> np.ndarray:
    was_training = model.training
    model.eval()
    try:
        chunks = [model.encode_texts(texts[i:i + batch_size]).float().cpu().numpy()
                  for i in range(0, len(texts), batch_size)]
    finally:
        model.train(was_training)
    return np.concatenate(chunks) if chunks else np.zeros((0, model.dim), dtype=np.float32)


# -- protocols -------------------------------------------------------------------------------
def evaluate_zero_shot(student, clips, labels: list[str], template: str = PROMPT_TEMPLATE,
                       batch_size: int = 32) -> dict:
    """Zero-shot accuracy of `student` on `clips` (a table or list with uri + label, or (uri, label)
    pairs) over the classes `labels`. Clips whose truth is not a class are counted, not scored."""
    labels = list(dict.fromkeys(labels))
    if len(labels) < 2:
        raise ParameterError(f"zero-shot needs at least 2 classes, got {len(labels)}")
    check_template(template)
    table = _as_clip_table(clips)
    truth_all = table.column("label").to_pylist() if "label" in table.column_names else [None] * table.num_rows
    index = {lab: i for i, lab in enumerate(labels)}
    keep = [i for i, t in enumerate(truth_all) if t in index]
    excluded = table.num_rows - len(keep)
    if not keep:
        raise ParameterError("no clip's ground-truth label is among the classes")
    table = table.take(keep)
    prompts = embed_texts(student, [template.format(label=lab) for lab in labels])
    audio, ok, errors = embed_clips(student, table, batch_size)
    truth = np.array([index[table.column("label")[i].as_py()] for i in range(table.num_rows)])[ok]
    pred = (audio[ok] @ prompts.T).argmax(axis=1) if ok.any() else np.zeros(0, dtype=int)
    report = confusion_report(truth, pred, labels)
    return {"task": "zero-shot", "template": template, **report,
            "excluded_unknown_label": excluded, "skipped": len(errors), "errors": errors[:20]}


def zero_shot_hook(store_uri: str, student, label_set: str, where: str | None, template: str = PROMPT_TEMPLATE):
    """A function step -> summary of `student`'s zero-shot accuracy on the clips `where` selects over
    `label_set`'s classes; reads the store once, now, so a bad option fails before training."""
    labels = prompt_labels(store_uri, label_set)
    clips = eval_clips(store_uri, where, "--eval-where")

    def run(step: int) -> dict:
        res = evaluate_zero_shot(student, clips, labels, template)
        return {"task": "zero-shot", "label_set": label_set, "where": where, "n": res["n"],
                "accuracy": res["accuracy"], "mean_class_accuracy": res["mean_class_accuracy"]}

    return run


def _recall(ranks: np.ndarray) -> dict:
    return {f"R@{k}": float((ranks < k).mean()) if len(ranks) else None for k in RECALL_KS}


def evaluate_retrieval(student, pairs: pa.Table, batch_size: int = 32) -> dict:
    """Recall@1/5/10 for text->audio and audio->text over (audio_id, uri, text) rows; a clip with
    several captions counts as found by audio->text when any of them ranks within K."""
    for col in ("audio_id", "uri", "text"):
        if col not in pairs.column_names:
            raise ParameterError(f"retrieval pairs need a {col!r} column")
    ids = pairs.column("audio_id").to_pylist()
    unique = list(dict.fromkeys(ids))
    if len(unique) < 2:
        raise ParameterError(f"retrieval needs at least 2 distinct clips, got {len(unique)}")
    first = {a: ids.index(a) for a in unique}
    clips = pairs.take([first[a] for a in unique]).select(["audio_id", "uri"])
    audio, ok, errors = embed_clips(student, clips, batch_size)
    bad = {unique[i] for i in np.flatnonzero(~ok)}
    keep = [i for i, a in enumerate(ids) if a not in bad]
    audio_ok = audio[ok]
    column = {a: j for j, a in enumerate(a for a in unique if a not in bad)}
    text_vecs = embed_texts(student, [pairs.column("text")[i].as_py() or "" for i in keep])
    sims = text_vecs @ audio_ok.T  # (texts, clips)
    target = np.array([column[ids[i]] for i in keep])
    own = sims[np.arange(len(keep)), target]
    t2a = (sims > own[:, None]).sum(axis=1)
    # a text's rank among all texts for its own clip; a clip's a2t rank is its best caption's
    text_rank = (sims[:, target] > own[None, :]).sum(axis=0)
    a2t = np.full(audio_ok.shape[0], np.iinfo(np.int64).max)
    np.minimum.at(a2t, target, text_rank)
    return {"task": "retrieval", "n_texts": len(keep), "n_audio": int(audio_ok.shape[0]),
            "text_to_audio": _recall(t2a), "audio_to_text": _recall(a2t), "skipped": len(errors),
            "errors": errors[:20]}

