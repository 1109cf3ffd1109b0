"""`trainer fit`: train a student on one set version (plus an optional replay set).

AdamW, linear warm-up + cosine decay, bf16 autocast on CUDA, gradient clipping, checkpoints every N
steps and at the end, exact resume, metrics as JSONL, DDP under torchrun. The step is the unit of
everything: batch order, replay choice, LR and checkpoints are functions of it, so a resumed run
replays the uninterrupted one.
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
import torch
import torch.distributed as dist
from torch import nn

from schemas.errors import ParameterError, TrainingError
from schemas.tables import PROMPT_TEMPLATE
from trainer.data.batches import BatchPlan, make_loader
from trainer.data.rows import ClipRows, SetSource, open_sets
from trainer.train.checkpoint import load_train_state, read_checkpoint, restore_rng, save_checkpoint
from trainer.train.losses import DEFAULT_TAU_S, clap_loss, multi_positive_loss, soft_label_loss
from trainer.train.runtime import Runtime, build_or_load_student, eval_hook, setup_runtime

LOSSES = ("clap", "soft", "multi")
MAX_LOGIT_SCALE = math.log(100.0)  # CLIP's cap on s
# Options that shape the trajectory: a resume that changes one would not replay the original run.
TRAJECTORY = ("replay_ratio", "loss", "alpha", "tau_s", "soft_source", "epochs", "batch_size", "lr",
              "weight_decay", "warmup_steps", "grad_clip", "seed", "student", "student_config")


@dataclass
class FitConfig:
    store: str
    set_ref: str
    out: str
    init: str | None = None
    student: str | None = None  # compact | clap-hf; None = inferred from --init
    student_config: dict = field(default_factory=dict)
    replay_ref: str | None = None
    replay_ratio: float = 0.0
    loss: str = "soft"
    alpha: float = 0.3
    tau_s: float = DEFAULT_TAU_S
    soft_source: str = "cross"
    epochs: int = 1
    batch_size: int = 32
    lr: float = 1e-4
    weight_decay: float = 0.01
    warmup_steps: int = 0
    grad_clip: float = 1.0
    device: str = "auto"
    seed: int = 0
    checkpoint_every: int = 0
    log_every: int = 10
    num_workers: int = 0
    cache_mb: int = 0
    resume: bool = False
    eval_label_set: str | None = None
    eval_where: str | None = None
    eval_template: str = PROMPT_TEMPLATE
    stop_after: int | None = None  # end after this step without a final save (a simulated kill)

    def validate(self) -> None:
        if self.loss not in LOSSES:
            raise ParameterError(f"--loss must be one of {', '.join(LOSSES)}, got {self.loss!r}")
        for name in ("epochs", "batch_size", "log_every"):
            if getattr(self, name) < 1:
                raise ParameterError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ParameterError(f"--lr must be positive, got {self.lr}")
        if self.warmup_steps < 0 or self.checkpoint_every < 0 or self.num_workers < 0:
            raise ParameterError("--warmup-steps, --checkpoint-every and --num-workers must be >= 0")
        if self.replay_ratio and not self.replay_ref:
            raise ParameterError("--replay-ratio needs --replay REF")
        if self.eval_where and not self.eval_label_set:
            raise ParameterError("--eval-where needs --eval-label-set (the classes to evaluate)")


@dataclass
class FitResult:
    out: str
    step: int
    total_steps: int
    final_loss: float | None
    skipped_clips: int
    stopped_early: bool
    metrics: dict


class WarmupCosine:
    """LR multiplier: linear warm-up over `warmup` steps, then cosine to 0 at `total` (picklable state)."""

    def __init__(self, warmup: int, total: int):
        self.warmup, self.total = int(warmup), int(total)

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        span = max(1, self.total - self.warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - self.warmup) / span)))


class _Pair(nn.Module):
    """One forward through both towers, so DDP sees a forward call and syncs every used gradient."""

    def __init__(self, student):
        super().__init__()
        self.student = student

    def forward(self, waves, tokens):
        return self.student.encode_audio(waves), self.student.encode_text(tokens), self.student.logit_scale.exp()


def _param_groups(student, weight_decay: float) -> list[dict]:
    decay, no_decay = [], []
    for name, p in student.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or "logit_scale" in name or "norm" in name.lower() else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _label_ids(sources: list[SetSource]) -> dict[str, int]:
    labels = set()
    for s in sources:
        if "label" in s.table.column_names:
            labels.update(v for v in s.table.column("label").to_pylist() if v is not None)
    return {lab: i for i, lab in enumerate(sorted(labels))}


def _all_min(value: int, rt: Runtime) -> int:
    if rt.world == 1:
        return value
    t = torch.tensor([value], dtype=torch.int64, device=rt.comm_device)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return int(t.item())


def _compute_loss(cfg: FitConfig, audio, text, scale, batch: dict, n: int, rt: Runtime, label_ids) -> tuple:
    """The configured loss; a soft-label batch without teacher vectors (e.g. a replay batch) falls
    back to the hard CLAP loss, decided jointly by all ranks so their collectives line up."""
    if cfg.loss == "soft" and _all_min(int("teacher_audio" in batch), rt):
        ta = batch["teacher_audio"][:n].to(rt.device, torch.float32)
        tt = batch["teacher_text"][:n].to(rt.device, torch.float32)
        return soft_label_loss(audio, text, ta, tt, scale, cfg.alpha, cfg.tau_s, cfg.soft_source), "soft"
    if cfg.loss == "multi":
        ids = torch.tensor([label_ids.get(v, -1) if v is not None else -1 for v in batch["label"][:n]],
                           device=rt.device)
        return multi_positive_loss(audio, text, ids, scale), "multi"
    return clap_loss(audio, text, scale), "clap"


class _Metrics:
    """metrics.jsonl on rank 0; on resume, lines past the resumed step are dropped (no duplicates)."""

    def __init__(self, path: Path, enabled: bool, resume_step: int | None):
        self.path, self.enabled = path, enabled
        if enabled and resume_step is not None and path.exists():
            kept = [ln for ln in path.read_text().splitlines() if ln.strip() and json.loads(ln).get("step", 0) <= resume_step]
            path.write_text("".join(ln + "\n" for ln in kept))
        elif enabled and resume_step is None and path.exists():
            path.unlink()

    def write(self, row: dict) -> None:
        if self.enabled:
            with open(self.path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(row) + "\n")


def _lineage(cfg: FitConfig, main: SetSource, replay: SetSource | None) -> dict:
    hp = {k: v for k, v in asdict(cfg).items() if k not in ("store", "out", "resume", "stop_after")}
    return {"trained_on": main.resolved.ref, "set": main.lineage(),
            "replay": replay.lineage() if replay else None, "hparams": hp, "store": cfg.store}


def _check_resume(meta: dict, cfg: FitConfig, main: SetSource, replay: SetSource | None, world: int) -> None:
    for what, src, recorded in (("set", main, meta.get("set")), ("replay set", replay, meta.get("replay"))):
        if (src is None) != (recorded is None):
            raise TrainingError(f"cannot resume: the checkpoint was trained {'with' if recorded else 'without'} a {what}")
        if src is None:
            continue
        if (src.resolved.name, src.resolved.version, src.resolved.content_hash) != (
                recorded["name"], recorded["version"], recorded["content_hash"]):
            raise TrainingError(
                f"cannot resume: the checkpoint was trained on {what} {recorded['name']}@{recorded['version']} "
                f"(hash {recorded['content_hash'][:12]}) but {src.ref!r} now resolves to {src.resolved.ref} "
                f"(hash {src.resolved.content_hash[:12]}); start a new run to train on the new data")
    hp = meta.get("hparams", {})
    changed = [f"{k} {hp.get(k)!r} -> {getattr(cfg, k)!r}" for k in TRAJECTORY if k in hp and hp[k] != getattr(cfg, k)]
    if meta.get("world_size", 1) != world:
        changed.append(f"world size {meta.get('world_size', 1)} -> {world}")
    if changed:
        raise TrainingError("cannot resume with different settings: " + "; ".join(changed))


def fit(cfg: FitConfig, on_step: Callable[[dict], None] | None = None) -> FitResult:
    """Train (or resume) and return where the run ended. Raises TrainingError on NaN/inf loss, leaving
    the last good checkpoint in `cfg.out` untouched."""
    cfg.validate()
    rt = setup_runtime(cfg.device)
    try:
        return _fit(cfg, rt, on_step)
    finally:
        rt.close()


def _fit(cfg: FitConfig, rt: Runtime, on_step) -> FitResult:
    out = Path(cfg.out)
    if not cfg.resume and (out / "checkpoint.json").exists():
        raise TrainingError(f"{out} already holds a checkpoint (step {read_checkpoint(out).get('step')}); "
                            f"pass --resume to continue it or choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    main, replay = open_sets(cfg.store, cfg.set_ref, cfg.replay_ref, cfg.loss)
    state = load_train_state(out) if cfg.resume else None
    if state:
        _check_resume(state["meta"], cfg, main, replay, rt.world)
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed % 2**32)
    student, student_kind = build_or_load_student(cfg, out if state else None)
    student.to(rt.device).train()
    plan = BatchPlan(main.table.num_rows, replay.table.num_rows if replay else 0, cfg.batch_size, rt.world,
                     cfg.replay_ratio if replay else 0.0, cfg.seed)
    total = plan.steps_per_epoch * cfg.epochs
    optimizer = torch.optim.AdamW(_param_groups(student, cfg.weight_decay), lr=cfg.lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, WarmupCosine(cfg.warmup_steps, total))
    start, summary = 0, {"skipped_clips": [], "losses": []}
    if state:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start = int(state["meta"]["step"])
        summary["skipped_clips"] = list(state["meta"].get("metrics", {}).get("skipped_clip_ids", []))
        restore_rng(state["rng"], state["plain"])
    model = _Pair(student)
    if rt.world > 1:
        model = nn.parallel.DistributedDataParallel(
            model, device_ids=[rt.device.index] if rt.device.type == "cuda" else None, find_unused_parameters=True)
    rows = ClipRows([main.table] + ([replay.table] if replay else []), student.sample_rate,
                    student.window_samples, train=True, seed=cfg.seed, cache_bytes=cfg.cache_mb << 20)
    loader = make_loader(rows, plan, start, total, rt.rank, cfg.num_workers, cfg.seed)
    meta = {**_lineage(cfg, main, replay), "student": {"kind": student_kind, "init": cfg.init},
            "world_size": rt.world, "steps_per_epoch": plan.steps_per_epoch, "total_steps": total}
    ctx = _RunContext(cfg, rt, student, model, optimizer, scheduler, meta, summary, _label_ids([main] + ([replay] if replay else [])),
                      _Metrics(out / "metrics.jsonl", rt.rank == 0, start if state else None),
                      eval_hook(cfg, student, rt))
    return ctx.run(loader, start, total, plan, on_step)


@dataclass
class _RunContext:
    cfg: FitConfig
    rt: Runtime
    student: nn.Module
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: object
    meta: dict
    summary: dict
    label_ids: dict
    metrics: _Metrics
    evaluate: Callable | None

    def save(self, step: int, epoch: int) -> None:
        """Rank 0 writes the checkpoint; every weight must be finite or the last good one stays."""
        skipped = self._all_skipped()
        if not all(bool(torch.isfinite(p).all()) for p in self.student.parameters()):
            raise TrainingError(f"weights became non-finite by step {step}; stopped, the last good checkpoint "
                                f"is kept in {self.cfg.out}; lower --lr")
        if self.rt.rank == 0:
            evaluation = self.evaluate(step) if self.evaluate else None
            if evaluation is not None:
                self.metrics.write({"step": step, "eval": evaluation})
            losses = self.summary["losses"]
            metrics = {"last_loss": losses[-1] if losses else None,
                       "mean_loss_last_100": float(np.mean(losses[-100:])) if losses else None,
                       "skipped_clips": len(skipped), "skipped_clip_ids": skipped[:1000], "eval": evaluation}
            save_checkpoint(self.cfg.out, self.student, {**self.meta, "epoch": epoch, "metrics": metrics,
                            "saved_at": datetime.now(timezone.utc).isoformat()}, self.optimizer, self.scheduler, step,
                            # the batch order is a pure function of (seed, step): this is its whole state
                            extra_state={"data_order": {"seed": self.cfg.seed, "next_step": step}})
        if self.rt.world > 1:
            dist.barrier()

    def _all_skipped(self) -> list:
        mine = sorted(set(self.summary["skipped_clips"]))
        if self.rt.world == 1:
            return mine
        parts = [None] * self.rt.world
        dist.all_gather_object(parts, mine)
        return sorted(set().union(*parts))

    def run(self, loader, start: int, total: int, plan: BatchPlan, on_step) -> FitResult:
        cfg, rt = self.cfg, self.rt
        autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if rt.device.type == "cuda"
                    else contextlib.nullcontext())
        window = {"loss": [], "time": 0.0, "wait": 0.0, "samples": 0}
        step, loss_value, tick = start, None, time.perf_counter()
        for batch in loader:
            got = time.perf_counter()
            self.summary["skipped_clips"].extend(e["audio_id"] for e in batch["errors"])
            loss_value, n, kind = self._train_step(batch, autocast, step)
            step += 1
            epoch = (step - 1) // plan.steps_per_epoch
            done = time.perf_counter()
            window["loss"].append(loss_value)
            window["time"] += done - tick
            window["wait"] += got - tick
            window["samples"] += n * rt.world
            tick = done
            if loss_value is not None:
                self.summary["losses"].append(loss_value)
            if step % cfg.log_every == 0 or step == total:
                self._log(window, step, epoch, kind, on_step)
            if cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and step < total:
                self.save(step, epoch)
            if cfg.stop_after is not None and step >= cfg.stop_after and step < total:
                return self._result(step, total, loss_value, stopped=True)
        if step > start:
            self.save(step, max(0, (step - 1) // plan.steps_per_epoch))
        return self._result(step, total, loss_value, stopped=False)

    def _train_step(self, batch: dict, autocast, step: int) -> tuple[float | None, int, str]:
        cfg, rt = self.cfg, self.rt
        n = _all_min(batch["n"], rt)
        if n == 0:  # every clip of this batch failed to decode on some rank: nothing to learn from
            self.scheduler.step()
            return None, 0, "skipped"
        waves = batch["wave"][:n].to(rt.device, non_blocking=True)
        tokens = {k: v[:n].to(rt.device) for k, v in self.student.tokenize(batch["text"][:n]).items()}
        with autocast:
            audio, text, scale = self.model(waves, tokens)
        loss, kind = _compute_loss(cfg, audio.float(), text.float(), scale.float(), batch, n, rt, self.label_ids)
        value = loss.detach()
        if rt.world > 1:
            dist.all_reduce(value)
            value /= rt.world
        value = float(value)
        if not math.isfinite(value):
            raise TrainingError(
                f"loss is {value} at step {step + 1} (lr {self.scheduler.get_last_lr()[0]:.3g}); stopped. "
                f"The last good checkpoint is kept in {cfg.out}; lower --lr or check the set's teacher vectors")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_([p for p in self.student.parameters() if p.requires_grad], cfg.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        with torch.no_grad():
            self.student.logit_scale.clamp_(0.0, MAX_LOGIT_SCALE)
        return value, n, kind

    def _log(self, window: dict, step: int, epoch: int, kind: str, on_step) -> None:
        losses = [v for v in window["loss"] if v is not None]
        row = {"step": step, "epoch": epoch, "loss": float(np.mean(losses)) if losses else None,
               "loss_kind": kind, "lr": self.scheduler.get_last_lr()[0],
               "logit_scale": float(self.student.logit_scale.detach().exp()),
               "step_time_s": window["time"] / max(1, len(window["loss"])),
               "data_wait_s": window["wait"] / max(1, len(window["loss"])),
               "samples_per_s": window["samples"] / window["time"] if window["time"] > 0 else None,
               "skipped_clips": len(set(self.summary["skipped_clips"]))}
        self.metrics.write(row)
        if on_step and self.rt.rank == 0:
            on_step(row)
        window.update({"loss": [], "time": 0.0, "wait": 0.0, "samples": 0})

    def _result(self, step: int, total: int, loss: float | None, stopped: bool) -> FitResult:
        skipped = sorted(set(self.summary["skipped_clips"]))
        losses = self.summary["losses"]
        return FitResult(out=self.cfg.out, step=step, total_steps=total, final_loss=loss,
                         skipped_clips=len(skipped), stopped_early=stopped,
                         metrics={"last_loss": losses[-1] if losses else None, "skipped_clip_ids": skipped[:1000]})
