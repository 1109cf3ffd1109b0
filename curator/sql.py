"""DuckDB over the store: every table is a view of the same name.

DuckDB cannot read an old Lance version by itself, so a past version is checked out through
LanceDB and handed to DuckDB as a Lance dataset (scanned lazily, with projection pushdown).
"""

from __future__ import annotations

import re

import duckdb
import pyarrow as pa

from curator.store import Store
from schemas.errors import CuratorError, RefError, StoreError

# `audio` plus UTC time features; trainer/context.py computes the same three (a test checks they
# agree): hour 0-23, part_of_day night [0,6) / morning [6,12) / afternoon [12,18) / evening [18,24),
# weekday 0 = Monday ... 6 = Sunday. Null recorded_at gives null features.
AUDIO_CONTEXT_VIEW = """
create view audio_context as
select *,
       hour(timezone('UTC', recorded_at)) as hour,
       case when recorded_at is null then null
            else ['night', 'morning', 'afternoon', 'evening'][hour(timezone('UTC', recorded_at)) // 6 + 1]
       end as part_of_day,
       isodow(timezone('UTC', recorded_at)) - 1 as weekday
from audio
"""

_AT = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)@(\w[\w.\-]*)$")


class QueryError(CuratorError):
    """DuckDB rejected the SQL (message says where)."""


def parse_at(specs: tuple[str, ...] | list[str]) -> dict[str, int | str]:
    out: dict[str, int | str] = {}
    for spec in specs:
        m = _AT.match(spec.strip())
        if not m:
            raise RefError(f"--at {spec!r}: expected TABLE@VERSION or TABLE@TAG")
        name, v = m.groups()
        out[name] = int(v) if v.isdigit() else v
    return out


def _dataset(store: Store, name: str, version: int | str | None):
    table = store.open_existing(name)
    if version is not None:
        store._checkout(table, name, version)
    try:
        return table.to_lance()
    except Exception:  # no pylance: fall back to materialising Arrow
        return table.to_arrow()


def connect(store: Store, at: dict[str, int | str] | None = None, tables: list[str] | None = None):
    """A DuckDB connection with a view per store table (`at` pins some tables to a version)."""
    at = at or {}
    unknown = [n for n in at if not store.has(n)]
    if unknown:
        raise StoreError(f"--at names table(s) not in the store: {', '.join(unknown)}")
    con = duckdb.connect()
    for name in tables or store.names():
        # register() keeps a reference to the dataset, which DuckDB scans lazily per query.
        con.register(name, _dataset(store, name, at.get(name)))
    if "audio" in (tables or store.names()):
        con.execute(AUDIO_CONTEXT_VIEW)
    return con


def query(store: Store, sql: str, at: dict[str, int | str] | None = None, params: list | None = None) -> pa.Table:
    con = connect(store, at)
    try:
        return con.sql(sql, params=params or None).to_arrow_table()
    except duckdb.Error as exc:
        raise QueryError(f"query failed: {str(exc).splitlines()[0]}") from None
    finally:
        con.close()


def ids_where(store: Store, table: str, id_column: str, where: str | None) -> list[str] | None:
    """Ids of `table` rows matching a SQL `where` clause; None when there is no filter."""
    if not where:
        return None
    result = query(store, f"select {id_column} from {table} where {where}")
    return result.column(id_column).to_pylist()
