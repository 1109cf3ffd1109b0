"""What every matcher checks before it does any work: the threshold, top-k and its side, and that
the two arrays of vectors could come from one model (2-d, same dimension).

Matchers see bare arrays; which model and table the vectors came from is checked where they are
read (`curator.store.vectors.check_same_model`)."""

from __future__ import annotations

import os

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


RAM_FRACTION = 0.5  # default --max-memory: this share of the machine's RAM for the pool's vectors
_UNITS = {"": 1, "B": 1, "KB": 1e3, "MB": 1e6, "GB": 1e9, "TB": 1e12, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30,
          "T": 1 << 40, "KIB": 1 << 10, "MIB": 1 << 20, "GIB": 1 << 30, "TIB": 1 << 40}


def default_max_memory() -> int:
    """RAM_FRACTION of the machine's physical memory, in bytes."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        total = 8 << 30
    return int(total * RAM_FRACTION)


def parse_memory(text: str | int | None) -> int:
    """`2GB`, `512MB`, `1.5GiB`, `800K` or a byte count -> bytes; None or `auto` -> the default."""
    if text is None or (isinstance(text, str) and text.strip().lower() in ("", "auto")):
        return default_max_memory()
    if isinstance(text, int):
        value = text
    else:
        s = text.strip().upper().replace(" ", "")
        num = s.rstrip("KMGTIB")
        unit = s[len(num):]
        try:
            value = int(float(num) * _UNITS[unit])
        except (ValueError, KeyError):
            raise ParameterError(f"--max-memory {text!r}: expected a size such as 2GB, 512MB or 1.5GiB") from None
    if value <= 0:
        raise ParameterError(f"--max-memory {text!r}: must be positive")
    return value
