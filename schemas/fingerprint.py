"""A model folder's fingerprint: the sha256 of its files. The registry fixes it when a model is
added (and re-checks it before the model's vectors are trusted again); the trainer compares it
with the teacher a set was built by. Both packages must hash a folder the same way, so it lives here.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from schemas.errors import ModelError

# Files that describe training or documentation, not the weights: a resumed or re-documented
# checkpoint is still the same model.
_NOT_HASHED = {"checkpoint.json", "README.md", "train_state"}


def folder_sha256(folder: str | os.PathLike) -> str:
    """sha256 over (relative path, content) of every model file, in sorted order."""
    root = Path(folder)
    h = hashlib.sha256()
    files = sorted(p for p in root.rglob("*") if p.is_file() and not _skipped(p.relative_to(root)))
    if not files:
        raise ModelError(f"{folder}: folder holds no files")
    for path in files:
        h.update(path.relative_to(root).as_posix().encode("utf-8") + b"\0")
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        h.update(b"\0")
    return h.hexdigest()


def _skipped(rel: Path) -> bool:
    parts = rel.parts
    return any(p.startswith(".") for p in parts) or parts[0] in _NOT_HASHED
