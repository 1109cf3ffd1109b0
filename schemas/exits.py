"""How a command ends when something stops it: one line and an exit code, for both CLIs.

Library code raises; both CLIs run their click group through `run_click_group`, which hands what
reached it to `exit_line` and prints its line. Ctrl-C and SIGTERM (`sigterm_as_interrupt`) end with
one line saying what was kept and what to run next, exit 130; a full disk with one line, exit 28.
"""

from __future__ import annotations

import errno
import signal
import threading
from contextlib import contextmanager

import click

from schemas.errors import CuratorError, Interrupted, os_error_line

DISK_FULL = ("disk full while writing: every write finished before it is kept and the store still opens; "
             "free space and rerun the same command")
EXIT_INTERRUPTED = 130
EXIT_DISK_FULL = 28  # ENOSPC
EXIT_ERROR = 2


def is_disk_full(exc: BaseException | None) -> bool:
    """Whether an exception (or one it was raised from) is a full disk, however a library wrapped it."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        text = str(exc).lower()
        if "no space left on device" in text or "disk quota exceeded" in text:
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def exit_line(exc: BaseException, interrupted: str) -> tuple[str, int] | None:
    """(the one line to print, the exit code) for an exception that ends a command, or None for a bug
    (let its traceback through). `interrupted` is the command's line for a bare Ctrl-C / SIGTERM."""
    if isinstance(exc, Interrupted):
        return f"interrupted: {exc}", EXIT_INTERRUPTED
    if is_disk_full(exc):
        detail = f" ({exc})" if isinstance(exc, CuratorError) else ""
        return f"error: {DISK_FULL}{detail}", EXIT_DISK_FULL
    if isinstance(exc, CuratorError):
        return f"error: {exc}", EXIT_ERROR
    if isinstance(exc, KeyboardInterrupt) or isinstance(exc.__cause__ or exc.__context__, KeyboardInterrupt):
        return interrupted, EXIT_INTERRUPTED
    return None


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


@contextmanager
def sigterm_as_interrupt():
    """Within the block, SIGTERM (a scheduler's stop, `kill PID`) raises KeyboardInterrupt like Ctrl-C,
    so it ends as cleanly. Only the main thread can own signal handlers; elsewhere this does nothing."""
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        yield
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def run_click_group(group: click.Group, argv: list[str] | None, interrupted: str) -> int:
    """Run a CLI's click group and return its exit code: a CuratorError becomes one `error: ...` line
    on stderr (exit 2); Ctrl-C and SIGTERM end with the CLI's `interrupted` line (exit 130); a full
    disk with one line (exit 28). Anything else is a bug and keeps its traceback."""
    try:
        with sigterm_as_interrupt():
            # In non-standalone mode click returns an Exit's code instead of raising it.
            code = group.main(args=argv, standalone_mode=False)
        return code if isinstance(code, int) else 0
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.UsageError as exc:  # one line, not click's usage block
        where = f" (see `{exc.ctx.command_path} --help`)" if exc.ctx else ""
        click.echo(f"error: {exc.format_message()}{where}", err=True)
        return exc.exit_code
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except BaseException as exc:  # noqa: BLE001 - classified below; anything unknown is re-raised
        ended = exit_line(exc, interrupted)
        if ended is None:
            if isinstance(exc, click.exceptions.Abort):  # a "no" at a confirmation prompt
                click.echo("aborted", err=True)
                return EXIT_INTERRUPTED
            if isinstance(exc, OSError):  # a path we could not read or write
                click.echo(f"error: {os_error_line(exc)}", err=True)
                return EXIT_ERROR
            raise
        click.echo(ended[0], err=True)
        return ended[1]
