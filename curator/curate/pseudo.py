"""Pseudo-labelled sets (DESIGN.md section 6 item 7).

p(c | x) = softmax_c(s * a . p_c), with a the clip's teacher audio vector, p_c the class's prompt
vector and s the model's logit scale (or 1 / --temperature); or p(c | x) from a trained
classifier checkpoint. A clip is kept when max_c p >= the confidence threshold; its row records
the label, confidence p1, margin p1 - p2 and entropy -sum p ln p (nats), with the chosen class's
prompt as the text side.

When a label has several prompts (templates), its class vector is their renormalised mean
(prompt ensembling) and the row's text is the first prompt in text_id order.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curator.curate.catalog import SET_INPUT
from curator.curate.rows import assemble, label_classes, select_clips, start_build, vector_source
from curator.curate.strategies import Build
from curator.curate.thresholds import RULES, class_thresholds, confident_counts
from curator.models.registry import checkpoint_trained_on
from curator.store.store import Store
from curator.store.vectors import VectorBlocks
from schemas.errors import ModelError, ParameterError

BLOCK = 16384  # clips scored per matrix product
READ_BLOCKS = 4  # BLOCKs read from the store at a time: 256 MB at 1024-d


@dataclass
class PseudoOptions:
    label_set: str
    min_confidence: float = 0.9
    audio_where: str | None = None
    max_per_class: int | None = None
    temperature: float | None = None
    classifier: str | None = None
    per_class_threshold: str | None = None  # flexmatch | quantile (curator.curate.thresholds)

    def check(self) -> None:
        if self.per_class_threshold is not None and self.per_class_threshold not in RULES:
            raise ParameterError(f"--per-class-threshold {self.per_class_threshold!r}: expected one of "
                                 f"{', '.join(RULES)}")
        if not 0.0 < self.min_confidence <= 1.0:
            raise ParameterError(f"--min-confidence {self.min_confidence}: must be in (0, 1]")
        if self.max_per_class is not None and self.max_per_class < 1:
            raise ParameterError(f"--max-per-class {self.max_per_class}: must be at least 1")
        if self.temperature is not None and not self.temperature > 0:
            raise ParameterError(f"--temperature {self.temperature}: must be positive")

    def params(self) -> dict:
        return {"label_set": self.label_set, "min_confidence": self.min_confidence,
                "audio_where": self.audio_where, "max_per_class": self.max_per_class,
                "temperature": self.temperature, "classifier": self.classifier,
                **({"per_class_threshold": self.per_class_threshold} if self.per_class_threshold else {})}


def softmax_stats(logits: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(argmax, p1, p1 - p2, entropy in nats) of row-wise softmax(logits), numerically stable."""
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    p = e / e.sum(axis=1, keepdims=True)
    return probability_stats(p)


def probability_stats(p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    arg = p.argmax(axis=1)
    top = np.sort(p, axis=1)[:, ::-1]
    p2 = top[:, 1] if p.shape[1] > 1 else np.zeros(len(p), p.dtype)
    with np.errstate(divide="ignore", invalid="ignore"):
        ent = -np.where(p > 0, p * np.log(p), 0.0).sum(axis=1)
    return arg, top[:, 0], top[:, 0] - p2, ent


def _zero_shot(source: VectorBlocks, class_vecs: np.ndarray, scale: float):
    """Softmax stats of every clip, its vectors read from the store block by block: memory holds one
    read block and four numbers per clip, however large the pool (a 2 M x 1024 pool is 8 GB)."""
    out = []
    for _, vecs in source.blocks(READ_BLOCKS * BLOCK):
        out += [softmax_stats(scale * (vecs[s:s + BLOCK] @ class_vecs.T).astype(np.float64))
                for s in range(0, len(vecs), BLOCK)]
    return tuple(np.concatenate([o[k] for o in out]) for k in range(4))


def _scale(model, temperature: float | None) -> float:
    if temperature is not None:
        return 1.0 / temperature
    s = getattr(model, "logit_scale", None)
    if s is None or not np.isfinite(s) or s <= 0:
        raise ModelError(f"model {model.model_id!r} has no logit scale; pass --temperature")
    return float(s)


def _from_classifier(path: str, store: Store, audio_ids: list[str], classes: list[str]):
    # Loading a classifier needs torch; zero-shot pseudo-labelling and `--help` must not pay for it.
    from trainer.students.classifier import predict_proba

    labels, probs = predict_proba(path, store.uri, audio_ids)
    probs = np.asarray(probs, dtype=np.float64)
    if probs.shape != (len(audio_ids), len(labels)):
        raise ParameterError(f"classifier {path}: returned probabilities of shape {probs.shape}, expected "
                             f"({len(audio_ids)}, {len(labels)})")
    unknown = [lab for lab in labels if lab not in classes]
    if unknown:
        raise ParameterError(f"classifier {path}: label(s) {', '.join(map(str, unknown[:5]))} have no prompt in "
                             "the label set")
    # Reorder the classifier's columns into the label set's class order.
    full = np.zeros((len(audio_ids), len(classes)))
    for j, lab in enumerate(labels):
        full[:, classes.index(lab)] = probs[:, j]
    return probability_stats(full)


def _cap(labels: np.ndarray, conf: np.ndarray, audio_ids: pa.Array, keep: np.ndarray, cap: int | None):
    """Indices kept, at most `cap` per class: the most confident first, ties by audio_id.

    One Arrow sort by (class, -confidence, audio_id): a Python sort of millions of kept clips held
    ~0.5 GB of key tuples."""
    idx = np.flatnonzero(keep).astype(np.int64)
    if cap is None or len(idx) == 0:
        return idx
    lab = np.asarray(labels)[idx].astype(np.int64)
    by = pa.table({"label": lab, "neg_conf": -np.asarray(conf, np.float64)[idx], "id": audio_ids.take(pa.array(idx))})
    order = pc.sort_indices(by, [("label", "ascending"), ("neg_conf", "ascending"), ("id", "ascending")]).to_numpy()
    lab = lab[order]
    starts = np.flatnonzero(np.r_[True, lab[1:] != lab[:-1]])  # first row of each class in the sorted order
    rank = np.arange(len(lab)) - np.repeat(starts, np.diff(np.r_[starts, len(lab)]))
    return np.sort(idx[order][rank < cap])


def build_pseudo(store: Store, model_name: str, opts: PseudoOptions, allow_contaminated: bool = False) -> Build:
    opts.check()
    model, lin = start_build(store, model_name)
    classes, p_ids, p_texts, class_vecs = label_classes(store, lin, opts.label_set, model)
    clips = select_clips(store, lin, opts.audio_where, "--audio-where", allow_contaminated)
    a_pos, a_source = vector_source(store, lin, model, "audio", clips.column("audio_id"), "clips")
    if len(a_pos) == 0:
        raise ParameterError(f"no selected clip has a vector from {model.model_id!r}; run `curator embed` first")
    audio_ids = clips.column("audio_id").take(pa.array(a_pos, pa.int64())).combine_chunks()  # Arrow: millions
    params = opts.params()
    if opts.classifier:
        labels, conf, margin, ent = _from_classifier(opts.classifier, store, audio_ids.to_pylist(), classes)
        lin.add(f"classifier:{Path(opts.classifier).resolve()}")
        parent = checkpoint_trained_on(opts.classifier)
        if parent:
            lin.add(f"{SET_INPUT}{parent}")
    else:
        params["logit_scale"] = _scale(model, opts.temperature)
        labels, conf, margin, ent = _zero_shot(a_source, class_vecs, params["logit_scale"])
    tau_c = class_thresholds(opts.per_class_threshold, labels, conf, len(classes), opts.min_confidence)
    keep = conf >= tau_c[labels]
    sel = _cap(labels, conf, audio_ids, keep, opts.max_per_class)
    chosen = labels[sel].astype(np.int64)
    kept_vecs = a_source.take(sel)  # only the kept clips' vectors are ever held together
    score = np.einsum("ij,ij->i", kept_vecs, class_vecs[chosen]).astype(np.float32)
    columns = {"text_id": [p_ids[c] for c in chosen], "text": [p_texts[c] for c in chosen], "score": score,
               "label": [classes[c] for c in chosen], "confidence": conf[sel].astype(np.float32),
               "margin": margin[sel].astype(np.float32), "entropy": ent[sel].astype(np.float32)}
    rows = assemble(clips, a_pos[sel], columns, kept_vecs, class_vecs[chosen])
    counts = {c: 0 for c in classes}
    for c in chosen:
        counts[classes[c]] += 1
    confident = confident_counts(labels, conf, len(classes), opts.min_confidence)
    lin.stats.update({"clips_scored": len(a_pos), "above_confidence": int(keep.sum()), "per_class": counts,
                      "per_class_confident": {c: int(n) for c, n in zip(classes, confident)}})
    if opts.per_class_threshold:
        thresholds = {c: (float(t) if np.isfinite(t) else None) for c, t in zip(classes, tau_c)}
        lin.stats["thresholds"] = thresholds
        params.update(thresholds=thresholds, per_class=counts)
    return Build(rows, "pseudo", params, lin.inputs, model, lin.stats)
