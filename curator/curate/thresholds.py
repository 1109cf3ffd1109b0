"""Per-class confidence thresholds for pseudo-labels (DESIGN 6.11), from one global τ.

A single τ keeps mostly the classes the model already knows; per-class thresholds let the
others in. Both rules take each clip's predicted class and confidence p1 = max_c p(c|x):

- `flexmatch` (Zhang et al., FlexMatch, NeurIPS 2021, class-wise thresholds without warm-up):
  σ_c = number of clips predicted c with p1 ≥ τ; β_c = σ_c / max_c' σ_c';
  τ_c = τ · β_c / (2 − β_c). The best-learnt class keeps τ; a class nobody is confident about
  gets τ_c = 0 (every clip predicted c passes: bound it with --max-per-class). If no clip at all
  reaches τ, every τ_c = τ.
- `quantile` (ours): the global τ's acceptance rate r = (clips with p1 ≥ τ) / (clips scored) is
  applied inside each class: class c keeps its ceil(r · n_c) most confident predictions, n_c the
  clips predicted c; τ_c is the confidence of the last one kept (ties at τ_c are kept too). So
  every class keeps the same share of its own predictions; r = 0 keeps nothing (τ_c = None).
"""

from __future__ import annotations

import math

import numpy as np

from schemas.errors import ParameterError

RULES = ("flexmatch", "quantile")


def flexmatch(labels: np.ndarray, conf: np.ndarray, n_classes: int, tau: float) -> np.ndarray:
    sigma = np.bincount(np.asarray(labels)[np.asarray(conf) >= tau], minlength=n_classes).astype(np.float64)
    if sigma.max() == 0:
        return np.full(n_classes, float(tau))
    beta = sigma / sigma.max()
    return float(tau) * beta / (2.0 - beta)


def quantile(labels: np.ndarray, conf: np.ndarray, n_classes: int, tau: float) -> np.ndarray:
    labels, conf = np.asarray(labels), np.asarray(conf, np.float64)
    rate = float(np.mean(conf >= tau)) if len(conf) else 0.0
    out = np.full(n_classes, np.inf)
    for c in range(n_classes):
        mine = np.sort(conf[labels == c])[::-1]
        k = math.ceil(rate * len(mine) - 1e-12)
        if k >= 1:
            out[c] = mine[k - 1]
    return out


def class_thresholds(rule: str | None, labels: np.ndarray, conf: np.ndarray, n_classes: int,
                     tau: float) -> np.ndarray:
    """τ_c for every class (inf: the class keeps nothing); no rule = the global τ for all."""
    if rule is None:
        return np.full(n_classes, float(tau))
    if rule == "flexmatch":
        return flexmatch(labels, conf, n_classes, tau)
    if rule == "quantile":
        return quantile(labels, conf, n_classes, tau)
    raise ParameterError(f"--per-class-threshold {rule!r}: expected one of {', '.join(RULES)}")


def confident_counts(labels: np.ndarray, conf: np.ndarray, n_classes: int, tau: float) -> np.ndarray:
    """σ_c: clips predicted c with confidence ≥ the global τ."""
    return np.bincount(np.asarray(labels)[np.asarray(conf) >= tau], minlength=n_classes)
