"""Heads of the acoustic-scene workflow (DESIGN 6.8-6.9): a classifier and city/time metadata fusion."""

from __future__ import annotations

import math
from datetime import datetime

import numpy as np
import torch
import torch.nn as nn

from schemas.errors import ParameterError

TIME_FEATURES = 6  # sin/cos of hour of day, day of week, day of year


class ClassifierHead(nn.Module):
    """Two linear layers with a GELU between them: (B, dim) -> (B, n_classes) logits."""

    def __init__(self, dim: int, n_classes: int, hidden: int = 256, dropout: float = 0.0):
        super().__init__()
        if n_classes < 2:
            raise ParameterError(f"a classifier needs at least 2 classes, got {n_classes}")
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(hidden, n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class MetadataFusion(nn.Module):
    """[audio vector ‖ city embedding ‖ MLP(time features)] for the classifier that follows.

    City index -1 (unknown city) maps to a learnt "unknown" row, so unlabelled metadata still works.
    `out_dim(audio_dim)` is the width the classifier head must take.
    """

    def __init__(self, n_cities: int, time_features: int = TIME_FEATURES, city_dim: int = 16,
                 time_hidden: int = 32):
        super().__init__()
        if n_cities < 1:
            raise ParameterError(f"metadata fusion needs at least one city, got {n_cities}")
        self.n_cities = n_cities
        self.city = nn.Embedding(n_cities + 1, city_dim)
        self.time = nn.Sequential(nn.Linear(time_features, time_hidden), nn.GELU(),
                                  nn.Linear(time_hidden, time_hidden))
        self.extra_dim = city_dim + time_hidden

    def out_dim(self, audio_dim: int) -> int:
        return audio_dim + self.extra_dim

    def forward(self, audio: torch.Tensor, city: torch.Tensor, time: torch.Tensor) -> torch.Tensor:
        if (city >= self.n_cities).any():
            raise ParameterError(f"city index {int(city.max())} out of range for {self.n_cities} cities")
        city = torch.where(city < 0, torch.full_like(city, self.n_cities), city)
        return torch.cat([audio, self.city(city), self.time(time.to(audio.dtype))], dim=1)


def time_features(recorded_at: list[datetime | None]) -> np.ndarray:
    """(n, 6) float32 cyclic encodings of hour of day, day of week and day of year; zeros when unknown."""
    out = np.zeros((len(recorded_at), TIME_FEATURES), dtype=np.float32)
    for i, when in enumerate(recorded_at):
        if when is None:
            continue
        hour = when.hour + when.minute / 60.0
        phases = (hour / 24.0, when.weekday() / 7.0, (when.timetuple().tm_yday - 1) / 366.0)
        for k, phase in enumerate(phases):
            out[i, 2 * k] = math.sin(2 * math.pi * phase)
            out[i, 2 * k + 1] = math.cos(2 * math.pi * phase)
    return out
