"""The batch plan: which rows every training step uses, on every rank, as a pure function of
(seed, epoch, step). An interrupted run that resumes at step k therefore sees exactly the batches
the uninterrupted run saw, whichever worker decoded them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from schemas.errors import ParameterError
from trainer.data.rows import MAIN, REPLAY, ClipRows, collate


@dataclass(frozen=True)
class BatchPlan:
    """Which rows every step of an epoch uses, for all ranks.

    Global batches hold `batch_size * world` rows; rank r takes the r-th slice. A fraction
    `replay_ratio` of the epoch's batch positions (chosen by a seeded RNG) is replaced whole by
    batches of the replay set, as in the paper; the main rows of a replaced batch sit that epoch out.
    """

    n_main: int
    n_replay: int
    batch_size: int
    world: int = 1
    replay_ratio: float = 0.0
    seed: int = 0
    # Row numbers of the main table that train (a validation slice held out): main position i of the
    # plan is table row `rows[i]`; None = every row, n_main of them.
    rows: np.ndarray | None = field(default=None, compare=False, repr=False)

    def __post_init__(self):
        if self.rows is not None and len(self.rows) != self.n_main:
            raise ParameterError(f"batch plan: {len(self.rows)} training rows given for n_main {self.n_main}")
        if self.batch_size < 1:
            raise ParameterError(f"--batch-size must be at least 1, got {self.batch_size}")
        if not 0.0 <= self.replay_ratio < 1.0:
            raise ParameterError(f"--replay-ratio must be in [0, 1), got {self.replay_ratio}")
        if self.replay_ratio > 0 and self.n_replay == 0:
            raise ParameterError("--replay-ratio > 0 needs a --replay set")
        g = self.global_batch
        if self.n_main < g:
            raise ParameterError(
                f"the set has {self.n_main} rows, fewer than one global batch ({self.batch_size} x {self.world} ranks)")
        if self.replay_ratio > 0 and self.n_replay < g:
            raise ParameterError(f"the replay set has {self.n_replay} rows, fewer than one global batch ({g})")

    @property
    def global_batch(self) -> int:
        return self.batch_size * self.world

    @property
    def steps_per_epoch(self) -> int:
        return self.n_main // self.global_batch

    def epoch(self, epoch: int) -> list[tuple[int, np.ndarray]]:
        """[(part, global row indices)] for every step of `epoch`."""
        g, n = self.global_batch, self.steps_per_epoch
        rng = np.random.default_rng([self.seed, epoch, 0])
        order = rng.permutation(self.n_main)[: n * g].reshape(n, g)
        if self.rows is not None:
            order = np.asarray(self.rows, np.int64)[order]
        batches = [(MAIN, order[i]) for i in range(n)]
        k = int(round(self.replay_ratio * n))
        if k:
            positions = np.sort(rng.choice(n, size=k, replace=False))
            rrng = np.random.default_rng([self.seed, epoch, 1])
            reps = -(-k * g // self.n_replay)
            stream = np.concatenate([rrng.permutation(self.n_replay) for _ in range(reps)])
            # Whole permutations back to back, sliced per batch: no row repeats inside one batch
            # unless the replay set is smaller than a batch, which __post_init__ refuses.
            for j, pos in enumerate(positions):
                batches[int(pos)] = (REPLAY, stream[j * g:(j + 1) * g])
        return batches

    def rank_keys(self, step: int, rank: int) -> list[tuple[int, int, int]]:
        epoch, pos = divmod(step, self.steps_per_epoch)
        part, rows = self.epoch(epoch)[pos]
        mine = rows[rank * self.batch_size:(rank + 1) * self.batch_size]
        return [(part, int(r), epoch) for r in mine]


class PlanSampler(Sampler):
    """Yields one rank's batches of (part, row, epoch) keys from `start` to `stop` (global steps)."""

    def __init__(self, plan: BatchPlan, start: int, stop: int, rank: int = 0):
        self.plan, self.start, self.stop, self.rank = plan, start, stop, rank

    def __len__(self) -> int:
        return max(0, self.stop - self.start)

    def __iter__(self):
        cached_epoch, batches = None, None
        for step in range(self.start, self.stop):
            epoch, pos = divmod(step, self.plan.steps_per_epoch)
            if epoch != cached_epoch:
                cached_epoch, batches = epoch, self.plan.epoch(epoch)
            part, rows = batches[pos]
            b = self.plan.batch_size
            yield [(part, int(r), epoch) for r in rows[self.rank * b:(self.rank + 1) * b]]


def make_loader(rows: ClipRows, plan: BatchPlan, start: int, stop: int, rank: int = 0,
                num_workers: int = 0, seed: int = 0) -> DataLoader:
    """A DataLoader over steps [start, stop). It owns its generator so that creating it does not
    draw from the global torch RNG (which would make a resumed run diverge)."""
    generator = torch.Generator().manual_seed(int(seed) + 7919 * rank)
    return DataLoader(rows, batch_sampler=PlanSampler(plan, start, stop, rank), collate_fn=collate,
                      num_workers=num_workers, generator=generator, persistent_workers=False,
                      pin_memory=torch.cuda.is_available())
