"""The store: one LanceDB database (a folder or object-store URI) holding every table.

A handful of verbs that compose, no hidden global state: `Store.open(uri)`, then `names`, `has`,
`read`, `dataset`, `versions`, `version`, `info` (reads, through `schemas.reading`, which needs only
`lance`), and `table`, `append`, `upsert`, `overwrite`, `delete`, `tag`, `restore` (writes, through
LanceDB, connected on the first write). Lance gives each write a new version; nothing here
rewrites history except `restore`, which the set catalog uses to roll back its own write.

Crash and concurrency safety (docs/RELIABILITY.md):
- a store folder carries `curator-store.json` (format version); a non-empty folder without it is
  refused, and so is a newer format;
- every table is created empty from its schema in one commit (the fixed tables at store creation),
  and only then written; a table folder left with no committed version by a kill or a full disk
  is removed when the store is opened, and `notes` says so in one line;
- every write to a local store holds that table's lock (`flock` on `_locks/<table>.lock`, released
  by the kernel if the process dies), so a keyed insert's check-then-add is atomic and any number
  of concurrent writers neither lose nor duplicate rows.
"""

from __future__ import annotations

import os
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone

import pyarrow as pa

from curator.store.keys import absent, first_per_key
from curator.store.locks import FileLocks
from curator.store.marker import MARKER, check_format, read_marker, write_marker
from schemas import reading
from schemas.errors import RefError, StoreError
from schemas.faults import crash_point
from schemas.tables import ERRORS, FIXED_TABLES
from schemas.validate import conform

DEFAULT_STORE = "./store"
ENV_STORE = "CURATOR_STORE"
LOCKS = "_locks"  # lock files, one per table; not a table (no .lance suffix)
COMMIT_RETRIES = 6


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


def _looks_like_old_store(root) -> bool:
    entries = [p for p in root.iterdir() if not p.name.startswith(".")]
    return bool(entries) and all(p.name.endswith(reading.LANCE_SUFFIX) or p.name == LOCKS for p in entries)


def half_made_tables(uri: str) -> list[str]:
    """Table folders with no committed version (a kill or full disk during their first write)."""
    if not reading.is_local(uri):
        return []
    root = reading.local_path(uri)
    if not root.is_dir():
        return []
    committed = set(reading.table_names(uri))
    return sorted(p.name[: -len(reading.LANCE_SUFFIX)] for p in root.iterdir()
                  if p.name.endswith(reading.LANCE_SUFFIX) and p.is_dir()
                  and p.name[: -len(reading.LANCE_SUFFIX)] not in committed)


_LOCKS = FileLocks()


class Store:
    def __init__(self, uri: str):
        self.uri = uri
        self._connection = None
        self.notes: list[str] = []  # one line per thing opening the store had to fix

    @classmethod
    def open(cls, uri: str | None = None, create: bool = True, adopt: bool = False) -> "Store":
        """Open the store at `uri`; with `create`, a missing or empty folder becomes a new store
        (marker + the fixed tables, each created empty). `adopt` opens a folder of tables without a
        marker (a store made before markers existed; `curator doctor --repair` then writes one)."""
        uri = str(uri or default_uri())
        store = cls(uri)
        if not reading.is_local(uri):
            if create:
                store.create_fixed_tables()
            return store
        path = reading.local_path(uri)
        if path.exists() and not path.is_dir():
            raise StoreError(f"store {uri}: exists and is not a folder")
        # dot-files only: another process is writing the marker of a store it creates right now
        if not path.exists() or not any(not p.name.startswith(".") for p in path.iterdir()):
            if not create:
                raise StoreError(f"store {uri}: no such store (run an ingest first, or pass --store)")
            try:
                path.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(f"store {uri}: cannot create it ({exc.strerror or exc})") from None
            if read_marker(uri) is None:
                write_marker(uri)
        marker = read_marker(uri)
        if marker is None and not (adopt and _looks_like_old_store(path)):
            hint = (f"; if it is a store made by an earlier curator, `curator --store {uri} doctor --repair` "
                    f"adds the marker") if _looks_like_old_store(path) else ""
            raise StoreError(f"store {uri}: this folder is not a curator store (no {MARKER}){hint}")
        check_format(uri, marker or {})
        store.notes = store.remove_half_made()
        if create and marker is not None:
            store.create_fixed_tables()
        return store

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

    # -- locks and table creation ---------------------------------------------------------------
    @contextmanager
    def lock(self, name: str, blocking: bool = True):
        """Hold table `name`'s write lock (yields False if `blocking` is off and another holds it).
        Object stores have no lock files: there, keyed writes are only as safe as Lance's commits."""
        if not reading.is_local(self.uri):
            yield True
            return
        folder = reading.local_path(self.uri) / LOCKS
        folder.mkdir(exist_ok=True)
        with _LOCKS.hold(str(folder / f"{name}.lock"), blocking) as held:
            yield held

    def remove_half_made(self) -> list[str]:
        """Remove table folders with no committed version (nothing in them was ever readable);
        a folder whose lock is held is being created right now and is left alone."""
        notes = []
        if not os.access(reading.local_path(self.uri), os.W_OK):
            return []  # a read-only store: readers skip such folders anyway
        for name in half_made_tables(self.uri):
            with self.lock(name, blocking=False) as held:
                if held and name in half_made_tables(self.uri):
                    shutil.rmtree(reading.local_path(reading.table_uri(self.uri, name)), ignore_errors=True)
                    notes.append(f"removed {name}{reading.LANCE_SUFFIX}: a half-created table with no committed "
                                 f"version (a write was interrupted while creating it); nothing in it was readable")
        return notes

    def create_fixed_tables(self) -> list[str]:
        """Create every missing fixed table (audio, texts, ..., errors, runs, sets) empty."""
        present = set(self.names())
        made = [n for n in FIXED_TABLES if n not in present]
        for name in made:
            self.create_table(name, FIXED_TABLES[name][0])
        return made

    def create_table(self, name: str, schema: pa.Schema) -> None:
        """Create `name` empty from `schema` in one commit, under its lock; an existing table is kept."""
        self.check_writable(name)
        with self.lock(name):
            if self.has(name):
                return
            crash_point("creating table")
            if reading.is_local(self.uri):
                import lance

                folder = reading.local_path(reading.table_uri(self.uri, name))
                if folder.exists():  # a half-made folder (we hold its lock: nobody is creating it)
                    shutil.rmtree(folder)
                version = storage_version(schema)
                lance.write_dataset(schema.empty_table(), reading.table_uri(self.uri, name), mode="create",
                                    **({"data_storage_version": version} if version else {}))
            else:
                version = storage_version(schema)
                options = {"storage_options": {"new_table_data_storage_version": version}} if version else {}
                self._db.create_table(name, schema=schema, exist_ok=True, **options)
            crash_point("table created")

    # -- tables ---------------------------------------------------------------------------------
    def names(self) -> list[str]:
        return reading.table_names(self.uri)

    def has(self, name: str) -> bool:
        return name in self.names()

    def table(self, name: str, schema: pa.Schema | None = None):
        """The LanceDB table `name` (for writes and index searches); created empty from `schema`
        (or its fixed schema) if it does not exist."""
        if not self.has(name):
            schema = schema or FIXED_TABLES.get(name, (None,))[0]
            if schema is None:
                raise StoreError(f"table {name!r} does not exist in store {self.uri}")
            self.create_table(name, schema)
        return self._db.open_table(name)

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
    def _schema(self, name: str, schema: pa.Schema | None) -> pa.Schema:
        return schema or FIXED_TABLES.get(name, (None,))[0] or self.schema_of(name)

    def append(self, name: str, data: pa.Table, schema: pa.Schema | None = None) -> int:
        schema = self._schema(name, schema)
        data = conform(data, schema, name)
        if data.num_rows == 0:
            return 0
        self.check_writable(name)
        with self.lock(name):
            table = self.table(name, schema)
            crash_point("writing rows")
            _commit(lambda: table.add(data))
        crash_point("rows written")
        return data.num_rows

    def upsert(self, name: str, data: pa.Table, key: tuple[str, ...] | None = None,
               schema: pa.Schema | None = None, update: bool = False) -> int:
        """Insert rows whose key is not in the table yet (optionally update the others).

        The check and the insert happen under the table's lock, so concurrent writers of the same
        keys insert each key once. Returns the number of rows inserted; re-ingesting the same items
        inserts nothing and makes no new version.
        """
        schema = self._schema(name, schema)
        key = tuple(key or FIXED_TABLES.get(name, (None, ()))[1])
        if not key:
            raise StoreError(f"table {name!r} has no key; use append")
        data = conform(data, schema, name)
        if data.num_rows == 0:
            return 0
        data = first_per_key(data, key)
        self.check_writable(name)
        with self.lock(name):
            table = self.table(name, schema)
            new_rows = absent(data, self.read(name, columns=list(key)), key)
            crash_point("writing rows")
            if update and new_rows.num_rows < data.num_rows:
                _commit(lambda: table.merge_insert(list(key)).when_matched_update_all()
                        .when_not_matched_insert_all().execute(data))
            elif new_rows.num_rows:
                _commit(lambda: table.add(new_rows))
        if new_rows.num_rows:
            crash_point("rows written")
        return new_rows.num_rows

    def overwrite(self, name: str, data: pa.Table, schema: pa.Schema) -> int:
        """Replace a table's contents in one write (one new version). Used for set versions."""
        data = conform(data, schema, name)
        self.check_writable(name)
        with self.lock(name):
            table = self.table(name, schema)
            crash_point("writing rows")
            _commit(lambda: table.add(data, mode="overwrite"))
            return int(table.version)

    def delete(self, name: str, where: str) -> None:
        """Delete the rows matching a Lance SQL predicate (one new version), under the table's lock."""
        self.check_writable(name)
        with self.lock(name):
            if self.has(name):
                _commit(lambda: self._db.open_table(name).delete(where))

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
        with self.lock(name):
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
        self.check_writable(name)
        with self.lock(name):
            self.open_existing(name).restore(version)

    def info(self) -> list[TableInfo]:
        out = []
        for name in self.names():
            ds = self.dataset(name)
            out.append(TableInfo(name, ds.count_rows(), int(ds.version), reading.size_on_disk(self.uri, name)))
        return out

    def table_ref(self, name: str) -> str:
        """`name@version` of the table's current version, for lineage."""
        return f"{name}@{self.version(name)}"


def _commit(write):
    """Run one Lance write, retrying a lost commit race (another process committed first)."""
    delay = 0.05
    for attempt in range(COMMIT_RETRIES):
        try:
            return write()
        except (OSError, RuntimeError, ValueError) as exc:
            text = str(exc).lower()
            if attempt == COMMIT_RETRIES - 1 or not any(w in text for w in ("conflict", "retry", "concurrent")):
                raise
            time.sleep(delay)
            delay *= 2


def storage_version(schema: pa.Schema) -> str | None:
    """The Lance file format a new table gets. A vector table (float32 vectors, every column
    non-nullable: the `emb_*` tables) uses the legacy (0.1) format, whose fixed-size-list pages read
    at memory-copy speed (3-4 GB/s from the page cache here, against 0.2-0.6 GB/s for the 2.x
    formats). That format stores a null as a zero, so any table that may hold nulls keeps the
    default (None); see docs/DECISIONS.md."""
    vectors = any(pa.types.is_fixed_size_list(f.type) and pa.types.is_float32(f.type.value_type) for f in schema)
    return "legacy" if vectors and not any(f.nullable for f in schema) else None
