"""The store: one LanceDB database (a folder or object-store URI) holding every table.

A handful of verbs that compose, no hidden global state: `Store.open(uri)`, then `table`,
`upsert`, `append`, `read`, `versions`, `checkout`, `tag`, `sql`. Lance gives each write a new
version; nothing here rewrites history.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import lancedb
import pyarrow as pa

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


def _is_local(uri: str) -> bool:
    return "://" not in uri or uri.startswith("file://")


class Store:
    def __init__(self, uri: str, db):
        self.uri = uri
        self.db = db

    @classmethod
    def open(cls, uri: str | None = None, create: bool = True) -> "Store":
        uri = str(uri or default_uri())
        if _is_local(uri):
            path = Path(uri.removeprefix("file://"))
            if path.exists() and not path.is_dir():
                raise StoreError(f"store {uri}: exists and is not a folder")
            if not path.exists():
                if not create:
                    raise StoreError(f"store {uri}: no such folder (run an ingest first, or pass --store)")
                path.mkdir(parents=True)
        return cls(uri, lancedb.connect(uri))

    # -- tables ---------------------------------------------------------------------------------
    def names(self) -> list[str]:
        # list_tables() pages (table_names() silently stops at 10); follow the page token.
        names, token = [], None
        while True:
            result = self.db.list_tables(page_token=token) if token else self.db.list_tables()
            names.extend(getattr(result, "tables", result))
            token = getattr(result, "page_token", None)
            if not token:
                return sorted(names)

    def has(self, name: str) -> bool:
        return name in self.names()

    def table(self, name: str, schema: pa.Schema | None = None):
        """Open `name`; create it empty from `schema` (or its fixed schema) if it does not exist."""
        if self.has(name):
            return self.db.open_table(name)
        schema = schema or FIXED_TABLES.get(name, (None,))[0]
        if schema is None:
            raise StoreError(f"table {name!r} does not exist in store {self.uri}")
        return self.db.create_table(name, schema=schema, exist_ok=True)

    def open_existing(self, name: str):
        if not self.has(name):
            raise StoreError(f"table {name!r} does not exist in store {self.uri}")
        return self.db.open_table(name)

    def schema_of(self, name: str) -> pa.Schema:
        return self.open_existing(name).schema

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
        if self.has(name):
            self.db.open_table(name).add(data)
        else:
            self.db.create_table(name, data=data, schema=schema, exist_ok=True)

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
        if not self.has(name) or self.db.open_table(name).count_rows() == 0:
            self._add(name, data, schema)
            return data.num_rows
        table = self.db.open_table(name)
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
        try:
            current = table.to_lance().to_table(columns=list(key))
        except Exception:  # pylance missing: fall back to a full read
            current = table.to_arrow().select(list(key))
        return set(_key_tuples(current, key))

    def overwrite(self, name: str, data: pa.Table, schema: pa.Schema) -> int:
        """Replace a table's contents in one write (one new version). Used for set versions."""
        data = conform(data, schema, name)
        if self.has(name):
            tbl = self.db.open_table(name)
            tbl.add(data, mode="overwrite")
        else:
            tbl = self.db.create_table(name, data=data, schema=schema)
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
        table = self.open_existing(name)
        if version is not None:
            self._checkout(table, name, version)
        if columns:
            return table.to_lance().to_table(columns=columns) if hasattr(table, "to_lance") else table.to_arrow().select(columns)
        return table.to_arrow()

    def _checkout(self, table, name: str, version: int | str) -> None:
        try:
            table.checkout(version)
        except Exception as exc:  # lancedb raises ValueError / RuntimeError variants
            known = [v["version"] for v in table.list_versions()]
            raise RefError(
                f"table {name!r} has no version {version!r}; versions: {', '.join(map(str, known))}"
            ) from None

    def version(self, name: str) -> int:
        return int(self.open_existing(name).version)

    def versions(self, name: str) -> list[dict]:
        table = self.open_existing(name)
        tags_by_version: dict[int, list[str]] = {}
        for tag, info in table.tags.list().items():
            tags_by_version.setdefault(int(info["version"]), []).append(tag)
        out = []
        for v in table.list_versions():
            number = int(v["version"])
            out.append({"version": number, "timestamp": v["timestamp"], "tags": sorted(tags_by_version.get(number, []))})
        return out

    def tag(self, name: str, version: int, tag: str) -> None:
        table = self.open_existing(name)
        known = {int(v["version"]) for v in table.list_versions()}
        if int(version) not in known:
            raise RefError(f"table {name!r} has no version {version}")
        if tag in table.tags.list():
            table.tags.update(tag, int(version))
        else:
            table.tags.create(tag, int(version))

    def info(self) -> list[TableInfo]:
        out = []
        for name in self.names():
            table = self.db.open_table(name)
            size = None
            if _is_local(self.uri):
                folder = Path(self.uri.removeprefix("file://")) / f"{name}.lance"
                if folder.exists():
                    size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
            out.append(TableInfo(name, table.count_rows(), int(table.version), size))
        return out

    def table_ref(self, name: str) -> str:
        """`name@version` of the table's current version, for lineage."""
        return f"{name}@{self.version(name)}"


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
