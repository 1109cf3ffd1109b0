"""When `trainer fit` checkpoints besides `--checkpoint-every`, and how it stops on a signal.

- `StopOnSignal`: the first SIGINT (Ctrl-C) or SIGTERM (a scheduler's stop) asks the loop to finish
  the step it is in, save a checkpoint and stop; a second one stops at once. Under DDP every rank
  agrees on the step to stop at (any rank's signal counts), so their collectives line up.
- `CheckpointClock`: a checkpoint at the end of every epoch and every `minutes` of training, so a
  run started with the defaults never loses more than that; rank 0's clock decides for all ranks.
- `resume_command`: the exact command that continues a run, printed when it stops.
"""

from __future__ import annotations

import shlex
import signal
import threading
import time

import torch
import torch.distributed as dist


def _any_rank(flag: bool, rt) -> bool:
    if rt.world == 1:
        return flag
    t = torch.tensor([int(flag)], dtype=torch.int64, device=rt.comm_device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


class StopOnSignal:
    """A context manager: inside it SIGINT / SIGTERM set `signum` instead of raising; `requested(rt)`
    says (identically on every rank) whether to save and stop after this step."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.signum: int | None = None
        self._previous: dict = {}

    def _handle(self, signum, frame) -> None:
        if self.signum is not None:  # a second signal: the user means it, stop now
            raise KeyboardInterrupt(f"signal {signum}")
        self.signum = signum

    def __enter__(self) -> "StopOnSignal":
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}

    def requested(self, rt) -> bool:
        return _any_rank(self.signum is not None, rt)

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum else "a signal"


class CheckpointClock:
    """Checkpoint at the end of each epoch and every `minutes` (0: only at epoch ends)."""

    def __init__(self, minutes: float, steps_per_epoch: int):
        self.seconds = max(0.0, float(minutes)) * 60.0
        self.steps_per_epoch = steps_per_epoch
        self.last = time.monotonic()

    def due(self, step: int, rt) -> bool:
        """Whether to checkpoint after `step` (rank 0's clock decides for every rank)."""
        if step % self.steps_per_epoch == 0:
            return True
        late = bool(self.seconds) and time.monotonic() - self.last >= self.seconds
        return _any_rank(late and rt.rank == 0, rt)

    def saved(self) -> None:
        self.last = time.monotonic()


def resume_command(store: str, out: str, world: int = 1) -> str:
    """The command that continues the run in `out` (options come back from its checkpoint)."""
    launcher = f"torchrun --nproc-per-node {world} -m trainer" if world > 1 else "trainer"
    return f"{launcher} --store {shlex.quote(str(store))} fit --resume --out {shlex.quote(str(out))}"
