"""A model folder's fingerprint: the sha256 of its files, fixed at registration and re-checked
before the model's vectors are trusted again."""

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


def verify_files(record) -> None:
    """Refuse a model whose folder changed since it was registered (its vectors would not match)."""
    if not Path(record.path).is_dir():
        raise ModelError(f"model {record.model_id!r}: folder {record.path} is gone")
    sha = folder_sha256(record.path)
    if sha != record.sha256:
        raise ModelError(f"model {record.model_id!r}: files in {record.path} changed since registration "
                         f"(sha256 {sha[:12]} != {record.sha256[:12]}); register the new files under a new name")
