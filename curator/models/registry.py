"""The model registry: which teachers and students exist, where their files are, what they produce.

A model is registered once under a name (`curator models add`); its row in `models` fixes the
folder's sha256, the embedding size and the logit scale, so every vector table, match run and set
can say exactly which model made it. Registering loads the model once: a folder that cannot be
loaded, or that is not the kind it claims, is refused at the door rather than at embed time.

`logit_scale` is always the multiplier s (already exponentiated: 1/0.07 ≈ 14.3 at CLIP's init),
the number zero-shot softmaxes multiply cosine scores by. For CLAP it is the audio-side scale
(`logit_scale_a`), the one `logits_per_audio` uses for classifying clips.

An `external` model has no weights here: its vectors were made elsewhere (a team's own pipeline, a
cluster job) and come in with `curator import-embeddings`. It is registered by its dimension,
modalities and logit scale; its sha256 fingerprints that description, so re-adding the same
description is a no-op and another description under the same name is refused.

Wherever a model is taken by name, a folder is accepted too: it resolves to the registered model
whose folder it is (`get_model`), so vectors are always filed under one name per model.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from curator.store.store import Store, now
from curator.store.vectors import embedding_table
from schemas.errors import ModelError
from schemas.fingerprint import folder_sha256
from schemas.ids import model_slug
from schemas.tables import MODELS

KINDS = ("clap-hf", "checkpoint", "sentence", "external")
# Kinds with weights in a folder here (`embed` can run them); `external` only has imported vectors.
LOADABLE = ("clap-hf", "checkpoint", "sentence")
MODALITIES = ("audio", "text")


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

    def check_loadable(self) -> None:
        """Refuse, in one line, to run a model whose weights are not here (kind external)."""
        if self.kind not in LOADABLE:
            raise ModelError(f"model {self.model_id!r} is external: its vectors were made elsewhere and there are "
                             f"no weights here to run; bring its vectors with `curator import-embeddings "
                             f"--model {self.model_id} ...`")


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


def _check_clash(rows: list[dict], name: str) -> None:
    for row in rows:
        if row["model_id"] != name and model_slug(row["model_id"]) == model_slug(name):
            raise ModelError(f"model name {name!r} would share tables emb_{model_slug(name)}_* with "
                             f"registered model {row['model_id']!r}; choose another name")


def _same_or_refused(rows: list[dict], name: str, kind: str, sha: str, where: str) -> dict | None:
    for row in rows:
        if row["model_id"] == name:
            if row["sha256"] == sha and row["kind"] == kind:
                return row
            raise ModelError(f"model {name!r} is already registered with other files ({row['path'] or row['kind']}, "
                             f"sha256 {row['sha256'][:12]}) than {where}; choose another name")
    return None


def external_row(name: str, dim: int | None, modalities=None, logit_scale: float | None = None) -> dict:
    """The `models` row of an external model (no weights here), its sha256 a hash of the description."""
    if dim is None or int(dim) < 1:
        raise ModelError(f"model {name!r}: --kind external needs --dim D (the vectors' size, at least 1)")
    mods = tuple(dict.fromkeys(modalities or MODALITIES))
    bad = [m for m in mods if m not in MODALITIES]
    if bad or not mods:
        raise ModelError(f"model {name!r}: --modalities must name audio and/or text, got {','.join(mods) or 'none'}")
    if logit_scale is not None and not (float(logit_scale) > 0 and float(logit_scale) < float("inf")):
        raise ModelError(f"model {name!r}: --logit-scale must be a positive number (the multiplier s), "
                         f"got {logit_scale}")
    desc = {"kind": "external", "dim": int(dim), "modalities": list(mods),
            "logit_scale": None if logit_scale is None else float(logit_scale)}
    sha = hashlib.sha256(json.dumps(desc, sort_keys=True).encode("utf-8")).hexdigest()
    return {"model_id": name, "kind": "external", "path": "", "sha256": sha, "dim": int(dim),
            "logit_scale": desc["logit_scale"], "sample_rate": None, "modalities": list(mods),
            "trained_on": None, "added_at": now()}


def add_model(store: Store, name: str, kind: str, path: str | os.PathLike | None = None, *, dim: int | None = None,
              modalities=None, logit_scale: float | None = None) -> dict:
    """Register the model folder `path` under `name` (or, for kind external, the description `dim`,
    `modalities`, `logit_scale`); return its `models` row.

    Adding the same name with the same files again is a no-op; the same name with other files is
    refused (vectors already made under that name would silently change meaning).
    """
    name = _check_name(name)
    if kind not in KINDS:
        raise ModelError(f"model {name!r}: unknown kind {kind!r}; kinds: {', '.join(KINDS)}")
    rows = _rows(store)
    _check_clash(rows, name)
    if kind == "external":
        if path is not None:
            raise ModelError(f"model {name!r}: --kind external takes no folder (its weights are not here)")
        row = external_row(name, dim, modalities, logit_scale)
        same = _same_or_refused(rows, name, kind, row["sha256"], "this description")
        if same is None:
            store.upsert("models", pa.Table.from_pylist([row], schema=MODELS))
        return same or row
    if dim is not None or modalities or logit_scale is not None:
        raise ModelError(f"model {name!r}: --dim, --modalities and --logit-scale are for --kind external; "
                         f"a {kind} folder states its own")
    if path is None:
        raise ModelError(f"model {name!r}: --kind {kind} needs the model folder")
    folder = Path(path).expanduser().resolve()
    if not folder.is_dir():
        raise ModelError(f"model {name!r}: {path} is not a folder")
    sha = folder_sha256(folder)
    same = _same_or_refused(rows, name, kind, sha, str(folder))
    if same is not None:
        return same
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
    """The registered model `name`, or the registered model whose folder `name` is; else a ModelError
    that lists what is registered (a folder that is not registered says how to register it)."""
    model = find_model(store, name)
    if model is not None:
        return model
    rows = _rows(store)
    if name and Path(name).expanduser().is_dir():
        folder = str(Path(name).expanduser().resolve())
        for row in rows:
            if row["path"] and row["path"] == folder:
                return _record(row)
        raise ModelError(f"folder {name} is not a registered model; register it first: "
                         f"curator models add NAME --kind KIND {name}")
    known = ", ".join(sorted(r["model_id"] for r in rows)) or "none (curator models add NAME --kind KIND PATH)"
    raise ModelError(f"unknown model {name!r}; registered: {known}")


def lineage(store: Store) -> dict[str, str]:
    """model_id -> its lineage as one line: the set it was trained on, the model that built that
    set, what that model was trained on, ... (`ads@3 <- teach <- pairs@1 <- base`); '' for a root."""
    rows = {r["model_id"]: r for r in _rows(store)}
    built_by: dict[str, str] = {}
    if store.has("sets"):
        for s in store.read("sets", columns=["name", "version", "model_id"]).to_pylist():
            if s["model_id"]:
                built_by[f"{s['name']}@{s['version']}"] = s["model_id"]
    out = {}
    for model_id in rows:
        chain, seen, current = [], {model_id}, rows[model_id]
        while current is not None and current.get("trained_on"):
            ref = current["trained_on"]
            chain.append(ref)
            teacher = built_by.get(ref)
            if teacher is None or teacher in seen:
                break
            chain.append(teacher)
            seen.add(teacher)
            current = rows.get(teacher)
        out[model_id] = " <- ".join(chain)
    return out


def _record(row: dict) -> ModelRecord:
    return ModelRecord(
        model_id=row["model_id"], kind=row["kind"], path=row["path"], sha256=row["sha256"], dim=int(row["dim"]),
        logit_scale=row.get("logit_scale"), sample_rate=row.get("sample_rate"),
        modalities=tuple(row.get("modalities") or ()), trained_on=row.get("trained_on"),
    )
