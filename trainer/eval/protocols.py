"""Named zero-shot protocols: which clips, which prompt, which label spelling, which metrics.

A zero-shot number is comparable with a published one only when the protocol is the same, and the
two CLAP families publish ESC-50 under different ones. Each protocol here fixes

- the clips: the dataset's clips in the store (default `source in (<dataset names>)`, or `--audio-where`),
  then the folds or split the protocol evaluates (each fold scored separately, then averaged);
- the classes: every distinct first label of the dataset's clips (all folds), so the class set
  does not depend on the fold;
- the label spelling: ESC-50 / UrbanSound8K / TUT17 labels are file-system names
  (`chirping_birds`, `car_horn`, `city_center`); the protocols turn underscores into spaces, as
  both LAION-CLAP's and msclap's evaluation code do;
- the prompt template (see PROTOCOLS and docs/EVALUATION.md for where each comes from);
- the metrics: accuracy, mean class accuracy, and LAION-CLAP's ranking metrics over classes
  (R@1/5/10 of the true class, mAP@10 = mean of 1/rank when rank <= 10, mean and median rank).

`custom` is the free-form evaluation: classes from a label set or a list, `--template`,
`--audio-where`, labels spelled as stored.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from schemas.errors import ParameterError
from trainer.eval.confusion import confusion_report
from trainer.eval.metrics import RANK_KS, rank_metrics
from trainer.eval.zero_shot import embed_clips, embed_texts, eval_clips

LAION_TEMPLATE = "This is a sound of {label}"  # LAION-CLAP's zero-shot scripts: "This is a sound of " + label
MSCLAP_TEMPLATE = "this is the sound of {label}"  # msclap's ESC-50 example: 'this is the sound of ' + class
PAPER_TEMPLATE = "this is a sound of {label}"  # msclap 2022 as followed by the improvement-set paper (seed 002)
EVAL_SPLITS = ("evaluation", "evaluate", "eval", "test")
ESC50 = ("esc50", "ESC-50")  # `curator ingest audio ESC-50/meta/esc50.csv` names the source esc50


@dataclass(frozen=True)
class Protocol:
    name: str
    dataset: tuple[str, ...] | None  # default sources of the clips; None = custom (--audio-where)
    template: str | None  # None = custom (--template)
    folds: tuple[int, ...] = ()  # evaluate each fold on its own, report the mean; () = one pass
    only_folds: tuple[int, ...] = ()  # restrict the clips to these folds (one pass)
    eval_split: bool = False  # only clips whose split is an evaluation split
    spell: bool = True  # underscores in labels become spaces
    comparable: str = ""

    def groups(self, base: str) -> list[tuple[str, str]]:
        """(name, SQL over `audio`) of each group of clips scored on its own."""
        if self.folds:
            return [(f"fold {k}", f"({base}) and fold = {k}") for k in self.folds]
        if self.only_folds:
            folds = ", ".join(map(str, self.only_folds))
            return [(f"fold {folds}", f"({base}) and fold in ({folds})")]
        if self.eval_split:
            splits = ", ".join(f"'{s}'" for s in EVAL_SPLITS)
            return [("evaluation split", f"({base}) and lower(split) in ({splits})")]
        return [("all", base)]


PROTOCOLS: dict[str, Protocol] = {p.name: p for p in (
    Protocol("esc50-fold1", ESC50, LAION_TEMPLATE, only_folds=(1,),
             comparable="LAION-CLAP's ESC-50 zero-shot (fold 1, 400 clips)"),
    Protocol("esc50-all", ESC50, MSCLAP_TEMPLATE,
             comparable="msclap's ESC-50 zero-shot (all 2,000 clips)"),
    Protocol("esc50-5fold", ESC50, PAPER_TEMPLATE, folds=(1, 2, 3, 4, 5),
             comparable="mean over the 5 official folds; the improvement-set paper's prompt"),
    Protocol("us8k-10fold", ("us8k", "UrbanSound8K"), PAPER_TEMPLATE, folds=tuple(range(1, 11)),
             comparable="mean over the 10 official UrbanSound8K folds"),
    Protocol("tut17", ("tut17",), PAPER_TEMPLATE, eval_split=True,
             comparable="TUT Acoustic Scenes 2017 evaluation set (1,620 clips)"),
    Protocol("custom", None, None, spell=False, comparable="nothing published: your clips, classes and prompt"),
)}


def spell(label: str | None, protocol: Protocol) -> str | None:
    return label.replace("_", " ") if (label is not None and protocol.spell) else label


def _select(store_uri: str, sql: str, what: str) -> pa.Table:
    try:
        return eval_clips(store_uri, sql)
    except ParameterError:
        raise ParameterError(f"{what}: no clips match {sql!r} (ingest the dataset with its manifest, e.g. "
                             f"esc50.csv, so clips carry source, labels and fold)") from None


def _classes(protocol: Protocol, clips: pa.Table, labels: list[str] | None) -> list[str]:
    if labels:
        return list(dict.fromkeys(labels))
    found = sorted({spell(v, protocol) for v in clips.column("label").to_pylist() if v is not None})
    if len(found) < 2:
        raise ParameterError(f"protocol {protocol.name}: the clips have {len(found)} distinct label(s); "
                             f"zero-shot needs at least 2 classes")
    return found


def run_protocol(store_uri: str, student, name: str, audio_where: str | None = None, labels: list[str] | None = None,
                 template: str | None = None, batch_size: int = 32) -> dict:
    """Evaluate `student` under protocol `name`; the result names the protocol, its prompt, its
    classes and the clips of every group, so a reader can check what was measured."""
    if name not in PROTOCOLS:
        raise ParameterError(f"unknown protocol {name!r}; protocols: {', '.join(PROTOCOLS)}")
    protocol = PROTOCOLS[name]
    if protocol.dataset is not None and (labels or template):
        raise ParameterError(f"protocol {name} fixes the classes and the prompt; --label-set, --labels and "
                             f"--template go with --protocol custom")
    if protocol.dataset is None and not labels:
        raise ParameterError("protocol custom needs the classes: --label-set or --labels")
    template = protocol.template or template
    if not template or "{label}" not in template:
        raise ParameterError(f"template {template!r} has no {{label}} placeholder")
    sources = ", ".join(f"'{d}'" for d in protocol.dataset or ())
    base = audio_where or (f"source in ({sources})" if protocol.dataset else "true")
    every = _select(store_uri, base, f"protocol {name}")
    classes = _classes(protocol, every, labels)
    groups = [(g, _select(store_uri, sql, f"protocol {name}, {g}")) for g, sql in protocol.groups(base)]

    # Embed each clip once, however many groups it is in; prompts once.
    wanted = pa.concat_tables([t for _, t in groups]).combine_chunks()
    ids = list(dict.fromkeys(wanted.column("audio_id").to_pylist()))
    clips = wanted.take(pc.index_in(pa.array(ids), wanted.column("audio_id")))
    prompts = [template.format(label=c) for c in classes]
    text = embed_texts(student, prompts)
    audio, ok, errors = embed_clips(student, clips, batch_size)
    row_of = {a: i for i, a in enumerate(ids)}
    index = {c: i for i, c in enumerate(classes)}

    results = []
    for group, table in groups:
        truth_all = [spell(v, protocol) for v in table.column("label").to_pylist()]
        rows = [(row_of[a], index[t]) for a, t in zip(table.column("audio_id").to_pylist(), truth_all)
                if t in index and ok[row_of[a]]]
        scored_ids = [ids[r] for r, _ in rows]
        rows_idx = np.array([r for r, _ in rows], dtype=np.int64)
        truth = np.array([t for _, t in rows], dtype=np.int64)
        scores = audio[rows_idx] @ text.T if len(rows) else np.zeros((0, len(classes)), np.float32)
        pred = scores.argmax(axis=1) if len(rows) else np.zeros(0, np.int64)
        results.append({"group": group, **confusion_report(truth, pred, classes), **rank_metrics(scores, truth),
                        "excluded_unknown_label": sum(1 for t in truth_all if t not in index),
                        "audio_ids": scored_ids})
    summary_keys = ("accuracy", "mean_class_accuracy", *(f"R@{k}" for k in RANK_KS), "mAP@10")
    summary = {k: _mean([r[k] for r in results]) for k in summary_keys}
    return {"task": "zero-shot", "protocol": name, "comparable_with": protocol.comparable, "template": template,
            "prompts": prompts, "labels": classes, "label_spelling": "underscores to spaces" if protocol.spell
            else "as stored", "clips_where": base, "aggregate": "mean over groups" if len(results) > 1 else "one group",
            **summary, "n": sum(r["n"] for r in results), "groups": results, "skipped": len(errors),
            "errors": errors[:20]}


def _mean(values: list) -> float | None:
    vals = [v for v in values if v is not None]
    return float(np.mean(vals)) if vals else None
