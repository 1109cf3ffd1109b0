"""The store: one LanceDB database (a folder or object-store URI) holding every table.

A handful of verbs that compose, no hidden global state: `Store.open(uri)`, then `names`, `has`,
`read`, `dataset`, `versions`, `version`, `info` (reads, through `schemas.reading`, which needs only
`lance`), and `table`, `append`, `upsert`, `overwrite`, `tag`, `restore`, `drop` (writes, through
LanceDB, connected on the first write). Lance gives each write a new version; nothing here
rewrites history except `restore`/`drop`, which the set catalog uses to roll back its own write.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime, timezone

import pyarrow as pa

from schemas import reading
from schemas.errors import RefError, StoreError
from schemas.tables import ERRORS, FIXED_TABLES
from schemas.validate import conform

DEFAULT_STORE = "./store"
ENV_STORE = "CURATOR_STORE"


def default_uri() -> str:
    return os.environ.get(ENV_STORE) or DEFAULT_STORE


def now() -> datetime:
    return datetime.now(timezone.utc)


@dataclass(frozen=True)
class TableInfo:
    name: str
    rows: int
    version: int
    size_bytes: int | None


class Store:
    def __init__(self, uri: str):
        self.uri = uri
        self._connection = None

    @classmethod
    def open(cls, uri: str | None = None, create: bool = True) -> "Store":
        uri = str(uri or default_uri())
        if reading.is_local(uri):
            path = reading.local_path(uri)
            if path.exists() and not path.is_dir():
                raise StoreError(f"store {uri}: exists and is not a folder")
            if not path.exists():
                if not create:
                    raise StoreError(f"store {uri}: no such folder (run an ingest first, or pass --store)")
                try:
                    path.mkdir(parents=True)
                except OSError as exc:
                    raise StoreError(f"store {uri}: cannot create it ({exc.strerror or exc})") from None
        return cls(uri)

    def check_writable(self, name: str | None = None) -> None:
        """Refuse a write up front when the store (or table `name`) is read-only here, instead of
        failing halfway inside Lance."""
        if not reading.is_local(self.uri):
            return
        root = reading.local_path(self.uri)
        folders = [root] + ([reading.local_path(reading.table_uri(self.uri, name))] if name else [])
        for folder in folders:
            if folder.exists() and not os.access(folder, os.W_OK | os.X_OK):
                raise StoreError(f"store {self.uri} is read-only here ({folder} is not writable); nothing written")

    @property
    def _db(self):
        # LanceDB costs ~2 s to import: only writers (and index searches) pay for it.
        if self._connection is None:
            import lancedb

            self._connection = lancedb.connect(self.uri)
        return self._connection

    # -- tables ---------------------------------------------------------------------------------
    def names(self) -> list[str]:
        return reading.table_names(self.uri)

    def has(self, name: str) -> bool:
        return name in self.names()

    def table(self, name: str, schema: pa.Schema | None = None):
        """The LanceDB table `name` (for writes and index searches); created empty from `schema`
        (or its fixed schema) if it does not exist."""
        if self.has(name):
            return self._db.open_table(name)
        self.check_writable(name)
        schema = schema or FIXED_TABLES.get(name, (None,))[0]
        if schema is None:
            raise StoreError(f"table {name!r} does not exist in store {self.uri}")
        return self._db.create_table(name, schema=schema, exist_ok=True, **create_options(schema))

    def open_existing(self, name: str):
        if not self.has(name):
            raise StoreError(f"table {name!r} does not exist in store {self.uri}")
        return self._db.open_table(name)

    def dataset(self, name: str, version: int | str | None = None):
        """The Lance dataset of `name` (latest, a version or a tag): zero-copy scans, no LanceDB."""
        return reading.open_dataset(self.uri, name, version)

    def schema_of(self, name: str) -> pa.Schema:
        return self.dataset(name).schema

    # -- writes ---------------------------------------------------------------------------------
    def append(self, name: str, data: pa.Table, schema: pa.Schema | None = None) -> int:
        schema = schema or FIXED_TABLES.get(name, (None,))[0] or self.schema_of(name)
        data = conform(data, schema, name)
        if data.num_rows == 0:
            return 0
        self._add(name, data, schema)
        return data.num_rows

    def _add(self, name: str, data: pa.Table, schema: pa.Schema) -> None:
        # Creating a table with its first rows keeps version 1 meaningful (not an empty table).
        self.check_writable(name)
        if self.has(name):
            self._db.open_table(name).add(data)
        else:
            self._db.create_table(name, data=data, schema=schema, exist_ok=True, **create_options(schema))

    def upsert(self, name: str, data: pa.Table, key: tuple[str, ...] | None = None,
               schema: pa.Schema | None = None, update: bool = False) -> int:
        """Insert rows whose key is not in the table yet (optionally update the others).

        Returns the number of rows inserted; re-ingesting the same items inserts nothing and makes
        no new version.
        """
        fixed_schema, fixed_key = FIXED_TABLES.get(name, (None, ()))
        schema = schema or fixed_schema or self.schema_of(name)
        key = tuple(key or fixed_key)
        if not key:
            raise StoreError(f"table {name!r} has no key; use append")
        data = conform(data, schema, name)
        if data.num_rows == 0:
            return 0
        data = _dedupe(data, key)
        self.check_writable(name)
        if not self.has(name) or self._db.open_table(name).count_rows() == 0:
            self._add(name, data, schema)
            return data.num_rows
        table = self._db.open_table(name)
        existing = self._existing_keys(table, key, data)
        if existing:
            mask = [k not in existing for k in _key_tuples(data, key)]
            new_rows = data.filter(pa.array(mask, pa.bool_()))
        else:
            new_rows = data
        if update and new_rows.num_rows < data.num_rows:
            table.merge_insert(list(key)).when_matched_update_all().when_not_matched_insert_all().execute(data)
        elif new_rows.num_rows:
            table.add(new_rows)
        return new_rows.num_rows

    def _existing_keys(self, table, key: tuple[str, ...], data: pa.Table) -> set[tuple]:
        # Only the key columns are read, so checking 1 M keys costs a column scan, not the table.
        current = table.to_lance().to_table(columns=list(key))
        return set(_key_tuples(current, key))

    def overwrite(self, name: str, data: pa.Table, schema: pa.Schema) -> int:
        """Replace a table's contents in one write (one new version). Used for set versions."""
        data = conform(data, schema, name)
        self.check_writable(name)
        if self.has(name):
            tbl = self._db.open_table(name)
            tbl.add(data, mode="overwrite")
        else:
            tbl = self._db.create_table(name, data=data, schema=schema, **create_options(schema))
        return int(tbl.version)

    def record_errors(self, rows: list[dict]) -> int:
        """Append failures to `errors`; each row: item_id, uri, stage, message."""
        if not rows:
            return 0
        at = now()
        data = pa.Table.from_pylist([{**r, "at": r.get("at") or at} for r in rows], schema=ERRORS)
        return self.append("errors", data)

    # -- reads and versions ---------------------------------------------------------------------
    def read(self, name: str, version: int | str | None = None, columns: list[str] | None = None) -> pa.Table:
        return reading.read_table(self.uri, name, version, columns)

    def version(self, name: str) -> int:
        return int(self.dataset(name).version)

    def versions(self, name: str) -> list[dict]:
        return reading.versions(self.uri, name)

    def tag(self, name: str, version: int, tag: str) -> None:
        self.check_writable(name)
        table = self.open_existing(name)
        known = {int(v["version"]) for v in table.list_versions()}
        if int(version) not in known:
            raise RefError(f"table {name!r} has no version {version}")
        if tag in table.tags.list():
            table.tags.update(tag, int(version))
        else:
            table.tags.create(tag, int(version))

    def restore(self, name: str, version: int) -> None:
        """Make `version` the latest again (a new version with its contents)."""
        self.open_existing(name).restore(version)

    def drop(self, name: str) -> None:
        self._db.drop_table(name)

    def info(self) -> list[TableInfo]:
        out = []
        for name in self.names():
            ds = self.dataset(name)
            out.append(TableInfo(name, ds.count_rows(), int(ds.version), reading.size_on_disk(self.uri, name)))
        return out

    def table_ref(self, name: str) -> str:
        """`name@version` of the table's current version, for lineage."""
        return f"{name}@{self.version(name)}"


def create_options(schema: pa.Schema) -> dict:
    """Table-creation options. A vector table (float32 vectors, every column non-nullable: the
    `emb_*` tables) uses Lance's legacy (0.1) file format, whose fixed-size-list pages read at
    memory-copy speed (3-4 GB/s from the page cache here, against 0.2-0.6 GB/s for the 2.x formats).
    That format stores a null as a zero, so any table that may hold nulls keeps the default
    (see docs/DECISIONS.md)."""
    vectors = any(pa.types.is_fixed_size_list(f.type) and pa.types.is_float32(f.type.value_type) for f in schema)
    if vectors and not any(f.nullable for f in schema):
        return {"storage_options": {"new_table_data_storage_version": "legacy"}}
    return {}


def _key_tuples(data: pa.Table, key: tuple[str, ...]):
    cols = [data.column(k).to_pylist() for k in key]
    return list(zip(*cols))


def _dedupe(data: pa.Table, key: tuple[str, ...]) -> pa.Table:
    seen: set[tuple] = set()
    keep = []
    for k in _key_tuples(data, key):
        keep.append(k not in seen)
        seen.add(k)
    if all(keep):
        return data
    return data.filter(pa.array(keep, pa.bool_()))
