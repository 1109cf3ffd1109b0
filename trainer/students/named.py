"""Models taken by name: a folder as given, or the folder of a model registered in the store.

Every trainer option that takes a model (`trainer fit --init`, `trainer eval --model`) accepts a
folder or the name under which `curator models add` registered one. The `models` table is read
through `schemas.reading` (the trainer never imports `curator`).
"""

from __future__ import annotations

from pathlib import Path

from schemas.errors import ModelError, StoreError
from schemas.reading import read_table, table_names


def registered_models(store_uri: str | None) -> dict[str, dict]:
    """model_id -> its `models` row ({} when there is no store or no models table)."""
    if not store_uri:
        return {}
    try:
        if "models" not in table_names(store_uri):
            return {}
        rows = read_table(store_uri, "models", columns=["model_id", "kind", "path"]).to_pylist()
    except StoreError:
        return {}
    return {r["model_id"]: r for r in rows}


def resolve_model(store_uri: str | None, model: str, option: str = "--model") -> str:
    """The folder `model` names: itself if it is a folder, else the registered model's folder."""
    if Path(model).expanduser().is_dir():
        return str(Path(model).expanduser())
    rows = registered_models(store_uri)
    row = rows.get(model)
    if row is None:
        names = ", ".join(sorted(rows)) or "none"
        raise ModelError(f"{option} {model}: neither a folder nor a registered model; registered: {names}")
    if row["kind"] == "external" or not row["path"]:
        raise ModelError(f"{option} {model}: model {model!r} is external (vectors imported from elsewhere); "
                         f"there are no weights here to load")
    if not Path(row["path"]).is_dir():
        raise ModelError(f"{option} {model}: registered folder {row['path']} is gone")
    return row["path"]
