"""`trainer fit --loss hybrid`: a scene classifier trained with L = CE(classifier(A), y) + λ·L_con
(DESIGN 6.8), the text side of L_con being each clip's context caption (label, city, time).

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

import contextlib
import json
import math
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow as pa
import torch
import torch.nn.functional as F
from torch import nn

from schemas.errors import ParameterError, TrainingError
from trainer.data.context import DEFAULT_CONTEXT_TEMPLATE, check_template, city_vocabulary, context_caption
from trainer.students.classifier import ClassifierConfig, SceneClassifier

MAX_LOGIT_SCALE = math.log(100.0)


@dataclass
class HybridConfig:
    store: str
    set_ref: str
    out: str
    classes: str
    lam: float = 0.1
    fuse_metadata: bool = False
    context_template: str = DEFAULT_CONTEXT_TEMPLATE
    mixup: bool = False
    mixup_alpha: float = 1.0
    spec_augment: bool = False
    head_hidden: int = 256
    balance_classes: bool = False
    init: str | None = None
    student: str | None = None
    student_config: dict = field(default_factory=dict)
    epochs: int = 1
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_steps: int = 0
    grad_clip: float = 1.0
    device: str = "auto"
    seed: int = 0
    log_every: int = 10
    num_workers: int = 0
    cache_mb: int = 0

    def validate(self) -> None:
        if self.lam < 0:
            raise ParameterError(f"--lambda must be >= 0, got {self.lam}")
        if self.mixup and not self.mixup_alpha > 0:
            raise ParameterError(f"--mixup-alpha must be positive, got {self.mixup_alpha}")
        for name in ("epochs", "batch_size", "log_every", "head_hidden"):
            if getattr(self, name) < 1:
                raise ParameterError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ParameterError(f"--lr must be positive, got {self.lr}")
        check_template(self.context_template)


def read_classes(store: str, spec: str) -> list[str]:
    """A labels file (one per line, '#' comments) or a label set's prompt labels."""
    path = Path(spec)
    if path.is_file():
        labels = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines()]
        labels = list(dict.fromkeys(lab for lab in labels if lab and not lab.startswith("#")))
        if len(labels) < 2:
            raise ParameterError(f"--classes {spec}: the file lists {len(labels)} label(s); need at least 2")
        return labels
    from trainer.eval.zero_shot import prompt_labels

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


def _mix(waves, y, n_classes: int, alpha: float, rng: np.random.Generator):
    """Mixup of a batch: (mixed waves, soft targets, λ_m, permutation)."""
    lam = float(rng.beta(alpha, alpha))
    lam = max(lam, 1.0 - lam)
    perm = torch.from_numpy(rng.permutation(waves.shape[0]))
    onehot = F.one_hot(y, n_classes).float()
    return lam * waves + (1 - lam) * waves[perm], lam * onehot + (1 - lam) * onehot[perm], lam, perm


def hybrid_step_loss(step_model: nn.Module, cfg: HybridConfig, rows: SceneRows, batch: dict, n: int,
                     n_classes: int, city_t, time_t, device, step: int, tokenize) -> tuple[torch.Tensor, dict]:
    """The hybrid loss of one batch and its parts (ce, contrastive, batch accuracy)."""
    from trainer.train.losses import hybrid_loss, multi_positive_loss

    idx = np.asarray(batch["rows"][:n], np.int64)
    waves = batch["wave"][:n].to(device)
    y = torch.from_numpy(rows.y[idx]).to(device)
    targets = y
    if cfg.mixup:
        waves, targets, _, _ = _mix(waves, y, n_classes, cfg.mixup_alpha, np.random.default_rng([cfg.seed, step, 5]))
    tokens = None
    if cfg.lam > 0:
        # Identical captions embed identically: encode each distinct one once, then expand to rows.
        unique, where = np.unique(rows.groups[idx], return_inverse=True)
        first = [int(idx[np.flatnonzero(where == u)[0]]) for u in range(len(unique))]
        tokens = {k: v.to(device) for k, v in tokenize([rows.captions[i] for i in first]).items()}
    sel = torch.from_numpy(idx)
    audio, logits, text, scale = step_model(waves, city_t[sel].to(device), time_t[sel].to(device), tokens)
    logits = logits.float()
    if text is not None:
        text = text[torch.from_numpy(where).to(device)]
        groups = torch.from_numpy(rows.groups[idx]).to(device)
        contrastive = multi_positive_loss(audio.float(), text.float(), groups, scale.float())
    else:
        contrastive = torch.zeros((), device=device)
    loss = hybrid_loss(logits, targets, contrastive, cfg.lam)
    acc = float((logits.argmax(1) == y).float().mean())
    contrastive_value = float(contrastive.detach())
    return loss, {"ce": float(loss.detach()) - cfg.lam * contrastive_value, "contrastive": contrastive_value,
                  "train_accuracy": acc}


def _student(cfg: HybridConfig):
    from trainer.train.runtime import build_or_load_student

    student, kind = build_or_load_student(cfg, None)
    if cfg.spec_augment:
        frontend = getattr(student, "frontend", None)
        if frontend is None or not hasattr(frontend, "spec_augment"):
            raise ParameterError(f"--spec-augment needs the compact student (log-mel inside the model); got {kind}")
        frontend.spec_augment = True
    return student, kind


def fit_hybrid(cfg: HybridConfig, on_step: Callable[[dict], None] | None = None) -> dict:
    """Train a classifier checkpoint into cfg.out; returns a summary (steps, last loss, classes)."""
    from trainer.train.runtime import setup_runtime

    cfg.validate()
    rt = setup_runtime(cfg.device)
    try:
        return _fit(cfg, rt, on_step)
    finally:
        rt.close()


def _fit(cfg: HybridConfig, rt, on_step) -> dict:
    from trainer.data.batches import BatchPlan
    from trainer.data.rows import open_set
    from trainer.train.checkpoint import read_checkpoint, save_checkpoint
    from trainer.train.loop import WarmupCosine, _param_groups

    out = Path(cfg.out)
    if (out / "checkpoint.json").exists():
        raise TrainingError(f"{out} already holds a checkpoint (step {read_checkpoint(out).get('step')}); "
                            "choose another --out (hybrid runs do not resume)")
    classes = read_classes(cfg.store, cfg.classes)
    main = open_set(cfg.store, cfg.set_ref)
    rows = scene_rows(main.table, classes, cfg.context_template, main.resolved.ref)
    if cfg.balance_classes:
        rows = balance(rows)
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed % 2**32)
    student, kind = _student(cfg)
    head_cfg = ClassifierConfig(classes=classes, cities=city_vocabulary(rows.cities), fuse_metadata=cfg.fuse_metadata,
                                hidden=cfg.head_hidden, context_template=cfg.context_template, lam=cfg.lam)
    model = SceneClassifier(student, head_cfg).to(rt.device).train()
    plan = BatchPlan(rows.table.num_rows, 0, cfg.batch_size, rt.world, 0.0, cfg.seed)
    total = plan.steps_per_epoch * cfg.epochs
    optimizer = torch.optim.AdamW(_param_groups(model, cfg.weight_decay), lr=cfg.lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, WarmupCosine(cfg.warmup_steps, total))
    out.mkdir(parents=True, exist_ok=True)
    step, last, skipped = _train(cfg, rt, model, rows, plan, optimizer, scheduler, on_step)
    hp = {k: v for k, v in asdict(cfg).items() if k not in ("store", "out")}
    summary = {"out": str(out), "step": step, "total_steps": total, "final_loss": last, "classes": classes,
               "cities": head_cfg.cities, "rows": rows.table.num_rows, "skipped_clips": len(skipped)}
    meta = {"trained_on": main.resolved.ref, "set": main.lineage(), "replay": None, "hparams": hp,
            "store": cfg.store, "student": {"kind": kind, "init": cfg.init}, "world_size": rt.world,
            "classifier": {"classes": classes, "cities": head_cfg.cities, "fuse_metadata": cfg.fuse_metadata,
                           "lambda": cfg.lam, "context_template": cfg.context_template},
            "metrics": {"last_loss": last, "skipped_clip_ids": sorted(skipped)[:1000]},
            "saved_at": datetime.now(timezone.utc).isoformat()}
    if rt.rank == 0:
        save_checkpoint(out, model, meta, optimizer, scheduler, step)
    return summary


def _min_over_ranks(n: int, rt) -> int:
    if rt.world == 1:
        return n
    t = torch.tensor([n], device=rt.comm_device)
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MIN)
    return int(t.item())


def _train(cfg: HybridConfig, rt, model: SceneClassifier, rows: SceneRows, plan, optimizer, scheduler, on_step):
    """The step loop; returns (steps run, last loss, ids of clips that failed to decode)."""
    from trainer.data.batches import make_loader
    from trainer.data.rows import ClipRows

    student = model.student
    city_t, time_t = model.metadata_tensors(rows.cities, rows.times)
    total = plan.steps_per_epoch * cfg.epochs
    step_model = _Step(model)
    if rt.world > 1:
        step_model = nn.parallel.DistributedDataParallel(
            step_model, device_ids=[rt.device.index] if rt.device.type == "cuda" else None, find_unused_parameters=True)
    data = ClipRows([rows.table], student.sample_rate, student.window_samples, train=True, seed=cfg.seed,
                    cache_bytes=cfg.cache_mb << 20)
    loader = make_loader(data, plan, 0, total, rt.rank, cfg.num_workers, cfg.seed)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if rt.device.type == "cuda" else contextlib.nullcontext()
    metrics = Path(cfg.out) / "metrics.jsonl"
    metrics.unlink(missing_ok=True)
    step, window, skipped, last, tick = 0, [], set(), None, time.perf_counter()
    for batch in loader:
        skipped.update(e["audio_id"] for e in batch["errors"])
        n = _min_over_ranks(batch["n"], rt)
        step += 1
        if n < 2:  # nothing (or a single clip: no contrastive batch) survived decoding
            scheduler.step()
            continue
        with autocast:
            loss, parts = hybrid_step_loss(step_model, cfg, rows, batch, n, len(model.classes), city_t, time_t,
                                           rt.device, step, student.tokenize)
        last = float(loss.detach())
        if not math.isfinite(last):
            raise TrainingError(f"hybrid loss is {last} at step {step}; stopped, nothing saved; lower --lr")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], cfg.grad_clip)
        optimizer.step()
        scheduler.step()
        with torch.no_grad():
            student.logit_scale.clamp_(0.0, MAX_LOGIT_SCALE)
        window.append({"loss": last, **parts})
        if step % cfg.log_every == 0 or step == total:
            row = {"step": step, "epoch": (step - 1) // plan.steps_per_epoch, "lr": scheduler.get_last_lr()[0],
                   "step_time_s": (time.perf_counter() - tick) / len(window),
                   **{k: float(np.mean([w[k] for w in window])) for k in window[0]}}
            if rt.rank == 0:
                with open(metrics, "a", encoding="utf-8") as fh:
                    fh.write(json.dumps(row) + "\n")
                if on_step:
                    on_step(row)
            window, tick = [], time.perf_counter()
    if step == 0:
        raise TrainingError("no training step ran")
    return step, last, skipped
