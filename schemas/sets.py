"""Reading improvement sets: the one way both `curator` and `trainer` turn a set reference into rows.

Each build is one overwrite of `set_<name>` (one new Lance version); the `sets` catalog numbers the
set versions and records, per version, its Lance version (`table_version`), lineage and content
hash; tags are Lance tags on the set table.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from schemas.errors import RefError
from schemas.reading import open_dataset, read_table, table_names
from schemas.refs import Ref, parse_ref
from schemas.tables import set_table_name

# Columns that define a set's content, in hash order. Timestamps of the build are not content.
HASH_ROWS = 8192
HASHED_COLUMNS = ("audio_id", "text_id", "text", "score", "label", "confidence", "teacher_audio", "teacher_text")


@dataclass(frozen=True)
class ResolvedSet:
    name: str
    version: int
    content_hash: str
    rows: int
    strategy: str
    params: dict
    inputs: tuple[str, ...]
    table_version: int | None = None  # the Lance version of set_<name> holding the rows
    model_id: str | None = None  # the teacher whose vectors the rows carry
    model_sha256: str | None = None

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"


def content_hash(table: pa.Table) -> str:
    """Order-independent hash of a set's rows: sorted by (audio_id, text_id) first, so a rebuild that
    returns the same rows in another order hashes the same."""
    cols = [c for c in HASHED_COLUMNS if c in table.column_names]
    keys = [k for k in ("audio_id", "text_id") if k in table.column_names]
    order = pc.sort_indices(table.select(keys), [(k, "ascending") for k in keys]) if table.num_rows and keys \
        else pa.array(np.arange(table.num_rows, dtype=np.int64))
    h = hashlib.sha256()
    for name in cols:
        col = table.column(name)
        h.update(name.encode())
        if pa.types.is_fixed_size_list(col.type):
            # Vector columns are hashed HASH_ROWS rows at a time (the same bytes as all at once): a
            # sorted, rounded copy of a 100 k-row set's two vector columns was ~2.5 GB of transient memory.
            for start in range(0, len(order), HASH_ROWS):
                part = col.take(order.slice(start, HASH_ROWS)).combine_chunks()
                h.update(np.round(part.values.to_numpy(zero_copy_only=False).astype(np.float32), 6).tobytes())
            h.update(np.asarray(col.take(order).is_null()).tobytes())
        else:
            h.update(json.dumps(col.take(order).to_pylist(), default=str).encode())
    return h.hexdigest()


def _catalog_rows(uri: str) -> list[dict]:
    if "sets" not in table_names(uri):
        return []
    return read_table(uri, "sets").to_pylist()


def resolve_set(uri: str, ref: str | Ref) -> ResolvedSet:
    """Resolve `name`, `name@N` or `name@tag` in the store at `uri`."""
    r = parse_ref(ref) if isinstance(ref, str) else ref
    catalog = _catalog_rows(uri)
    rows = [row for row in catalog if row["name"] == r.name]
    if not rows:
        known = sorted({row["name"] for row in catalog})
        hint = f"; known sets: {', '.join(known)}" if known else "; no sets have been built in this store"
        raise RefError(f"set {r.name!r} does not exist{hint}")
    by_version = {int(row["version"]): row for row in rows}
    if r.is_latest:
        version = max(by_version)
    elif r.version is not None:
        version = r.version
        if version not in by_version:
            raise RefError(
                f"set {r.name!r} has no version {version}; versions: {', '.join(map(str, sorted(by_version)))}"
            )
    else:
        tags = open_dataset(uri, set_table_name(r.name)).tags.list()
        if r.tag not in tags:
            raise RefError(f"set {r.name!r} has no tag {r.tag!r}; tags: {', '.join(sorted(tags)) or 'none'}")
        lance_version = int(tags[r.tag]["version"])
        by_lance = {_table_version(row): v for v, row in by_version.items()}
        if lance_version not in by_lance:
            raise RefError(f"tag {r} points at table version {lance_version}, which is not in the sets catalog")
        version = by_lance[lance_version]
    row = by_version[version]
    return ResolvedSet(
        name=r.name,
        version=version,
        content_hash=row["content_hash"],
        rows=int(row["rows"]),
        strategy=row["strategy"],
        params=json.loads(row["params"] or "{}"),
        inputs=tuple(row["inputs"] or ()),
        table_version=_table_version(row),
        model_id=row.get("model_id"),
        model_sha256=row.get("model_sha256"),
    )


def _table_version(row: dict) -> int:
    """The Lance version of `set_<name>` a catalog row names (rows from before the column: its version)."""
    return int(row.get("table_version") or row["version"])


def read_set(uri: str, ref: str | Ref, verify: bool = True) -> tuple[pa.Table, ResolvedSet]:
    """Rows of one set version plus what it resolved to. With `verify`, the rows are re-hashed and
    compared with the catalog so a student never trains on data that differs from its lineage."""
    resolved = resolve_set(uri, ref)
    data = read_table(uri, set_table_name(resolved.name), resolved.table_version)
    if verify:
        actual = content_hash(data)
        if actual != resolved.content_hash:
            raise RefError(
                f"set {resolved.ref}: rows hash to {actual[:12]} but the catalog says {resolved.content_hash[:12]}"
            )
    return data, resolved
