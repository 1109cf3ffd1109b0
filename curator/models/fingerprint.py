"""Re-checking a registered model's files before its vectors are trusted (the fingerprint itself
is `schemas.fingerprint.folder_sha256`, shared with the trainer)."""

from __future__ import annotations

from pathlib import Path

from schemas.errors import ModelError
from schemas.fingerprint import folder_sha256


def verify_files(record) -> None:
    """Refuse a model whose folder changed since it was registered (its vectors would not match)."""
    if not Path(record.path).is_dir():
        raise ModelError(f"model {record.model_id!r}: folder {record.path} is gone")
    sha = folder_sha256(record.path)
    if sha != record.sha256:
        raise ModelError(f"model {record.model_id!r}: files in {record.path} changed since registration "
                         f"(sha256 {sha[:12]} != {record.sha256[:12]}); register the new files under a new name")
