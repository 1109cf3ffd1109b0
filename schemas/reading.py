"""The one reader of a store's tables, shared by `curator` and `trainer`.

A store is a LanceDB database: a folder (or object-store URI) in which table `name` is the Lance
dataset `name.lance`. Reading needs only `lance` (imports in ~0.4 s here), not `lancedb` (~1.7-2.8 s),
so the commands that only read (query, tables, versions, sets list, evaluation) open tables
through this module; writing goes through `curator.store`.

- `table_names(uri)`: every table with a committed version. On a local store the folder is
  listed; on an object store LanceDB's paged `list_tables` is followed to the last page.
- `open_dataset(uri, name, version)`: a table at its latest version, a version number or a tag.
- `read_table(...)`: its rows as Arrow (optionally some columns, optionally filtered).
- `duckdb_over(uri, ...)`: a DuckDB connection with one view per table, any of them pinned to an
  old version (DuckDB cannot check a Lance version out by itself, so the dataset is handed over).
"""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa

from schemas.errors import QueryError, RefError, StoreError

LANCE_SUFFIX = ".lance"


def is_local(uri: str) -> bool:
    return "://" not in str(uri) or str(uri).startswith("file://")


def local_path(uri: str) -> Path:
    return Path(str(uri).removeprefix("file://"))


def table_uri(uri: str, name: str) -> str:
    return f"{str(uri).rstrip('/')}/{name}{LANCE_SUFFIX}"


def _committed(folder: Path) -> bool:
    # A table whose first write was interrupted has a folder but no manifest: it does not exist yet.
    versions = folder / "_versions"
    return versions.is_dir() and any(p.suffix == ".manifest" for p in versions.iterdir())


def table_names(uri: str) -> list[str]:
    """Sorted names of the store's tables (only tables with at least one committed version)."""
    if is_local(uri):
        root = local_path(uri)
        if not root.is_dir():
            return []
        return sorted(p.name[: -len(LANCE_SUFFIX)] for p in root.iterdir()
                      if p.name.endswith(LANCE_SUFFIX) and p.is_dir() and _committed(p))
    import lancedb  # object stores: only LanceDB knows how to list them

    db, names, token = lancedb.connect(uri), [], None
    while True:  # list_tables pages; table_names() silently stops at the first page
        page = db.list_tables(page_token=token) if token else db.list_tables()
        names.extend(getattr(page, "tables", page))
        token = getattr(page, "page_token", None)
        if not token:
            return sorted(names)


def open_dataset(uri: str, name: str, version: int | str | None = None):
    """The Lance dataset of table `name` at its latest version, version number or tag."""
    import lance

    if name not in table_names(uri):
        raise StoreError(f"table {name!r} does not exist in store {uri}")
    path = table_uri(uri, name)
    if version is None:
        return lance.dataset(path)
    try:
        return lance.dataset(path, version=int(version) if str(version).isdigit() else version)
    except (ValueError, OSError, KeyError):
        known = [v["version"] for v in lance.dataset(path).versions()]
        raise RefError(f"table {name!r} has no version {version!r}; versions: {', '.join(map(str, known))}") from None


def read_table(uri: str, name: str, version: int | str | None = None, columns: list[str] | None = None,
               filter: str | None = None) -> pa.Table:
    """Rows of `name` (at `version`) as one Arrow table; `filter` is a Lance SQL predicate."""
    return open_dataset(uri, name, version).to_table(columns=columns, filter=filter)


def versions(uri: str, name: str) -> list[dict]:
    """[{version, timestamp, tags}] of a table, oldest first."""
    ds = open_dataset(uri, name)
    tags: dict[int, list[str]] = {}
    for tag, info in ds.tags.list().items():
        tags.setdefault(int(info["version"]), []).append(tag)
    return [{"version": int(v["version"]), "timestamp": v["timestamp"], "tags": sorted(tags.get(int(v["version"]), []))}
            for v in ds.versions()]


def size_on_disk(uri: str, name: str) -> int | None:
    """Bytes under a local table's folder (None for object stores, where listing costs requests)."""
    if not is_local(uri):
        return None
    folder = local_path(table_uri(uri, name))
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) if folder.exists() else None


def duckdb_over(uri: str, at: dict[str, int | str] | None = None, tables: list[str] | None = None):
    """A DuckDB connection with a view per table (`at` pins tables to a version or tag).

    The datasets are registered, not copied: DuckDB scans them lazily with projection pushdown.
    """
    import duckdb

    at = at or {}
    present = table_names(uri)
    unknown = [n for n in at if n not in present]
    if unknown:
        raise StoreError(f"--at names table(s) not in the store: {', '.join(unknown)}")
    con = duckdb.connect()
    for name in tables if tables is not None else present:
        con.register(name, open_dataset(uri, name, at.get(name)))
    return con


def store_exists(uri: str) -> bool:
    return not is_local(uri) or os.path.isdir(local_path(uri))


def query(uri: str, sql: str, params: list | None = None, at: dict[str, int | str] | None = None,
          views: tuple[str, ...] = (), what: str = "query failed") -> pa.Table:
    """Run one DuckDB statement over the store's tables (`views` are extra `create view` statements).

    `what` starts the error line when DuckDB rejects it (e.g. the option a filter came from)."""
    import duckdb

    con = duckdb_over(uri, at)
    try:
        for view in views:
            con.execute(view)
        result = con.sql(sql, params=params or None)
        return result.to_arrow_table() if result is not None else pa.table({})
    except duckdb.Error as exc:
        raise QueryError(f"{what}: {str(exc).splitlines()[0]}") from None
    finally:
        con.close()
