"""Named crash points for fault-injection tests, shared by `curator` and `trainer`.

Library code marks the moments where a crash matters (`crash_point("table created")`); normally a
call costs one dictionary lookup. Tests set the environment variable `CURATOR_CRASH_AT` to a point's
name and the process dies there with `os._exit` (no cleanup, no atexit, no flush: as close to a
kill -9 as Python can make it). `CURATOR_CRASH_AT=name:ENOSPC` instead raises the OSError a full
disk raises, so the full-disk path can be tested where no small filesystem can be mounted.
`CURATOR_CRASH_SKIP=N` lets the first N passes through the point go by.

The points (docs/RELIABILITY.md says what each one guarantees):
"""

from __future__ import annotations

import errno
import os

ENV = "CURATOR_CRASH_AT"
ENV_SKIP = "CURATOR_CRASH_SKIP"
EXIT_CODE = 86  # what a process killed at a crash point exits with (tests tell it from real errors)

POINTS = (
    "table created",  # a table's empty first version is committed, nothing written into it yet
    "rows written",  # a write (append / keyed insert / overwrite) committed, the command not finished
    "version committed",  # a set's rows are a new Lance version, its catalog row is not written yet
    "catalog written",  # the set's catalog row is written, the command has not reported yet
    "candidates written",  # a match run's pairs are written, its `runs` row is not
    "checkpoint staged",  # a checkpoint is complete in its staging folder, not yet committed
    "checkpoint committed",  # the staged checkpoint is renamed to `.next`, nothing moved into place yet
    "checkpoint swapped",  # the checkpoint's files are in place, `.next` not yet removed
)
__doc__ += "".join(f"\n- {p!r}" for p in POINTS) + "\n"

_passes: dict[str, int] = {}


def crash_point(name: str) -> None:
    """Die here (or raise ENOSPC) if the environment names this point; otherwise do nothing."""
    wanted = os.environ.get(ENV)
    if not wanted:
        return
    point, _, how = wanted.partition(":")
    if point != name:
        return
    _passes[name] = _passes.get(name, 0) + 1
    if _passes[name] <= int(os.environ.get(ENV_SKIP, "0") or 0):
        return
    if how.upper() == "ENOSPC":
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), f"<crash point {name!r}>")
    os._exit(EXIT_CODE)
