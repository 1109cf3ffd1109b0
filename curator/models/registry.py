"""The model registry: which teachers and students exist, where their files are, what they produce.

A model is registered once under a name (`curator models add`); its row in `models` fixes the
folder's sha256, the embedding size and the logit scale, so every vector table, match run and set
can say exactly which model made it. Registering loads the model once: a folder that cannot be
loaded, or that is not the kind it claims, is refused at the door rather than at embed time.

`logit_scale` is always the multiplier s (already exponentiated: 1/0.07 ≈ 14.3 at CLIP's init),
the number zero-shot softmaxes multiply cosine scores by. For CLAP it is the audio-side scale
(`logit_scale_a`), the one `logits_per_audio` uses for classifying clips.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from curator.models.fingerprint import folder_sha256
from curator.store.store import Store, now
from curator.store.vectors import embedding_table
from schemas.errors import ModelError
from schemas.ids import model_slug
from schemas.tables import MODELS

KINDS = ("clap-hf", "checkpoint", "sentence")


@dataclass(frozen=True)
class ModelRecord:
    model_id: str
    kind: str
    path: str
    sha256: str
    dim: int
    logit_scale: float | None
    sample_rate: int | None
    modalities: tuple[str, ...]
    trained_on: str | None

    def table(self, modality: str) -> str:
        return embedding_table(self.model_id, modality)


def _check_name(name: str) -> str:
    try:
        model_slug(name)
    except ValueError as exc:
        raise ModelError(str(exc)) from None
    if name != name.strip() or "@" in name:
        raise ModelError(f"model name {name!r}: no surrounding spaces or '@' (it is used in references)")
    return name


def checkpoint_trained_on(folder: str | os.PathLike) -> str | None:
    """The set reference a `trainer fit` checkpoint folder records in checkpoint.json (`trained_on`),
    which is how lineage reaches back through students and classifiers; None if it records none."""
    meta = Path(folder) / "checkpoint.json"
    if not meta.exists():
        return None
    try:
        value = json.loads(meta.read_text()).get("trained_on")
    except (json.JSONDecodeError, OSError) as exc:
        raise ModelError(f"{meta}: unreadable ({exc})") from None
    return str(value) if value else None


def add_model(store: Store, name: str, kind: str, path: str | os.PathLike) -> dict:
    """Register the model folder `path` under `name`; return its `models` row.

    Adding the same name with the same files again is a no-op; the same name with other files is
    refused (vectors already made under that name would silently change meaning).
    """
    name = _check_name(name)
    if kind not in KINDS:
        raise ModelError(f"model {name!r}: unknown kind {kind!r}; kinds: {', '.join(KINDS)}")
    folder = Path(path).expanduser().resolve()
    if not folder.is_dir():
        raise ModelError(f"model {name!r}: {path} is not a folder")
    rows = _rows(store)
    for row in rows:
        if row["model_id"] != name and model_slug(row["model_id"]) == model_slug(name):
            raise ModelError(f"model name {name!r} would share tables emb_{model_slug(name)}_* with "
                             f"registered model {row['model_id']!r}; choose another name")
    sha = folder_sha256(folder)
    for row in rows:
        if row["model_id"] == name:
            if row["sha256"] == sha and row["kind"] == kind:
                return row
            raise ModelError(f"model {name!r} is already registered with other files ({row['path']}, "
                             f"sha256 {row['sha256'][:12]}); choose another name")
    provisional = ModelRecord(name, kind, str(folder), sha, 0, None, None, (), None)
    # Loading needs torch; listing and reading the registry must not (model-free commands stay fast).
    from curator.models.teachers import load_teacher

    teacher = load_teacher(provisional, device="cpu", verify=False)
    row = {
        "model_id": name, "kind": kind, "path": str(folder), "sha256": sha, "dim": int(teacher.dim),
        "logit_scale": None if teacher.logit_scale is None else float(teacher.logit_scale),
        "sample_rate": teacher.sample_rate, "modalities": list(teacher.modalities),
        "trained_on": checkpoint_trained_on(folder) if kind == "checkpoint" else None, "added_at": now(),
    }
    store.upsert("models", pa.Table.from_pylist([row], schema=MODELS))
    return row


def _rows(store: Store) -> list[dict]:
    if not store.has("models"):
        return []
    return store.read("models").to_pylist()


def list_models(store: Store) -> pa.Table:
    if not store.has("models"):
        return MODELS.empty_table()
    return store.read("models").sort_by("model_id")


def find_model(store: Store, name: str) -> ModelRecord | None:
    """The registered model `name`, or None (for callers to whom an unknown model is not an error)."""
    for row in _rows(store):
        if row["model_id"] == name:
            return _record(row)
    return None


def get_model(store: Store, name: str) -> ModelRecord:
    model = find_model(store, name)
    if model is not None:
        return model
    rows = _rows(store)
    known = ", ".join(sorted(r["model_id"] for r in rows)) or "none (curator models add NAME --kind KIND PATH)"
    raise ModelError(f"unknown model {name!r}; registered: {known}")


def _record(row: dict) -> ModelRecord:
    return ModelRecord(
        model_id=row["model_id"], kind=row["kind"], path=row["path"], sha256=row["sha256"], dim=int(row["dim"]),
        logit_scale=row.get("logit_scale"), sample_rate=row.get("sample_rate"),
        modalities=tuple(row.get("modalities") or ()), trained_on=row.get("trained_on"),
    )
