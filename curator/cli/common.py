"""Shared CLI plumbing: the lazily opened store and the one-line error contract."""

from __future__ import annotations

import os
import sys

import click

from curator.store.store import Store
from schemas.errors import CuratorError
from schemas.exits import run_click_group


class StoreContext:
    """Holds the store URI; opens the store on first use so `--help` never touches disk."""

    def __init__(self, uri: str):
        self.uri = uri
        self._store: Store | None = None

    def store(self, create: bool = True) -> Store:
        if self._store is None:
            self._store = Store.open(self.uri, create=create)
            for note in self._store.notes:  # what opening had to fix, one line each
                click.echo(f"note: {note}", err=True)
        return self._store


pass_store = click.make_pass_decorator(StoreContext)

EXIT_CODES = ("Exit codes: 0 ok; 1 some items failed and were recorded (table errors) or a check found "
              "problems; 2 bad input (one `error: ...` line on stderr); 28 disk full (free space, rerun); 130 interrupted (rerun to resume).")
FORMATS = ("table", "csv", "json")
FORMAT_HELP = ("table for a terminal; csv (header + rows, no trailing blank line); json (one JSON array of "
               "row objects).")


def format_option(choices=FORMATS):
    """The `--format` option of every list or report command (the same help everywhere)."""
    return click.option("--format", "fmt", type=click.Choice(list(choices)), default="table", show_default=True,
                        help=FORMAT_HELP)


def _late_store(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    if value is not None:
        ctx.find_object(StoreContext).uri = value


def script_friendly(command: click.Command) -> click.Command:
    """Give a command (and a group's subcommands) `--store` after the subcommand name too
    (`curator tables --store S` = `curator --store S tables`) and the exit codes in its --help."""
    if not any(p.name == "late_store" for p in command.params):
        command.params.append(click.Option(["--store", "late_store"], expose_value=False, callback=_late_store,
                                           metavar="URI", help="Store folder or URI (same as `curator --store`)."))
        if not command.epilog:
            command.epilog = EXIT_CODES
    for sub in getattr(command, "commands", {}).values():
        script_friendly(sub)
    return command


def option_group(*options):
    """One decorator applying several click options in the order listed, for options that a
    family of commands shares."""

    def apply(f):
        for option in reversed(options):
            f = option(f)
        return f

    return apply


def fail(message: str, code: int = 2) -> None:
    """Raise a click exception that prints `error: message` on one line and exits with `code`."""
    exc = click.ClickException(message)
    exc.exit_code = code
    raise exc


INTERRUPTED = ("interrupted: every write finished before the interruption is kept (each is one atomic "
               "commit), nothing is half-written; rerun the same command to finish (nothing is done twice)")


def run_main(group: click.Group, argv: list[str] | None = None) -> int:
    """Run curator's click group: errors, Ctrl-C and a full disk end with one line (`schemas.exits`)."""
    return run_click_group(group, argv, INTERRUPTED)


def check_out_path(out: str | None) -> None:
    """Refuse an --out whose folder does not exist (or is not a folder) before any work is done."""
    if not out:
        return
    folder = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(folder):
        raise CuratorError(f"--out {out}: folder {folder} does not exist")
    if os.path.isdir(out):
        raise CuratorError(f"--out {out}: is a folder; give a file path")


def _flat_for_csv(df):
    """CSV has no nested values: list / struct columns are written as JSON text."""
    import json

    import polars as pl

    nested = [name for name, dtype in df.schema.items() if dtype.is_nested()]
    if not nested:
        return df
    return df.with_columns([
        pl.Series(name, [None if v is None else json.dumps(v, default=str) for v in df.get_column(name).to_list()],
                  dtype=pl.String) for name in nested])


def echo_table(table, fmt: str = "table", out: str | None = None) -> None:
    """Print or write an Arrow table as table / csv / json / parquet."""
    import polars as pl

    check_out_path(out)
    df = pl.from_arrow(table)
    if fmt == "parquet":
        if not out:
            raise CuratorError("--format parquet needs --out PATH")
        try:
            df.write_parquet(out)
        except OSError as exc:
            raise CuratorError(f"--out {out}: cannot write ({exc.strerror or exc})") from None
        return
    if fmt == "csv":
        # polars ends every row with a newline and echo adds one: no blank last line for `| tail -n 1`
        text = _flat_for_csv(df).write_csv().rstrip("\n")
    elif fmt == "json":
        text = df.write_json()
    else:
        with pl.Config(tbl_rows=200, tbl_cols=30, fmt_str_lengths=80, tbl_hide_dataframe_shape=True,
                       tbl_formatting="ASCII_MARKDOWN", tbl_hide_column_data_types=True):
            text = str(df)
    if out:
        try:
            with open(out, "w", encoding="utf-8") as fh:
                fh.write(text + "\n")
        except OSError as exc:
            raise CuratorError(f"--out {out}: cannot write ({exc.strerror or exc})") from None
    else:
        click.echo(text)


def echo_report(record: dict, fmt: str, lines: list[str], table=None) -> None:
    """A report command's output: `lines` (and `table`) for a terminal; with --format json one JSON
    object (`record`, plus `rows`: the table's rows); with csv the table, or `record` as one row.
    With csv / json, stdout carries only the data, so a script can parse it whole."""
    import json

    if fmt == "table":
        for line in lines:
            click.echo(line)
        if table is not None and table.num_rows:
            echo_table(table)
    elif fmt == "json":
        doc = dict(record)
        if table is not None:
            doc["rows"] = table.to_pylist()
        click.echo(json.dumps(doc, default=str))
    else:
        import pyarrow as pa

        if table is None:
            flat = {k: json.dumps(v, default=str) if isinstance(v, (dict, list)) else v for k, v in record.items()}
            table = pa.Table.from_pylist([flat])
        echo_table(table, "csv")


def progress(iterable=None, total=None, desc: str = "", unit: str = "it"):
    """A tqdm bar on a terminal, silent otherwise (CI logs stay readable)."""
    from tqdm import tqdm

    return tqdm(iterable, total=total, desc=desc, unit=unit, disable=not sys.stderr.isatty(), dynamic_ncols=True)
