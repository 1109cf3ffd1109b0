"""The store marker: `curator-store.json` in a store folder, with its format version. A non-empty
folder without it is not a store (a typo'd `--store` must never get tables written among someone's
files), and a newer format than this curator understands is refused, naming the version.
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone

from schemas import reading
from schemas.errors import StoreError

MARKER = "curator-store.json"
FORMAT_VERSION = 1


def read_marker(uri: str) -> dict | None:
    """The store marker's contents (None: a local folder without one; object stores: always {})."""
    if not reading.is_local(uri):
        return {}
    path = reading.local_path(uri) / MARKER
    if not path.exists():
        return None
    try:
        marker = json.loads(path.read_text(encoding="utf-8"))
        int(marker["format"])
    except (ValueError, KeyError, TypeError, OSError) as exc:
        raise StoreError(f"store {uri}: {MARKER} is unreadable ({exc}); `curator doctor --repair` rewrites it") from None
    return marker


def write_marker(uri: str) -> None:
    """Write the marker atomically (a temporary file renamed into place)."""
    root = reading.local_path(uri)
    tmp = root / f".{MARKER}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps({"format": FORMAT_VERSION, "created_at": datetime.now(timezone.utc).isoformat(),
                               "created_by": "curator"}, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, root / MARKER)


def check_format(uri: str, marker: dict) -> None:
    version = int(marker.get("format", FORMAT_VERSION))
    if version > FORMAT_VERSION:
        raise StoreError(f"store {uri}: format version {version} is newer than this curator understands "
                         f"({FORMAT_VERSION}); upgrade curator to open it")
