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
from schemas.filters import where_clause

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


def query(store: Store, sql: str, at: dict[str, int | str] | None = None, params: list | None = None,
          what: str = "query failed") -> pa.Table:
    """Run one statement of our own (user filters go through `where_clause` first; user queries
    through `schemas.filters.read_only_statement`); `what` starts the error line."""
    views = (AUDIO_CONTEXT_VIEW,) if store.has("audio") else ()
    return reading.query(store.uri, sql, params, at, views, what)


def filter_query(store: Store, select: str, where: str, option: str, rest: str = "",
                 params: list | None = None, fixed: str | None = None) -> pa.Table:
    """`<select> where [(<fixed>) and] (<where>) <rest>`: `where` is the user's filter, checked to be
    one boolean expression first (schemas.filters); `fixed` is a condition of our own; a DuckDB
    error names `option`."""
    clause = where_clause(where, option)
    cond = f"({fixed}) and {clause}" if fixed else clause
    return query(store, f"{select} where {cond} {rest}", params=params, what=f"{option} {where!r}")


def ids_where(store: Store, table: str, id_column: str, where: str | None, option: str = "--where") -> list[str] | None:
    """Ids of `table` rows matching the user's filter `where` (one boolean expression, given by
    `option`); None when there is no filter."""
    if not where:
        return None
    result = filter_query(store, f"select {id_column} from {table}", where, option)
    return result.column(id_column).to_pylist()
