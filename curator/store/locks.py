"""Per-table write locks of a local store: `flock` between processes, an RLock between threads.

A lock file is `<store>/_locks/<table>.lock`. The kernel drops a process's `flock` when it dies (kill -9
included), so a crashed writer never leaves a table locked.
"""

from __future__ import annotations

import os
import threading
from contextlib import contextmanager


class FileLocks:
    """Per-table exclusive locks: `flock` between processes, an RLock between threads, re-entrant
    within one thread (a set build holds its table's lock while the store verbs it calls take it)."""

    def __init__(self):
        self._guard = threading.Lock()
        self._entries: dict[str, dict] = {}

    @contextmanager
    def hold(self, path: str, blocking: bool = True):
        import fcntl

        with self._guard:
            entry = self._entries.setdefault(path, {"rlock": threading.RLock(), "fd": None, "count": 0})
        if not entry["rlock"].acquire(blocking=blocking):
            yield False
            return
        try:
            if entry["count"] == 0:
                fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
                except BlockingIOError:
                    os.close(fd)
                    yield False
                    return
                entry["fd"] = fd
            entry["count"] += 1
            try:
                yield True
            finally:
                entry["count"] -= 1
                if entry["count"] == 0:
                    fcntl.flock(entry["fd"], fcntl.LOCK_UN)
                    os.close(entry["fd"])
                    entry["fd"] = None
        finally:
            entry["rlock"].release()
