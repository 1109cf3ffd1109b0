"""What every matcher checks before it does any work: the threshold, top-k and its side, and that
the two arrays of vectors could come from one model (2-d, same dimension).

Matchers see bare arrays; which model and table the vectors came from is checked where they are
read (`curator.store.vectors.check_same_model`)."""

from __future__ import annotations

import numpy as np

from schemas.errors import MixedModelsError, ParameterError
from schemas.validate import check_threshold

PER = ("text", "audio", "both")


def check_params(threshold: float, top_k: int | None, per: str) -> float:
    t = check_threshold(threshold)
    if top_k is not None and (not isinstance(top_k, (int, np.integer)) or top_k < 1):
        raise ParameterError(f"top_k must be a positive integer, got {top_k!r}")
    if per not in PER:
        raise ParameterError(f"per must be one of {', '.join(PER)}, got {per!r}")
    return t


def check_arrays(text_vecs: np.ndarray, audio_vecs: np.ndarray) -> None:
    for name, v in (("text", text_vecs), ("audio", audio_vecs)):
        if getattr(v, "ndim", 0) != 2:
            raise ParameterError(f"{name} vectors must be a 2-d array (n, dim), got shape {getattr(v, 'shape', None)}")
    if text_vecs.shape[1] != audio_vecs.shape[1]:
        raise MixedModelsError(
            f"refusing to mix vectors: texts are {text_vecs.shape[1]}-d, audio {audio_vecs.shape[1]}-d"
        )
