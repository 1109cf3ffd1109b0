"""DuckDB over the store: every table is a view of the same name.

DuckDB cannot read an old Lance version by itself, so a past version is checked out through
LanceDB and handed to DuckDB as a Lance dataset (scanned lazily, with projection pushdown).
"""

from __future__ import annotations

import re

import pyarrow as pa

from curator.store.store import Store
from schemas import reading
from schemas.errors import RefError

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


def parse_at(specs: tuple[str, ...] | list[str]) -> dict[str, int | str]:
    out: dict[str, int | str] = {}
    for spec in specs:
        m = _AT.match(spec.strip())
        if not m:
            raise RefError(f"--at {spec!r}: expected TABLE@VERSION or TABLE@TAG")
        name, v = m.groups()
        out[name] = int(v) if v.isdigit() else v
    return out


def query(store: Store, sql: str, at: dict[str, int | str] | None = None, params: list | None = None) -> pa.Table:
    views = (AUDIO_CONTEXT_VIEW,) if store.has("audio") else ()
    return reading.query(store.uri, sql, params, at, views)


def ids_where(store: Store, table: str, id_column: str, where: str | None) -> list[str] | None:
    """Ids of `table` rows matching a SQL `where` clause; None when there is no filter."""
    if not where:
        return None
    result = query(store, f"select {id_column} from {table} where {where}")
    return result.column(id_column).to_pylist()
