"""The optimiser every training run uses: AdamW over two parameter groups (no weight decay on
biases, norms and the logit scale) and a linear warm-up + cosine learning-rate schedule."""

from __future__ import annotations

import math

import torch
from torch import nn


class WarmupCosine:
    """LR multiplier: linear warm-up over `warmup` steps, then cosine to 0 at `total`. A plain class,
    not a lambda, so LambdaLR's state_dict (and so an exact resume) can hold it."""

    def __init__(self, warmup: int, total: int):
        self.warmup, self.total = int(warmup), int(total)

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        span = max(1, self.total - self.warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - self.warmup) / span)))


def param_groups(module: nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups of the trainable parameters: decay for weight matrices only."""
    decay, no_decay = [], []
    for name, p in module.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or "logit_scale" in name or "norm" in name.lower() else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(module: nn.Module, lr: float, weight_decay: float, warmup_steps: int, total_steps: int):
    """(AdamW, LambdaLR with WarmupCosine) for `module`."""
    optimizer = torch.optim.AdamW(param_groups(module, weight_decay), lr=lr)
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, WarmupCosine(warmup_steps, total_steps))
