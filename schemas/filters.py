"""User SQL, checked before it runs: a WHERE option is one boolean expression, a query one read-only
statement.

DuckDB runs every statement of a `;`-separated string, so text spliced into SQL can run
`COPY ... TO`, `ATTACH` or `INSTALL`. Two gates, both built on DuckDB's own parser
(`duckdb.extract_statements`, which returns each statement with its type):

- `where_clause(expr, option)`: the fragment a `--*-where` option gives. Its parentheses must
  balance outside string literals and quoted names (so `1=1) union select ... where (1` cannot
  close the parentheses it is wrapped in), and `select 1 from t where (<expr>)` must parse as exactly
  one SELECT statement. Returns `(<expr>)`, ready to follow `where`.
- `read_only_statement(sql)`: what `curator query` runs. Exactly one statement of type SELECT
  (which covers WITH, FROM-first, VALUES, DESCRIBE, SHOW, SUMMARIZE), or EXPLAIN of one. COPY,
  ATTACH, INSTALL / LOAD, SET, PRAGMA, CALL and every DDL / DML statement are refused. Reading a
  local CSV or Parquet inside a SELECT stays possible; writing a file is `--out`'s job.

Errors are `QueryError`s naming the option (or `query`) and the reason, in one line.
"""

from __future__ import annotations

import re

from schemas.errors import QueryError

READ_ONLY_KINDS = "SELECT, WITH, DESCRIBE, SHOW, SUMMARIZE, EXPLAIN"
_PROBE = "__curator_filter__"
_EXPLAIN = re.compile(r"^\s*explain\s+(analy[sz]e\s+)?(\([^()]*\)\s*)?", re.IGNORECASE)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else exc.__class__.__name__


def _statements(sql: str, what: str) -> list:
    import duckdb

    try:
        return duckdb.extract_statements(sql)
    except duckdb.Error as exc:
        raise QueryError(f"{what}: not valid SQL ({_first_line(exc)})") from None


def _scan(expr: str, what: str) -> None:
    """Refuse `;`, comments and unbalanced parentheses outside '...' literals and "..." names (for
    a message that says what is wrong; `_plain_filter` is the check that cannot be fooled)."""
    depth, i, n = 0, 0, len(expr)
    while i < n:
        c = expr[i]
        if c in "'\"":
            end = i + 1
            while True:  # a doubled quote inside a literal is an escaped quote
                end = expr.find(c, end)
                if end < 0:
                    raise QueryError(f"{what}: unterminated {c}...{c}")
                if end + 1 < n and expr[end + 1] == c:
                    end += 2
                    continue
                break
            i = end + 1
            continue
        if c == ";":
            raise QueryError(f"{what}: holds a ';' (a filter is one expression, not statements)")
        if expr.startswith("--", i) or expr.startswith("/*", i):
            raise QueryError(f"{what}: holds an SQL comment (a filter is one expression)")
        if c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
            if depth < 0:
                raise QueryError(f"{what}: closes a parenthesis it did not open")
        i += 1
    if depth:
        raise QueryError(f"{what}: leaves {depth} parenthesis(es) open")


def where_clause(expr: str, option: str = "--where") -> str:
    """`(<expr>)` for use after `where`, once `expr` is known to be one expression (see module doc)."""
    expr = str(expr)
    what = f"{option} {expr!r}" if len(expr) <= 80 else option
    if not expr.strip():
        raise QueryError(f"{option}: empty filter")
    _scan(expr, what)
    wrapped = f"select 1 from {_PROBE} where ({expr})"
    statements = _statements(wrapped, what)
    if len(statements) != 1 or not _plain_filter(wrapped):
        raise QueryError(f"{what}: not one boolean expression (a filter cannot add clauses or queries "
                         "around the WHERE it is put in)")
    return f"({expr})"


def _plain_filter(wrapped: str) -> bool:
    """Does `wrapped` parse as `select 1 from _PROBE where ...` and nothing else (no UNION, ORDER BY,
    LIMIT, GROUP BY, ... smuggled in through quoting the scan above could misread)?"""
    import json

    import duckdb

    con = duckdb.connect()
    try:
        tree = json.loads(con.execute("select json_serialize_sql(?)", [wrapped]).fetchone()[0])
    except duckdb.Error:
        return False
    finally:
        con.close()
    if tree.get("error") or len(tree.get("statements", [])) != 1:
        return False
    node = tree["statements"][0]["node"]
    source = node.get("from_table") or {}
    return (node.get("type") == "SELECT_NODE" and not node.get("modifiers")
            and not (node.get("cte_map") or {}).get("map") and len(node.get("select_list", [])) == 1
            and source.get("type") == "BASE_TABLE" and source.get("table_name") == _PROBE
            and not node.get("group_expressions") and not node.get("group_sets")
            and node.get("having") is None and node.get("qualify") is None and node.get("sample") is None
            and node.get("where_clause") is not None)


def read_only_statement(sql: str, what: str = "query") -> str:
    """`sql` unchanged if it is one read-only statement; QueryError saying why not otherwise."""
    import duckdb

    statements = _statements(sql, what)
    if len(statements) != 1:
        raise QueryError(f"{what}: {len(statements)} statements given; run one statement "
                         f"({READ_ONLY_KINDS}) at a time")
    kind = statements[0].type
    if kind == duckdb.StatementType.EXPLAIN:
        inner = _EXPLAIN.sub("", sql, count=1)
        if inner == sql:
            raise QueryError(f"{what}: cannot tell which statement this EXPLAIN explains")
        read_only_statement(inner, what)
        return sql
    if kind != duckdb.StatementType.SELECT:
        name = "INSTALL / LOAD" if kind == duckdb.StatementType.LOAD else kind.name.replace("_", " ")
        raise QueryError(f"{what}: {name} statements are refused; `curator query` is read-only "
                         f"({READ_ONLY_KINDS}); write results with --out PATH")
    return sql
