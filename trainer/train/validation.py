"""Validation loss and early stopping, a feature of the one loop that every objective gets.

- `--val-fraction F` holds out a seeded share of the training set's *clips* (every row of a held-out
  clip, so a clip captioned twice never sits on both sides); `--val-set REF` validates on another
  set version instead (contrastive objectives). The caller's evaluation split is never used: pick
  validation data the evaluation does not see.
- The validation loss is the objective's own loss on fixed batches of centre-cropped clips, with
  the module in eval mode and no gradient: the same number for the same weights on every call.
  The rows are split into ceil(n / batch) near-equal batches (contrastive losses depend on the
  number of negatives, so no batch is left tiny) and averaged weighted by rows.
- `--patience N`: training stops after N validations in a row without a lower validation loss
  (`EarlyStopping`); the weights of the best validation are the ones saved at the end.
- Every validation is a metrics.jsonl line (`step`, `val_loss`); the curve, best step and stop
  are recorded in checkpoint.json's `metrics.validation`, so a resume continues the count.
"""

from __future__ import annotations

import math
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

from schemas.errors import ParameterError, TrainingError
from trainer.data.rows import MAIN, ClipRows, collate, open_set

# A folder of its own: checkpoint.py hashes every *.safetensors beside model.safetensors.
BEST_WEIGHTS = "validation_best"


@dataclass
class EarlyStopping:
    """The patience rule over a validation curve: `update` records one validation and says whether
    it improved on the best so far (strictly lower loss); `stop` is true once `patience`
    validations in a row have not. Without a patience it only tracks the best."""

    patience: int | None = None
    curve: list = field(default_factory=list)  # [{"step": s, "val_loss": v}]
    best_step: int | None = None
    best_loss: float | None = None
    bad: int = 0
    stopped_at: int | None = None

    def update(self, step: int, loss: float) -> bool:
        self.curve.append({"step": int(step), "val_loss": float(loss)})
        if self.best_loss is None or loss < self.best_loss:
            self.best_step, self.best_loss, self.bad = int(step), float(loss), 0
            return True
        self.bad += 1
        if self.patience is not None and self.bad >= self.patience:
            self.stopped_at = int(step)
        return False

    @property
    def stop(self) -> bool:
        return self.stopped_at is not None

    def state(self) -> dict:
        return asdict(self)

    @classmethod
    def from_state(cls, state: dict | None, patience: int | None) -> "EarlyStopping":
        if not state:
            return cls(patience)
        keep = {k: state[k] for k in ("curve", "best_step", "best_loss", "bad", "stopped_at") if k in state}
        return cls(patience, **keep)


def stop_step(losses: list[float], patience: int) -> int | None:
    """The index (0-based) of the validation at which the patience rule stops, or None."""
    stopper = EarlyStopping(patience)
    for i, v in enumerate(losses):
        stopper.update(i, v)
        if stopper.stop:
            return i
    return None


def split_clips(table: pa.Table, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(training rows, validation rows) of a set table: a seeded `fraction` of its distinct clips
    (rows without an audio_id count as their own clip) is held out with all of its rows."""
    n = table.num_rows
    ids = table.column("audio_id").to_pylist() if "audio_id" in table.column_names else [None] * n
    keys = [a if a is not None else f"\0row{i}" for i, a in enumerate(ids)]
    clips = sorted(set(keys))
    n_val = int(round(fraction * len(clips)))
    if n_val < 1 or n_val >= len(clips):
        raise ParameterError(f"--val-fraction {fraction}: holds out {n_val} of the set's {len(clips)} clips; "
                             "need at least one clip on each side")
    rng = np.random.default_rng([int(seed), 7207])
    held = {clips[i] for i in rng.choice(len(clips), size=n_val, replace=False)}
    is_val = np.fromiter((k in held for k in keys), bool, n)
    return np.flatnonzero(~is_val).astype(np.int64), np.flatnonzero(is_val).astype(np.int64)


class Validator:
    """Fixed validation batches (decoded once) and the objective's loss over them."""

    def __init__(self, obj, rt, table: pa.Table, rows: np.ndarray, batch_size: int, meta: dict):
        self.obj, self.rt, self.meta = obj, rt, meta
        student = obj.student
        clips = ClipRows([table], student.sample_rate, student.window_samples, train=False)
        chunks = np.array_split(np.asarray(rows, np.int64), max(1, math.ceil(len(rows) / batch_size)))
        self.batches = [collate([clips[(MAIN, int(r), 0)] for r in chunk]) for chunk in chunks if len(chunk)]
        self.rows = int(sum(b["n"] for b in self.batches))
        if self.rows < obj.min_rows:
            raise TrainingError(f"validation: only {self.rows} decodable row(s); need at least {obj.min_rows}")

    def loss(self) -> float:
        obj = self.obj
        module = obj.module
        was = module.training
        model = obj.forward_module()  # unwrapped: every rank computes the same number, no DDP sync
        module.eval()
        total, count = 0.0, 0
        try:
            with torch.no_grad():
                for batch in self.batches:
                    n = batch["n"]
                    if n < obj.min_rows:
                        continue
                    value, _, _ = obj.loss(model, batch, n, -1, self.rt)
                    total += float(value) * n
                    count += n
        finally:
            module.train(was)
        return total / max(count, 1)


def setup_validation(cfg, obj, rt) -> tuple[np.ndarray | None, Validator | None]:
    """(main-table rows that train, or None for all; the validator, or None) for this run."""
    if not cfg.validates:
        return None, None
    if cfg.val_fraction:
        main = obj.tables[0]
        train, val = split_clips(main, cfg.val_fraction, cfg.seed)
        meta = {"source": "fraction", "fraction": cfg.val_fraction, "rows": int(len(val)),
                "clips": len({main.column("audio_id")[int(i)].as_py() for i in val})
                if "audio_id" in main.column_names else int(len(val))}
        return train, Validator(obj, rt, main, val, cfg.batch_size, meta)
    source = open_set(cfg.store, cfg.val_set)
    train_ids = set(obj.tables[0].column("audio_id").to_pylist()) if "audio_id" in obj.tables[0].column_names else set()
    shared = train_ids & set(source.table.column("audio_id").to_pylist()) - {None}
    if shared:
        raise ParameterError(f"--val-set {cfg.val_set}: {len(shared)} of its clips are in the training set "
                             f"(e.g. {sorted(shared)[0]}); validate on clips the run does not train on")
    meta = {"source": "set", **source.lineage()}
    return None, Validator(obj, rt, source.table, np.arange(source.table.num_rows), cfg.batch_size, meta)


def best_state(module: torch.nn.Module) -> dict:
    return {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}


def save_best(out: str | os.PathLike, state: dict) -> None:
    """The best weights beside the checkpoint (staged, then moved), so a resumed run can still end on them."""
    from safetensors.torch import save_file

    folder = Path(out) / BEST_WEIGHTS
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "model.safetensors"
    tmp = folder / f".{os.getpid()}.tmp"
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp))
    os.replace(tmp, path)


def load_best(out: str | os.PathLike) -> dict | None:
    from safetensors.torch import load_file

    path = Path(out) / BEST_WEIGHTS / "model.safetensors"
    return load_file(str(path)) if path.exists() else None


def drop_best(out: str | os.PathLike) -> None:
    shutil.rmtree(Path(out) / BEST_WEIGHTS, ignore_errors=True)
