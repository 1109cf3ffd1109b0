"""`trainer fit --loss hybrid`: a scene classifier trained with L = CE(classifier(A), y) + λ·L_con
(DESIGN 6.8), the text side of L_con being each clip's context caption (label, city, time). It is
an objective of the one training loop, so it resumes exactly, checkpoints every N steps,
evaluates (classifier accuracy on --eval-where clips, zero-shot with --eval-label-set) and runs
under torchrun like the contrastive runs.

- Classes: `--classes` names a label set (its prompts' labels in `texts`) or a file, one label a line.
  Rows come from the set's `label` column; rows without a label are skipped, an unknown label refused.
- L_con is the multi-positive contrastive loss over the batch with rows sharing a caption as
  positives: several clips of one scene, city and part of day have the same caption, and the hard
  CLAP loss would push those identical texts apart. λ = 0 trains an audio-only classifier (the
  text tower is not run at all).
- `--fuse-metadata`: city embedding + MLP(time features) concatenated to the audio vector (6.9).
- Mixup (α = 1.0 by default): waves and one-hot targets mixed with λ_m ~ Beta(α, α), taken as
  max(λ_m, 1 − λ_m) so each row stays dominated by its own clip, whose caption and metadata it keeps.
  SpecAugment: the compact student's time / frequency masks, on while training.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch
import torch.nn.functional as F
from torch import nn

from schemas.errors import ParameterError, TrainingError
from trainer.data.context import city_vocabulary, context_caption
from trainer.data.rows import open_set
from trainer.eval.classifier import classifier_hook
from trainer.eval.zero_shot import prompt_labels, zero_shot_hook
from trainer.students.classifier import ClassifierConfig, SceneClassifier, load_classifier
from trainer.train.config import HYBRID_DEFAULTS
from trainer.train.losses import hybrid_loss, multi_positive_loss
from trainer.train.objective import Objective
from trainer.train.runtime import build_or_load_student, student_kind


def read_classes(store: str, spec: str) -> list[str]:
    """A labels file (one per line, '#' comments) or a label set's prompt labels."""
    path = Path(spec)
    if path.is_file():
        labels = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines()]
        labels = list(dict.fromkeys(lab for lab in labels if lab and not lab.startswith("#")))
        if len(labels) < 2:
            raise ParameterError(f"--classes {spec}: the file lists {len(labels)} label(s); need at least 2")
        return labels
    return prompt_labels(store, spec)


@dataclass
class SceneRows:
    """Per-row training arrays of a set: class index, context caption and its group, metadata."""

    table: object
    y: np.ndarray
    captions: list[str]
    groups: np.ndarray
    cities: list
    times: list
    skipped_unlabelled: int


def scene_rows(table, classes: list[str], template: str, what: str) -> SceneRows:
    if "label" not in table.column_names:
        raise ParameterError(f"set {what} has no 'label' column; build it with `curator build labelled` "
                             "or `curator pseudo-label`")
    labels = table.column("label").to_pylist()
    keep = [i for i, lab in enumerate(labels) if lab]
    unknown = sorted({labels[i] for i in keep} - set(classes))
    if unknown:
        raise ParameterError(f"set {what}: label(s) {', '.join(map(repr, unknown[:5]))} are not in --classes "
                             f"({', '.join(classes)})")
    if not keep:
        raise ParameterError(f"set {what}: no row has a label")
    table = table.take(keep)
    skipped = len(labels) - len(keep)
    labels = [labels[i] for i in keep]
    n = table.num_rows
    cities = table.column("city").to_pylist() if "city" in table.column_names else [None] * n
    times = table.column("recorded_at").to_pylist() if "recorded_at" in table.column_names else [None] * n
    captions = [context_caption(template, lab, c, t) for lab, c, t in zip(labels, cities, times)]
    group_of = {c: i for i, c in enumerate(dict.fromkeys(captions))}
    index = {c: i for i, c in enumerate(classes)}
    return SceneRows(table, np.array([index[lab] for lab in labels], np.int64), captions,
                     np.array([group_of[c] for c in captions], np.int64), cities, times, skipped)


def balance(rows: SceneRows) -> SceneRows:
    """Oversample each class's rows to about the largest class's count (whole repeats): a pseudo-label
    round adds mostly the classes the previous model was already sure of, and without this the
    others are outvoted in the next model."""
    counts = np.bincount(rows.y)
    reps = np.where(counts > 0, np.rint(counts.max() / np.maximum(counts, 1)), 0).astype(np.int64)
    idx = np.repeat(np.arange(len(rows.y)), reps[rows.y])
    pick = lambda values: [values[i] for i in idx]  # noqa: E731
    return SceneRows(rows.table.take(pa.array(idx)), rows.y[idx], pick(rows.captions), rows.groups[idx],
                     pick(rows.cities), pick(rows.times), rows.skipped_unlabelled)


class _Step(nn.Module):
    """One forward of classifier + (optional) text tower, so DDP sees every used parameter."""

    def __init__(self, model: SceneClassifier):
        super().__init__()
        self.model = model

    def forward(self, waves, city, time_f, tokens):
        audio, logits = self.model(waves, city, time_f)
        text = self.model.student.encode_text(tokens) if tokens is not None else None
        return audio, logits, text, self.model.student.logit_scale.exp()


def mix(waves, y, n_classes: int, alpha: float, rng: np.random.Generator):
    """Mixup of a batch: (mixed waves, soft targets, λ_m, permutation)."""
    lam = float(rng.beta(alpha, alpha))
    lam = max(lam, 1.0 - lam)
    perm = torch.from_numpy(rng.permutation(waves.shape[0]))
    onehot = F.one_hot(y, n_classes).float()
    return lam * waves + (1 - lam) * waves[perm], lam * onehot + (1 - lam) * onehot[perm], lam, perm


def enable_spec_augment(student, kind: str) -> None:
    frontend = getattr(student, "frontend", None)
    if frontend is None or not hasattr(frontend, "spec_augment"):
        raise ParameterError(f"--spec-augment needs the compact student (log-mel inside the model); got {kind}")
    frontend.spec_augment = True


class HybridObjective(Objective):
    """A SceneClassifier (student audio tower + head) trained with the hybrid loss; the module saved
    is the classifier, so its checkpoint is a classifier folder and a student folder at once."""

    name = "hybrid"
    trajectory = tuple(HYBRID_DEFAULTS)
    min_rows = 2  # a single clip makes no contrastive batch

    def open(self) -> None:
        cfg = self.cfg
        self.classes = read_classes(cfg.store, cfg.classes)
        main = open_set(cfg.store, cfg.set_ref)
        rows = scene_rows(main.table, self.classes, cfg.context_template, main.resolved.ref)
        self.rows = balance(rows) if cfg.balance_classes else rows
        self.sources = {"set": main, "replay": None}
        self.tables = [self.rows.table]

    def build(self, resume_dir) -> None:
        cfg = self.cfg
        if resume_dir is not None:
            model = load_classifier(resume_dir)
            if model.classes != self.classes:
                raise TrainingError(f"cannot resume: the checkpoint's classes ({', '.join(model.classes)}) are not "
                                    f"--classes {cfg.classes} ({', '.join(self.classes)})")
            kind = student_kind(resume_dir)
        else:
            student, kind = build_or_load_student(cfg, None)
            head = ClassifierConfig(classes=self.classes, cities=city_vocabulary(self.rows.cities),
                                    fuse_metadata=cfg.fuse_metadata, hidden=cfg.head_hidden,
                                    context_template=cfg.context_template, lam=cfg.lam)
            model = SceneClassifier(student, head)
        if cfg.spec_augment:
            enable_spec_augment(model.student, kind)
        self.module, self.student, self.student_kind = model, model.student, kind
        self.city_t, self.time_t = model.metadata_tensors(self.rows.cities, self.rows.times)

    def forward_module(self) -> nn.Module:
        return _Step(self.module)

    def loss(self, model, batch: dict, n: int, step: int, rt) -> tuple[torch.Tensor, dict, str]:
        cfg, rows, device = self.cfg, self.rows, rt.device
        idx = np.asarray(batch["rows"][:n], np.int64)
        waves = batch["wave"][:n].to(device)
        y = torch.from_numpy(rows.y[idx]).to(device)
        targets = y
        if cfg.mixup and self.module.training:  # not while validating
            # a pure function of (seed, step), like the batch order: a resumed run mixes the same pairs
            rng = np.random.default_rng([cfg.seed, step, 5])
            waves, targets, _, _ = mix(waves, y, len(self.classes), cfg.mixup_alpha, rng)
        tokens = None
        if cfg.lam > 0:
            # Identical captions embed identically: encode each distinct one once, then expand to rows.
            unique, where = np.unique(rows.groups[idx], return_inverse=True)
            first = [int(idx[np.flatnonzero(where == u)[0]]) for u in range(len(unique))]
            tokens = {k: v.to(device) for k, v in self.student.tokenize([rows.captions[i] for i in first]).items()}
        sel = torch.from_numpy(idx)
        with rt.autocast():
            audio, logits, text, scale = model(waves, self.city_t[sel].to(device), self.time_t[sel].to(device), tokens)
        logits = logits.float()
        if text is not None:
            text = text[torch.from_numpy(where).to(device)]
            groups = torch.from_numpy(rows.groups[idx]).to(device)
            contrastive = multi_positive_loss(audio.float(), text.float(), groups, scale.float())
        else:
            contrastive = torch.zeros((), device=device)
        loss = hybrid_loss(logits, targets, contrastive, cfg.lam)
        c = float(contrastive.detach())
        parts = {"ce": float(loss.detach()) - cfg.lam * c, "contrastive": c,
                 "train_accuracy": float((logits.argmax(1) == y).float().mean())}
        return loss, parts, "hybrid"

    def evaluator(self, rt):
        """Classifier accuracy on the --eval-where clips; zero-shot of the towers with --eval-label-set
        (nested under "zero_shot" when both are asked for)."""
        cfg = self.cfg
        if rt.rank != 0 or not (cfg.eval_where or cfg.eval_label_set):
            return None
        zero_shot = (zero_shot_hook(cfg.store, self.student, cfg.eval_label_set, cfg.eval_where, cfg.eval_template)
                     if cfg.eval_label_set else None)
        if not cfg.eval_where:
            return zero_shot
        accuracy = classifier_hook(cfg.store, self.module, cfg.eval_where)

        def run(step: int) -> dict:
            res = accuracy(step)
            if zero_shot:
                res["zero_shot"] = zero_shot(step)
            return res

        return run

    def meta(self) -> dict:
        cfg = self.cfg
        return {"classifier": {"classes": self.classes, "cities": self.module.cfg.cities,
                               "fuse_metadata": cfg.fuse_metadata, "lambda": cfg.lam,
                               "context_template": cfg.context_template}}

    def details(self) -> dict:
        return {"classes": self.classes, "cities": self.module.cfg.cities, "rows": self.rows.table.num_rows}
