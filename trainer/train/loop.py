"""`trainer fit`: the one training loop, for every objective (contrastive or hybrid).

AdamW, linear warm-up + cosine decay, bf16 autocast on CUDA, gradient clipping, checkpoints every N
steps and at the end, exact resume, periodic evaluation, metrics as JSONL, DDP under torchrun. The
step is the unit of everything: batch order, replay choice, crops, mixup, LR and checkpoints are
functions of it, so a resumed run replays the uninterrupted one. What a step computes is the
objective's business (trainer.train.objective); everything around it happens here, once.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from schemas.errors import TrainingError
from trainer.data.batches import make_loader
from trainer.data.rows import ClipRows
from trainer.train.checkpoint import load_train_state, read_checkpoint, restore_rng, save_checkpoint
from trainer.train.config import FitConfig
from trainer.train.contrastive import ContrastiveObjective
from trainer.train.hybrid import HybridObjective
from trainer.train.metrics import MetricsLog, Window
from trainer.train.objective import Objective, all_min
from trainer.train.optim import build_optimizer
from trainer.train.resume import check_resume
from trainer.train.runtime import Runtime, setup_runtime

MAX_LOGIT_SCALE = math.log(100.0)  # CLIP's cap on s


@dataclass
class FitResult:
    out: str
    step: int
    total_steps: int
    final_loss: float | None
    skipped_clips: int
    stopped_early: bool
    metrics: dict
    details: dict = field(default_factory=dict)  # the objective's own facts (a classifier's classes...)


def make_objective(cfg: FitConfig) -> Objective:
    return HybridObjective(cfg) if cfg.hybrid else ContrastiveObjective(cfg)


def fit(cfg: FitConfig, on_step: Callable[[dict], None] | None = None, objective: Objective | None = None) -> FitResult:
    """Train (or resume) and return where the run ended. Raises TrainingError on NaN/inf loss, leaving
    the last good checkpoint in `cfg.out` untouched."""
    cfg.validate()
    rt = setup_runtime(cfg.device)
    try:
        return _fit(cfg, objective or make_objective(cfg), rt, on_step)
    finally:
        rt.close()


def _lineage(cfg: FitConfig, obj: Objective) -> dict:
    main, replay = obj.sources["set"], obj.sources.get("replay")
    return {"trained_on": main.resolved.ref, "set": main.lineage(), "replay": replay.lineage() if replay else None,
            "hparams": cfg.hparams(), "store": cfg.store}


def _fit(cfg: FitConfig, obj: Objective, rt: Runtime, on_step) -> FitResult:
    out = Path(cfg.out)
    if not cfg.resume and (out / "checkpoint.json").exists():
        raise TrainingError(f"{out} already holds a checkpoint (step {read_checkpoint(out).get('step')}); "
                            f"pass --resume to continue it or choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    obj.open()
    state = load_train_state(out) if cfg.resume else None
    if state:
        check_resume(state["meta"], cfg, obj.sources, rt.world, obj.trajectory)
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed % 2**32)
    obj.build(out if state else None)
    obj.module.to(rt.device).train()
    plan = obj.plan(rt.world)
    total = plan.steps_per_epoch * cfg.epochs
    optimizer, scheduler = build_optimizer(obj.module, cfg.lr, cfg.weight_decay, cfg.warmup_steps, total)
    start, skipped = 0, []
    if state:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start = int(state["meta"]["step"])
        skipped = list(state["meta"].get("metrics", {}).get("skipped_clip_ids", []))
        restore_rng(state["rng"], state["plain"])
    model = obj.forward_module()
    if rt.world > 1:
        model = nn.parallel.DistributedDataParallel(
            model, device_ids=[rt.device.index] if rt.device.type == "cuda" else None, find_unused_parameters=True)
    student = obj.student
    rows = ClipRows(obj.tables, student.sample_rate, student.window_samples, train=True, seed=cfg.seed,
                    cache_bytes=cfg.cache_mb << 20)
    loader = make_loader(rows, plan, start, total, rt.rank, cfg.num_workers, cfg.seed)
    meta = {**_lineage(cfg, obj), "student": {"kind": obj.student_kind, "init": cfg.init}, "world_size": rt.world,
            "steps_per_epoch": plan.steps_per_epoch, "total_steps": total, **obj.meta()}
    run = _Run(cfg, rt, obj, model, optimizer, scheduler, meta, skipped,
               MetricsLog(out / "metrics.jsonl", rt.rank == 0, start if state else None), obj.evaluator(rt))
    return run.run(loader, start, total, plan.steps_per_epoch, on_step)


@dataclass
class _Run:
    cfg: FitConfig
    rt: Runtime
    obj: Objective
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: object
    meta: dict
    skipped: list
    metrics: MetricsLog
    evaluate: Callable | None
    losses: list = field(default_factory=list)

    def run(self, loader, start: int, total: int, steps_per_epoch: int, on_step) -> FitResult:
        cfg, rt = self.cfg, self.rt
        window, step, loss, tick = Window(), start, None, time.perf_counter()
        for batch in loader:
            got = time.perf_counter()
            self.skipped.extend(e["audio_id"] for e in batch["errors"])
            loss, n, parts, kind = self._step(batch, step)
            step += 1
            epoch = (step - 1) // steps_per_epoch
            done = time.perf_counter()
            window.add(loss, parts, done - tick, got - tick, n * rt.world)
            tick = done
            if loss is not None:
                self.losses.append(loss)
            if step % cfg.log_every == 0 or step == total:
                self._log(window, step, epoch, kind, on_step)
                window = Window()
            if cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and step < total:
                self.save(step, epoch)
            if cfg.stop_after is not None and step >= cfg.stop_after and step < total:
                return self._result(step, total, loss, stopped=True)
        if step > start:
            self.save(step, max(0, (step - 1) // steps_per_epoch))
        return self._result(step, total, loss, stopped=False)

    def _step(self, batch: dict, step: int) -> tuple[float | None, int, dict, str]:
        """One optimiser step on a batch: (loss, rows used, loss parts, loss kind)."""
        cfg, rt, module = self.cfg, self.rt, self.obj.module
        n = all_min(batch["n"], rt)
        if n < self.obj.min_rows:  # too few clips decoded on some rank: nothing to learn from this step
            self.scheduler.step()
            return None, 0, {}, "skipped"
        loss, parts, kind = self.obj.loss(self.model, batch, n, step, rt)
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
            torch.nn.utils.clip_grad_norm_([p for p in module.parameters() if p.requires_grad], cfg.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        with torch.no_grad():
            self.obj.student.logit_scale.clamp_(0.0, MAX_LOGIT_SCALE)
        return value, n, parts, kind

    def _log(self, window: Window, step: int, epoch: int, kind: str, on_step) -> None:
        row = {"step": step, "epoch": epoch, "loss_kind": kind, "lr": self.scheduler.get_last_lr()[0],
               "logit_scale": float(self.obj.student.logit_scale.detach().exp()), **window.row(),
               "skipped_clips": len(set(self.skipped))}
        self.metrics.write(row)
        if on_step and self.rt.rank == 0:
            on_step(row)

    def save(self, step: int, epoch: int) -> None:
        """Rank 0 writes the checkpoint; every weight must be finite or the last good one stays."""
        skipped = self._all_skipped()
        if not all(bool(torch.isfinite(p).all()) for p in self.obj.module.parameters()):
            raise TrainingError(f"weights became non-finite by step {step}; stopped, the last good checkpoint "
                                f"is kept in {self.cfg.out}; lower --lr")
        if self.rt.rank == 0:
            evaluation = self.evaluate(step) if self.evaluate else None
            if evaluation is not None:
                self.metrics.write({"step": step, "eval": evaluation})
            losses = self.losses
            metrics = {"last_loss": losses[-1] if losses else None,
                       "mean_loss_last_100": float(np.mean(losses[-100:])) if losses else None,
                       "skipped_clips": len(skipped), "skipped_clip_ids": skipped[:1000], "eval": evaluation}
            save_checkpoint(self.cfg.out, self.obj.module, {**self.meta, "epoch": epoch, "metrics": metrics,
                            "saved_at": datetime.now(timezone.utc).isoformat()}, self.optimizer, self.scheduler, step,
                            # the batch order is a pure function of (seed, step): this is its whole state
                            extra_state={"data_order": {"seed": self.cfg.seed, "next_step": step}})
        if self.rt.world > 1:
            dist.barrier()

    def _all_skipped(self) -> list:
        mine = sorted(set(self.skipped))
        if self.rt.world == 1:
            return mine
        parts = [None] * self.rt.world
        dist.all_gather_object(parts, mine)
        return sorted(set().union(*parts))

    def _result(self, step: int, total: int, loss: float | None, stopped: bool) -> FitResult:
        skipped = sorted(set(self.skipped))
        return FitResult(out=self.cfg.out, step=step, total_steps=total, final_loss=loss, skipped_clips=len(skipped),
                         stopped_early=stopped, details=self.obj.details(),
                         metrics={"last_loss": self.losses[-1] if self.losses else None,
                                  "skipped_clip_ids": skipped[:1000]})
