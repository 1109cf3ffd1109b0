"""Improvement-set versions and their catalog: write, list, show (lineage), diff, tag, export.

Each build is exactly one overwrite write of `set_<name>` (one Lance version). The `sets` table is
the catalog and decides the numbers: set version N of `name` is the catalog row (name, N), which
records the Lance version of `set_<name>` holding its rows (`table_version`; rows written before
that column existed have version = Lance version). `schemas.sets.resolve_set` only resolves
versions that have a catalog row.

Write protocol (one writer per set name at a time: the set table's lock is held throughout):
1. every row is computed and validated before anything is written, so a build that fails
   anywhere before the write leaves the store untouched;
2. the catalog table is opened (created) *before* the overwrite, so the common failure of the
   second step (a missing or unwritable catalog) is found while nothing has been written;
3. the next number is the catalog's largest for `name` plus one; overwrite `set_<name>` (one new
   Lance version L), then append the catalog row (name, N, L). A build killed between the two
   writes leaves L uncatalogued; its rerun, with the same rows, reuses L and gets the same N;
4. if the catalog append fails, the set table is rolled back with `restore(previous)` (Lance
   never deletes history, so this adds a commit whose contents equal the previous version).
   No catalog row names the failed version, so it can never be resolved, read or trained on.

A rebuild whose rows, strategy, params, inputs and model equal the latest version writes nothing
and returns that version, saying so (re-running a command is idempotent).
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from curator.models.registry import find_model
from curator.store.store import Store, now
from schemas.errors import CuratorError, MixedModelsError, ParameterError, RefError, StoreError
from schemas.faults import crash_point
from schemas.refs import parse_ref
from schemas.sets import ResolvedSet, content_hash, read_set, resolve_set
from schemas.tables import SETS, set_rows, set_table_name
from schemas.validate import conform

# Parent sets are recorded in `inputs` with this prefix so they cannot be mistaken for table refs.
SET_INPUT = "set:"
KEY = ("audio_id", "text_id")
EXPORT_FORMATS = ("parquet", "csv", "jsonl")


def set_input(resolved: ResolvedSet) -> str:
    return f"{SET_INPUT}{resolved.ref}"


def _model_fields(model) -> tuple[str | None, str | None]:
    if model is None:
        return None, None
    if isinstance(model, dict):
        return model.get("model_id"), model.get("sha256")
    return getattr(model, "model_id", None), getattr(model, "sha256", None)


def _vector_dim(rows: pa.Table, column: str) -> int:
    if column not in rows.column_names:
        raise ParameterError(f"set rows need a {column!r} column (teacher vectors make a set self-contained)")
    t = rows.column(column).type
    if not pa.types.is_fixed_size_list(t):
        raise ParameterError(f"set rows: column {column!r} has type {t}, expected a fixed-size float32 list")
    return t.list_size


def _check_name(name: str) -> None:
    ref = parse_ref(name)
    if not ref.is_latest:
        raise RefError(f"set name {name!r} must not carry @version or @tag")


def normalize_rows(rows: pa.Table) -> pa.Table:
    """Conform to the set-row schema and sort by (audio_id, text_id) so storage order is stable."""
    schema = set_rows(_vector_dim(rows, "teacher_audio"), _vector_dim(rows, "teacher_text"))
    rows = conform(rows, schema, "set rows")
    if rows.num_rows:
        rows = rows.sort_by([(k, "ascending") for k in KEY])
    return rows


def latest(store: Store, name: str) -> ResolvedSet | None:
    try:
        return resolve_set(store.uri, name)
    except RefError:
        return None


def write_set(store: Store, name: str, rows: pa.Table, strategy: str, params: dict, inputs: list[str],
              model, allow_empty: bool = False) -> tuple[ResolvedSet, bool]:
    """Write one set version (one overwrite of `set_<name>` + one catalog row); see module doc.

    Returns (the version, whether this call wrote it): False when the build equals the latest
    version, which is returned unchanged."""
    _check_name(name)
    rows = normalize_rows(rows)
    if rows.num_rows == 0 and not allow_empty:
        raise ParameterError(
            f"set {name!r}: the build produced no rows; nothing written (lower the threshold, widen the "
            "filters, or pass --allow-empty)"
        )
    digest = content_hash(rows)
    params_json = json.dumps(params, sort_keys=True, default=str)
    model_id, model_sha = _model_fields(model)
    table_name = set_table_name(name)
    with store.lock(table_name):  # one writer per set name: the number and the write go together
        previous = latest(store, name)
        if previous is not None and _same_build(store, previous, digest, strategy, params_json, inputs, model_id):
            return previous, False
        store.table("sets")  # step 2: fail here, before writing, if the catalog is unusable
        numbers = _catalog_versions(store, name)
        version = max(numbers, default=0) + 1
        store.table(table_name, rows.schema)  # created empty in its own commit the first time
        prev_lance = store.version(table_name)
        lance_version = _orphan(store, table_name, set(numbers.values()), digest)
        if lance_version is None:
            lance_version = store.overwrite(table_name, rows, rows.schema)
            crash_point("version committed")
        row = {
            "name": name, "version": version, "strategy": strategy, "params": params_json,
            "inputs": list(inputs), "model_id": model_id, "model_sha256": model_sha,
            "rows": rows.num_rows, "content_hash": digest, "created_at": now(), "table_version": lance_version,
        }
        try:
            store.append("sets", pa.Table.from_pylist([row], schema=SETS))
        except Exception as exc:  # whatever failed (Lance, disk, schema), no uncatalogued version may stay
            if lance_version != prev_lance:
                store.restore(table_name, prev_lance)
            raise StoreError(f"set {name!r}: catalog write failed, set table rolled back ({exc})") from exc
        crash_point("catalog written")
    return resolve_set(store.uri, f"{name}@{version}"), True


def _catalog_versions(store: Store, name: str) -> dict[int, int]:
    """{set version: Lance version of set_<name>} of every catalogued version of `name`."""
    return {int(r["version"]): int(r.get("table_version") or r["version"])
            for r in store.read("sets").to_pylist() if r["name"] == name}


def _orphan(store: Store, table_name: str, catalogued: set[int], digest: str) -> int | None:
    """The set table's latest Lance version when no catalog row names it and it holds exactly these
    rows: a build killed between its two writes. Its rerun reuses it instead of writing again."""
    current = store.version(table_name)
    if current in catalogued or store.dataset(table_name).count_rows() == 0:
        return None
    return current if content_hash(store.read(table_name)) == digest else None


def _same_build(store: Store, prev: ResolvedSet, digest: str, strategy: str, params_json: str,
                inputs: list[str], model_id: str | None) -> bool:
    if prev.content_hash != digest or prev.strategy != strategy or list(prev.inputs) != list(inputs):
        return False
    if json.dumps(prev.params, sort_keys=True, default=str) != params_json:
        return False
    return catalog_row(store, prev.name, prev.version).get("model_id") == model_id


def catalog_row(store: Store, name: str, version: int) -> dict:
    """The `sets` row of one set version (strategy, params, inputs, model, hash)."""
    data = store.read("sets").to_pylist()
    for r in data:
        if r["name"] == name and int(r["version"]) == int(version):
            return r
    raise RefError(f"set {name}@{version} is not in the catalog")


def set_model_id(store: Store, resolved: ResolvedSet) -> str | None:
    """The model whose vectors a set version carries (None: no teacher vectors)."""
    return catalog_row(store, resolved.name, resolved.version).get("model_id")


def check_set_model(store: Store, resolved: ResolvedSet, model_id: str) -> None:
    """Refuse to combine a set's teacher vectors with another model's."""
    actual = set_model_id(store, resolved)
    if actual != model_id:
        raise MixedModelsError(f"set {resolved.ref} was built with model {actual!r} but this build uses "
                               f"{model_id!r}; vectors of two different models cannot be mixed")


# -- list / show ----------------------------------------------------------------------------------
def list_sets(store: Store) -> pa.Table:
    """One row per set version: name, version, strategy, rows, model, tags, hash prefix, created."""
    if not store.has("sets"):
        return pa.table({"name": pa.array([], pa.string())})
    catalog = sorted(store.read("sets").to_pylist(), key=lambda r: (r["name"], int(r["version"])))
    tags: dict[str, dict[int, list[str]]] = {}
    out = []
    for r in catalog:
        if r["name"] not in tags:
            tags[r["name"]] = _tags_by_version(store, r["name"])
        out.append({
            "name": r["name"], "version": int(r["version"]), "strategy": r["strategy"], "rows": int(r["rows"]),
            "model_id": r["model_id"], "tags": ",".join(tags[r["name"]].get(int(r["version"]), [])),
            "content_hash": r["content_hash"][:12], "created_at": r["created_at"],
        })
    return pa.Table.from_pylist(out)


def _tags_by_version(store: Store, name: str) -> dict[int, list[str]]:
    """{set version: tags}; a tag is a Lance tag on the set table's version of that set version."""
    table_name = set_table_name(name)
    if not store.has(table_name):
        return {}
    by_lance = {lance: version for version, lance in _catalog_versions(store, name).items()}
    out: dict[int, list[str]] = {}
    for v in store.versions(table_name):
        if v["tags"] and int(v["version"]) in by_lance:
            out[by_lance[int(v["version"])]] = v["tags"]
    return out


@dataclass
class SetLineage:
    """A set version, what built it, and the lineage of every parent (sets and trained models)."""

    ref: str
    strategy: str
    rows: int
    content_hash: str
    model_id: str | None
    model_sha256: str | None
    params: dict
    inputs: list[str]
    tags: list[str]
    parents: list["SetLineage | ModelLineage"]


@dataclass
class ModelLineage:
    """A model in a lineage; a trained student points at the set it was trained on."""

    model_id: str
    kind: str | None
    trained_on: str | None
    parents: list[SetLineage]


def show_set(store: Store, ref: str, _seen: set[str] | None = None) -> SetLineage:
    """Resolve `ref` and walk its lineage: parent sets in `inputs`, and the model that built it
    back through each model's `trained_on` set, until an external teacher (round 0)."""
    seen = _seen if _seen is not None else set()
    resolved = resolve_set(store.uri, ref)
    seen.add(resolved.ref)
    row = catalog_row(store, resolved.name, resolved.version)
    parents: list = []
    for item in resolved.inputs:
        if item.startswith(SET_INPUT) and item[len(SET_INPUT):] not in seen:
            parents.append(_parent_set(store, item[len(SET_INPUT):], seen))
    if row.get("model_id"):
        parents.append(_model_lineage(store, row["model_id"], seen))
    return SetLineage(
        ref=resolved.ref, strategy=resolved.strategy, rows=resolved.rows, content_hash=resolved.content_hash,
        model_id=row.get("model_id"), model_sha256=row.get("model_sha256"), params=resolved.params,
        inputs=list(resolved.inputs), tags=_tags_by_version(store, resolved.name).get(resolved.version, []),
        parents=parents,
    )


def _parent_set(store: Store, ref: str, seen: set[str]):
    try:
        return show_set(store, ref, seen)
    except RefError as exc:  # a parent missing from this store is reported in the tree, not fatal
        return SetLineage(ref=ref, strategy="missing", rows=0, content_hash="", model_id=None, model_sha256=None,
                       params={"error": str(exc)}, inputs=[], tags=[], parents=[])


def _model_lineage(store: Store, model_id: str, seen: set[str]) -> ModelLineage:
    record = find_model(store, model_id)
    trained_on = record.trained_on if record else None
    parents = []
    if trained_on and trained_on not in seen:
        parents.append(_parent_set(store, trained_on, seen))
    return ModelLineage(model_id=model_id, kind=record.kind if record else None,
                        trained_on=trained_on, parents=parents)


def format_lineage(node, indent: int = 0) -> list[str]:
    """Human-readable lineage tree, one fact per line."""
    pad = "  " * indent
    if isinstance(node, ModelLineage):
        lines = [f"{pad}model {node.model_id} ({node.kind or 'unregistered'})"
                 + (f", trained on {node.trained_on}" if node.trained_on else ", external teacher")]
        for p in node.parents:
            lines += format_lineage(p, indent + 1)
        return lines
    tags = f" tags={','.join(node.tags)}" if node.tags else ""
    lines = [f"{pad}set {node.ref}: strategy={node.strategy} rows={node.rows} hash={node.content_hash[:12]}{tags}"]
    if node.model_id:
        lines.append(f"{pad}  model: {node.model_id} sha256={str(node.model_sha256)[:12]}")
    lines.append(f"{pad}  params: {json.dumps(node.params, sort_keys=True, default=str)}")
    lines.append(f"{pad}  inputs: {', '.join(node.inputs) or '-'}")
    for p in node.parents:
        lines += format_lineage(p, indent + 1)
    return lines


# -- diff / tag / export -------------------------------------------------------------------------
@dataclass
class SetDiff:
    a: ResolvedSet
    b: ResolvedSet
    added: pa.Table  # rows in b, not in a (by audio_id, text_id); every column but the vectors
    removed: pa.Table  # rows in a, not in b
    common: int


def _keys(table: pa.Table) -> list[tuple]:
    return list(zip(*(table.column(k).to_pylist() for k in KEY)))


def _without_vectors(rows: pa.Table) -> pa.Table:
    return rows.select([f.name for f in rows.schema if not pa.types.is_fixed_size_list(f.type)])


def diff_sets(store: Store, ref_a: str, ref_b: str) -> SetDiff:
    """Rows added and removed between two set versions (both verified against the catalog). The
    changed rows come without their vector columns: copying them doubled the memory of a diff."""
    rows_a, a = read_set(store.uri, ref_a)
    rows_a = _without_vectors(rows_a)
    rows_b, b = read_set(store.uri, ref_b)
    rows_b = _without_vectors(rows_b)
    keys_a, keys_b = _keys(rows_a), _keys(rows_b)
    set_a, set_b = set(keys_a), set(keys_b)
    added = rows_b.filter(pa.array([k not in set_a for k in keys_b], pa.bool_()))
    removed = rows_a.filter(pa.array([k not in set_b for k in keys_a], pa.bool_()))
    return SetDiff(a, b, added, removed, len(set_a & set_b))


def tag_set(store: Store, ref: str, tag: str) -> ResolvedSet:
    resolved = resolve_set(store.uri, ref)
    tag_ref = parse_ref(f"{resolved.name}@{tag}")
    if tag_ref.tag is None:
        raise RefError(f"tag {tag!r} is a number; tags must contain a non-digit so they cannot shadow versions")
    store.tag(set_table_name(resolved.name), resolved.table_version, tag)
    return resolved


def export_format(path: str, fmt: str | None) -> str:
    if fmt:
        if fmt not in EXPORT_FORMATS:
            raise ParameterError(f"--format {fmt!r}: expected one of {', '.join(EXPORT_FORMATS)}")
        return fmt
    suffix = Path(path).suffix.lower().lstrip(".")
    if suffix in ("parquet", "pq"):
        return "parquet"
    if suffix in ("csv", "jsonl"):
        return suffix
    if suffix == "ndjson":
        return "jsonl"
    raise ParameterError(f"export path {path!r}: cannot tell the format from the suffix; use .parquet, .csv, "
                         ".jsonl or --format")


def export_set(store: Store, ref: str, path: str, fmt: str | None = None) -> tuple[ResolvedSet, str]:
    """Write a set version to parquet (vectors as fixed-size lists, lineage in the file metadata),
    csv (vectors as JSON arrays in a cell) or jsonl (vectors as arrays)."""
    fmt = export_format(path, fmt)
    rows, resolved = read_set(store.uri, ref)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    if fmt == "parquet":
        import pyarrow.parquet as pq

        meta = {b"curator.set": resolved.ref.encode(), b"curator.content_hash": resolved.content_hash.encode()}
        pq.write_table(rows.replace_schema_metadata({**(rows.schema.metadata or {}), **meta}), path)
    elif fmt == "jsonl":
        with open(path, "w", encoding="utf-8") as fh:
            for r in rows.to_pylist():
                fh.write(json.dumps(_plain(r), allow_nan=False) + "\n")
    else:
        with open(path, "w", encoding="utf-8", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=rows.column_names)
            writer.writeheader()
            for r in rows.to_pylist():
                writer.writerow({k: json.dumps(v) if isinstance(v, list) else ("" if v is None else v)
                                 for k, v in _plain(r).items()})
    return resolved, fmt


def _plain(row: dict) -> dict:
    out = {}
    for k, v in row.items():
        if hasattr(v, "isoformat"):
            v = v.isoformat()
        elif isinstance(v, float) and not np.isfinite(v):
            raise CuratorError(f"column {k!r} holds a non-finite value; cannot export it as JSON")
        out[k] = v
    return out
