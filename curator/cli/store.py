"""`curator query`, `curator tables`, `curator versions`, `curator tag`, `curator doctor`."""

from __future__ import annotations

import click

from curator.cli.common import check_out_path, echo_table, format_option, pass_store
from curator.store.sql import parse_at, query


@click.command("query")
@click.argument("sql")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json", "parquet"]), default="table",
              show_default=True)
@click.option("--out", type=click.Path(dir_okay=False), help="Write the result to a file instead of stdout.")
@click.option("--at", "at_specs", multiple=True, metavar="TABLE@VERSION",
              help="Read a past version (or tag) of a table; repeatable.")
@pass_store
def query_cmd(ctx, sql, fmt, out, at_specs):
    """Run DuckDB SQL over the store: every table is a view of the same name.

    One read-only statement (SELECT, WITH, DESCRIBE, SHOW, SUMMARIZE, EXPLAIN); COPY, ATTACH,
    INSTALL, LOAD, SET, PRAGMA and statements that change tables are refused. A SELECT may read
    a CSV or Parquet file of your own (`from 'my.csv'`); --out is the only way to write a file.

    \b
    Examples:
      curator query "select source, count(*) n from audio group by 1"
      curator query --at audio@2 "select count(*) from audio"
      curator query "select * from candidates where score > 0.5" --format parquet --out pairs.parquet
    """
    from schemas.filters import read_only_statement

    read_only_statement(sql)
    check_out_path(out)
    store = ctx.store(create=False)
    echo_table(query(store, sql, parse_at(at_specs)), fmt, out)


@click.command("tables")
@format_option()
@pass_store
def tables_cmd(ctx, fmt):
    """List the store's tables with rows, current version and size on disk.

    \b
    Example:
      curator --store ./store tables
    """
    import pyarrow as pa

    infos = ctx.store(create=False).info()
    echo_table(pa.Table.from_pylist(
        [{"table": i.name, "rows": i.rows, "version": i.version,
          "size_mb": None if i.size_bytes is None else round(i.size_bytes / 1e6, 3)} for i in infos],
        schema=pa.schema([("table", pa.string()), ("rows", pa.int64()), ("version", pa.int64()),
                          ("size_mb", pa.float64())])), fmt)


@click.command("versions")
@click.argument("table")
@format_option()
@pass_store
def versions_cmd(ctx, table, fmt):
    """List the versions of a table (with tags); any of them can be read with `query --at`.

    \b
    Example:
      curator versions audio
    """
    import pyarrow as pa

    rows = ctx.store(create=False).versions(table)
    echo_table(pa.Table.from_pylist([{**r, "tags": ", ".join(r["tags"])} for r in rows]), fmt)


@click.command("tag")
@click.argument("table")
@click.argument("version", type=int)
@click.argument("tag")
@pass_store
def tag_cmd(ctx, table, version, tag):
    """Name a table version so it can be read as TABLE@TAG.

    \b
    Example:
      curator tag audio 3 before-cleanup
    """
    ctx.store(create=False).tag(table, version, tag)
    click.echo(f"tagged {table}@{version} as {table}@{tag}")


@click.command("doctor")
@click.option("--repair", is_flag=True, help="Fix what can be fixed, saying what was done.")
@pass_store
def doctor_cmd(ctx, repair):
    """Check every table of the store (opens, rows, versions, duplicate keys, orphans); --repair fixes.

    Exit code 0 when the store is healthy (after --repair: when nothing is left to fix), 1 otherwise.

    \b
    Example:
      curator doctor
      curator doctor --repair
    """
    import pyarrow as pa

    from curator.store.doctor import check_store

    report = check_store(ctx.uri, repair=repair)
    echo_table(pa.Table.from_pylist(
        [{"table": t.name, "rows": t.rows, "version": t.version, "versions": t.versions,
          "duplicates": t.duplicates, "ok": t.error is None and not t.duplicates} for t in report.tables],
        schema=pa.schema([("table", pa.string()), ("rows", pa.int64()), ("version", pa.int64()),
                          ("versions", pa.int64()), ("duplicates", pa.int64()), ("ok", pa.bool_())])))
    for line in report.repaired:
        click.echo(f"repaired: {line}")
    for line in report.notes:
        click.echo(f"note: {line}")
    for line in report.problems:
        click.echo(f"problem: {line}")
    click.echo("healthy" if report.healthy else f"{len(report.problems)} problem(s)"
               + ("" if repair or report.healthy else "; run `curator doctor --repair` to fix what can be fixed"))
    if not report.healthy:
        raise click.exceptions.Exit(1)
