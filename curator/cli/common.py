"""Shared CLI plumbing: the lazily opened store and the one-line error contract."""

from __future__ import annotations

import sys

import click

from curator.store.store import Store
from schemas.errors import CuratorError
from schemas.exits import exit_line, sigterm_as_interrupt


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
    """Run a click group; a CuratorError becomes one `error: ...` line on stderr and exit code 2.

    Ctrl-C and SIGTERM end with one line saying what was kept and what to run next (exit 130), a
    full disk with one line, not a traceback (exit 28): see `schemas.exits`."""
    try:
        with sigterm_as_interrupt():
            # In non-standalone mode click returns an Exit's code instead of raising it.
            code = group.main(args=argv, standalone_mode=False)
        return code if isinstance(code, int) else 0
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except BaseException as exc:  # noqa: BLE001 - classified below; anything unknown is re-raised
        ended = exit_line(exc, INTERRUPTED)
        if ended is None:
            if isinstance(exc, click.exceptions.Abort):  # a "no" at a confirmation prompt
                click.echo("aborted", err=True)
                return 130
            raise
        click.echo(ended[0], err=True)
        return ended[1]


def echo_table(table, fmt: str = "table", out: str | None = None) -> None:
    """Print or write an Arrow table as table / csv / json / parquet."""
    import polars as pl

    df = pl.from_arrow(table)
    if fmt == "parquet":
        if not out:
            raise CuratorError("--format parquet needs --out PATH")
        df.write_parquet(out)
        return
    if fmt == "csv":
        text = df.write_csv()
    elif fmt == "json":
        text = df.write_json()
    else:
        with pl.Config(tbl_rows=200, tbl_cols=30, fmt_str_lengths=80, tbl_hide_dataframe_shape=True,
                       tbl_formatting="ASCII_MARKDOWN", tbl_hide_column_data_types=True):
            text = str(df)
    if out:
        with open(out, "w", encoding="utf-8") as fh:
            fh.write(text)
    else:
        click.echo(text)


def progress(iterable=None, total=None, desc: str = "", unit: str = "it"):
    """A tqdm bar on a terminal, silent otherwise (CI logs stay readable)."""
    from tqdm import tqdm

    return tqdm(iterable, total=total, desc=desc, unit=unit, disable=not sys.stderr.isatty(), dynamic_ncols=True)
