"""The seam between the one training loop and what a run learns.

An objective says what the run trains and what one step computes; `trainer.train.loop` does the
rest the same way for every objective: runtime and DDP, AdamW + warm-up/cosine, bf16 autocast,
the NaN stop, gradient clipping, the logit-scale clamp, metrics, periodic evaluation, atomic
checkpoints and exact resume. `ContrastiveObjective` (trainer.train.contrastive) trains a
student's two towers; `HybridObjective` (trainer.train.hybrid) a scene classifier head on one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import pyarrow as pa
import torch
import torch.distributed as dist
from torch import nn

from trainer.data.batches import BatchPlan
from trainer.data.rows import SetSource
from trainer.train.config import FitConfig
from trainer.train.runtime import Runtime


class Objective:
    """Subclasses set, in `open`: `sources` ({"set": main, "replay": SetSource or None}, the lineage
    a resume is checked against) and `tables` (the parts ClipRows reads, main first); and in
    `build`: `module` (what is optimised and saved: it has `.save(folder)`), `student` (its
    towers: logit scale, sample rate, window, tokenizer) and `student_kind`."""

    name = "objective"
    trajectory: tuple[str, ...] = ()  # options beyond TRAJECTORY that a resume may not change
    min_rows = 1  # a step with fewer decodable rows (on any rank) is skipped

    def __init__(self, cfg: FitConfig):
        self.cfg = cfg
        self.sources: dict[str, SetSource | None] = {}
        self.tables: list[pa.Table] = []
        self.module: nn.Module | None = None
        self.student: nn.Module | None = None
        self.student_kind = "unknown"

    def open(self) -> None:
        """Read the training data from the store (before any RNG is drawn)."""
        raise NotImplementedError

    def plan(self, world: int) -> BatchPlan:
        return BatchPlan(self.tables[0].num_rows, 0, self.cfg.batch_size, world, 0.0, self.cfg.seed)

    def build(self, resume_dir: Path | None) -> None:
        """Build (or, resuming, load from `resume_dir`) the trained module; the RNG is seeded."""
        raise NotImplementedError

    def forward_module(self) -> nn.Module:
        """The module whose forward one step calls (DDP wraps it, so it syncs every used gradient)."""
        raise NotImplementedError

    def loss(self, model: nn.Module, batch: dict, n: int, step: int, rt: Runtime) -> tuple[torch.Tensor, dict, str]:
        """(loss, parts to average into the metrics, loss kind) of the first `n` rows of a batch. The
        forward runs under `rt.autocast()`, the loss in float32."""
        raise NotImplementedError

    def evaluator(self, rt: Runtime) -> Callable[[int], dict] | None:
        """A function step -> evaluation summary run at each checkpoint on rank 0, or None."""
        return None

    def meta(self) -> dict:
        """Objective facts recorded in checkpoint.json beside the lineage."""
        return {}

    def details(self) -> dict:
        """Objective facts returned with the FitResult."""
        return {}


def all_min(value: int, rt: Runtime) -> int:
    """The minimum of `value` over ranks, so every rank takes the same branch before a collective."""
    if rt.world == 1:
        return value
    t = torch.tensor([value], dtype=torch.int64, device=rt.comm_device)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return int(t.item())
