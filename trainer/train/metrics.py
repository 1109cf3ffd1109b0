"""metrics.jsonl: one line per logged step (and one per evaluation), written by rank 0 only."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


class MetricsLog:
    """On resume, lines past the resumed step are dropped, so a resumed run's file has each step once;
    a fresh run starts the file anew."""

    def __init__(self, path: Path, enabled: bool, resume_step: int | None):
        self.path, self.enabled = path, enabled
        if enabled and resume_step is not None and path.exists():
            kept = [ln for ln in _whole_lines(path) if json.loads(ln).get("step", 0) <= resume_step]
            path.write_text("".join(ln + "\n" for ln in kept))
        elif enabled and resume_step is None and path.exists():
            path.unlink()

    def write(self, row: dict) -> None:
        if self.enabled:
            with open(self.path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(row) + "\n")


def _whole_lines(path: Path) -> list[str]:
    """The file's lines less a torn last one: a kill while a line was being written leaves one,
    always past the checkpoint (a step's lines are written before its checkpoint is saved)."""
    lines = [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    if lines:
        try:
            json.loads(lines[-1])
        except json.JSONDecodeError:
            lines.pop()
    return lines


class Window:
    """What happened since the last logged step: losses, objective parts, time, waiting, samples."""

    def __init__(self):
        self.losses: list[float | None] = []
        self.parts: list[dict] = []
        self.time = self.wait = 0.0
        self.samples = 0

    def state(self) -> dict:
        """What a checkpoint keeps of an unlogged window (its timings are not worth replaying)."""
        return {"losses": list(self.losses), "parts": list(self.parts)}

    @classmethod
    def restore(cls, state: dict | None) -> "Window":
        window = cls()
        if state:
            window.losses, window.parts = list(state["losses"]), list(state["parts"])
        return window

    def add(self, loss: float | None, parts: dict, seconds: float, waited: float, samples: int) -> None:
        self.losses.append(loss)
        if parts:
            self.parts.append(parts)
        self.time += seconds
        self.wait += waited
        self.samples += samples

    def row(self) -> dict:
        """Means over the window (step-time and data-wait per step, samples per second)."""
        losses = [v for v in self.losses if v is not None]
        steps = max(1, len(self.losses))
        means = {k: float(np.mean([p[k] for p in self.parts])) for k in (self.parts[0] if self.parts else {})}
        return {"loss": float(np.mean(losses)) if losses else None, **means,
                "step_time_s": self.time / steps, "data_wait_s": self.wait / steps,
                "samples_per_s": self.samples / self.time if self.time > 0 else None}
