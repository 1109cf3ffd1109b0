"""`trainer fit`: the one training loop, for every objective (contrastive or hybrid).

AdamW, linear warm-up + cosine decay, bf16 autocast on CUDA, gradient clipping, checkpoints (every N
steps, at each epoch's end, every M minutes, on SIGINT / SIGTERM and at the end), exact resume (logged
losses included), periodic evaluation, metrics as JSONL, DDP under torchrun. The
step is the unit of everything: batch order, replay choice, crops, mixup, LR and checkpoints are
functions of it, so a resumed run replays the uninterrupted one. What a step computes is the
objective's business (trainer.train.objective); everything around it happens here, once.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from schemas.errors import Interrupted, TrainingError
from trainer.data.batches import make_loader
from trainer.data.rows import ClipRows
from trainer.train.checkpoint import load_train_state, read_checkpoint, restore_rng, save_checkpoint
from trainer.train.config import FitConfig
from trainer.train.contrastive import ContrastiveObjective
from trainer.train.hybrid import HybridObjective
from trainer.train.interrupt import CheckpointClock, StopOnSignal, resume_command
from trainer.train.metrics import MetricsLog, Window
from trainer.train.objective import Objective, all_min
from trainer.train.optim import build_optimizer
from trainer.train.resume import check_resume
from trainer.train.runtime import Runtime, setup_runtime
from trainer.train.validation import EarlyStopping, best_state, drop_best, load_best, save_best, setup_validation

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
    early_stopped: bool = False  # --patience ran out (stopped_early: --stop-after, a simulated kill)
    validation: dict | None = None  # curve, best step and loss, stop (trainer.train.validation)


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
        held = read_checkpoint(out)
        raise TrainingError(f"{out} already holds a checkpoint (step {held.get('step')} of {held.get('total_steps')}); "
                            f"continue it with `{resume_command(cfg.store, cfg.out, rt.world)}` or choose another --out")
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:
        return _fit_in(cfg, obj, rt, on_step, out)
    except BaseException:
        # A run refused before it wrote anything (a bad set, a wrong --init) leaves no empty --out behind.
        if created and out.is_dir() and not any(out.iterdir()):
            out.rmdir()
        raise


def _fit_in(cfg: FitConfig, obj: Objective, rt: Runtime, on_step, out: Path) -> FitResult:
    obj.open()
    state = load_train_state(out) if cfg.resume else None
    if state:
        check_resume(state["meta"], cfg, obj.sources, rt.world, obj.trajectory)
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed % 2**32)
    obj.build(out if state else None)
    obj.module.to(rt.device).train()
    plan = obj.plan(rt.world)
    train_rows, validator = setup_validation(cfg, obj, rt)
    if train_rows is not None:
        plan = replace(plan, n_main=len(train_rows), rows=train_rows)
    total = cfg.steps or plan.steps_per_epoch * cfg.epochs
    recorded = (state["meta"].get("metrics") or {}).get("validation") if state else None
    stopper = EarlyStopping.from_state(recorded, cfg.patience)
    if stopper.stop:
        raise TrainingError(f"{out}: the run stopped early at step {stopper.stopped_at} (patience {cfg.patience}); "
                            "nothing to resume")
    optimizer, scheduler = build_optimizer(obj.module, cfg.lr, cfg.weight_decay, cfg.warmup_steps, total)
    start, skipped, history = 0, [], {}
    if state:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start = int(state["meta"]["step"])
        skipped = list(state["meta"].get("metrics", {}).get("skipped_clip_ids", []))
        history = state["plain"].get("loss_history", {})
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
    if validator:
        meta["validation_data"] = validator.meta
    run = _Run(cfg, rt, obj, model, optimizer, scheduler, meta, skipped,
               MetricsLog(out / "metrics.jsonl", rt.rank == 0, start if state else None), obj.evaluator(rt),
               validator=validator, stopper=stopper, val_every=cfg.val_every or plan.steps_per_epoch,
               best=load_best(out) if state and validator else None, losses=list(history.get("losses", [])))
    return run.run(loader, start, total, plan.steps_per_epoch, on_step, history.get("window"))


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
    validator: object = None  # trainer.train.validation.Validator
    stopper: EarlyStopping | None = None
    val_every: int = 0
    best: dict | None = None  # the module's state at the best validation (CPU tensors)

    def run(self, loader, start: int, total: int, steps_per_epoch: int, on_step, window: dict | None = None) -> FitResult:
        cfg, rt = self.cfg, self.rt
        window, step, loss, tick = Window.restore(window), start, None, time.perf_counter()
        clock = CheckpointClock(cfg.checkpoint_minutes, steps_per_epoch)
        with StopOnSignal() as stop:
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
                if self.validator and (step % self.val_every == 0 or step == total) and self._validate(step):
                    break  # patience ran out: the final save below keeps the best validation's weights
                # every N steps (with the evaluation, if any); epoch ends and every M minutes (without)
                every = bool(cfg.checkpoint_every and step % cfg.checkpoint_every == 0)
                if step < total and (every or clock.due(step, rt)):
                    self.save(step, epoch, window, evaluate=every)
                    clock.saved()
                if step < total and stop.requested(rt):
                    self.save(step, epoch, window, evaluate=False)
                    raise Interrupted(f"{stop.name} at step {step}/{total}; checkpoint saved in {cfg.out}; "
                                      f"resume with: {resume_command(cfg.store, cfg.out, rt.world)}")
                if cfg.stop_after is not None and step >= cfg.stop_after and step < total:
                    return self._result(step, total, loss, stopped=True)
        if step > start:
            self.save(step, max(0, (step - 1) // steps_per_epoch), window, final=True)
        return self._result(step, total, loss, stopped=False)

    def _validate(self, step: int) -> bool:
        """One validation; keeps the weights when it is the best so far. True: stop (patience ran out)."""
        value = self.validator.loss()
        if not math.isfinite(value):
            raise TrainingError(f"validation loss is {value} at step {step}; stopped. The last good checkpoint is "
                                f"kept in {self.cfg.out}")
        if self.stopper.update(step, value):
            self.best = best_state(self.obj.module)
        self.metrics.write({"step": step, "val_loss": value, "best_val_loss": self.stopper.best_loss,
                            "best_step": self.stopper.best_step})
        return self.stopper.stop

    def _validation_record(self, final: bool) -> dict | None:
        if not self.validator:
            return None
        kept = self.stopper.best_step if final and self.best is not None else None
        return {**self.stopper.state(), "patience": self.cfg.patience, "every": self.val_every,
                "data": self.validator.meta, "kept_step": kept}

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

    def save(self, step: int, epoch: int, window: Window | None = None, evaluate: bool = True,
             final: bool = False) -> None:
        """Rank 0 writes the checkpoint; every weight must be finite or the last good one stays. With
        validation the final save holds the best validation's weights; earlier saves hold the current
        ones, with the best kept beside them for a resume. The losses of the last 100 steps and of the
        unlogged window go into the train state, so a resumed run logs exactly what the uninterrupted
        one does; only `--checkpoint-every` saves and the final one evaluate (epoch-end, timed and
        signal saves do not, so they change no log)."""
        skipped = self._all_skipped()
        if final and self.best is not None:
            self.obj.module.load_state_dict(self.best)
        elif self.best is not None and self.rt.rank == 0:
            save_best(self.cfg.out, self.best)
        if not all(bool(torch.isfinite(p).all()) for p in self.obj.module.parameters()):
            raise TrainingError(f"weights became non-finite by step {step}; stopped, the last good checkpoint "
                                f"is kept in {self.cfg.out}; lower --lr")
        if self.rt.rank == 0:
            evaluation = self.evaluate(step) if self.evaluate and evaluate else None
            if evaluation is not None:
                self.metrics.write({"step": step, "eval": evaluation})
            losses = self.losses
            metrics = {"last_loss": losses[-1] if losses else None,
                       "mean_loss_last_100": float(np.mean(losses[-100:])) if losses else None,
                       "skipped_clips": len(skipped), "skipped_clip_ids": skipped[:1000], "eval": evaluation,
                       "validation": self._validation_record(final)}
            save_checkpoint(self.cfg.out, self.obj.module, {**self.meta, "epoch": epoch, "metrics": metrics,
                            "saved_at": datetime.now(timezone.utc).isoformat()}, self.optimizer, self.scheduler, step,
                            # the batch order is a pure function of (seed, step): this is its whole state
                            extra_state={"data_order": {"seed": self.cfg.seed, "next_step": step},
                                         "loss_history": {"losses": losses[-100:],
                                                          "window": window.state() if window else None}})
            if final:
                drop_best(self.cfg.out)
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
                         early_stopped=bool(self.stopper and self.stopper.stop),
                         validation=self._validation_record(not stopped),
                         metrics={"last_loss": self.losses[-1] if self.losses else None,
                                  "skipped_clip_ids": skipped[:1000]})
