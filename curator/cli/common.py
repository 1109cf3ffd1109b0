"""Shared CLI plumbing: the lazily opened store and the one-line error contract."""

from __future__ import annotations

import os
import sys

import click

from curator.store.store import Store
from schemas.errors import CuratorError, os_error_line


class StoreContext:
    """Holds the store URI; opens the store on first use so `--help` never touches disk."""

    def __init__(self, uri: str):
        self.uri = uri
        self._store: Store | None = None

    def store(self, create: bool = True) -> Store:
        if self._store is None:
            self._store = Store.open(self.uri, create=create)
        return self._store


pass_store = click.make_pass_decorator(StoreContext)


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


def run_main(group: click.Group, argv: list[str] | None = None) -> int:
    """Run a click group; a CuratorError becomes one `error: ...` line on stderr and exit code 2."""
    try:
        # In non-standalone mode click returns an Exit's code instead of raising it.
        code = group.main(args=argv, standalone_mode=False)
        return code if isinstance(code, int) else 0
    except CuratorError as exc:
        click.echo(f"error: {exc}", err=True)
        return 2
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.UsageError as exc:  # one line, not click's usage block
        where = f" (see `{exc.ctx.command_path} --help`)" if exc.ctx else ""
        click.echo(f"error: {exc.format_message()}{where}", err=True)
        return exc.exit_code
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except OSError as exc:
        click.echo(f"error: {os_error_line(exc)}", err=True)
        return 2
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return 130
    except KeyboardInterrupt:
        click.echo("interrupted; rerun the same command to resume", err=True)
        return 130


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
        text = _flat_for_csv(df).write_csv()
    elif fmt == "json":
        text = df.write_json()
    else:
        with pl.Config(tbl_rows=200, tbl_cols=30, fmt_str_lengths=80, tbl_hide_dataframe_shape=True,
                       tbl_formatting="ASCII_MARKDOWN", tbl_hide_column_data_types=True):
            text = str(df)
    if out:
        try:
            with open(out, "w", encoding="utf-8") as fh:
                fh.write(text)
        except OSError as exc:
            raise CuratorError(f"--out {out}: cannot write ({exc.strerror or exc})") from None
    else:
        click.echo(text)


def progress(iterable=None, total=None, desc: str = "", unit: str = "it"):
    """A tqdm bar on a terminal, silent otherwise (CI logs stay readable)."""
    from tqdm import tqdm

    return tqdm(iterable, total=total, desc=desc, unit=unit, disable=not sys.stderr.isatty(), dynamic_ncols=True)
