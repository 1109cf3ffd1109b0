"""Stable identifiers.

An id must survive re-ingesting the same files from another machine or another mount point, so it
is derived from (source, path relative to the ingested root), never from an absolute path.
"""

from __future__ import annotations

import hashlib
import posixpath
import re

from schemas.errors import ModelError, SchemaError

_SAFE = re.compile(r"[^a-z0-9_]+")


def _digest(*parts: str, n: int = 16) -> str:
    h = hashlib.sha1("\x1f".join(parts).encode("utf-8")).hexdigest()
    return h[:n]


def normalise_relative(relative_path: str) -> str:
    """The canonical spelling of a path relative to an ingest root: forward slashes, no `.` segments,
    no trailing slash. Characters are never stripped: `.cache/x.wav` and `cache/x.wav` stay two paths."""
    rel = posixpath.normpath(str(relative_path).replace("\\", "/"))
    if rel in ("", ".") or rel.startswith("/"):
        raise SchemaError(f"{relative_path!r} is not a path relative to an audio root")
    return rel


def audio_id(source: str, relative_path: str) -> str:
    """`<source>:<16 hex>` from the source name and the clip's normalised relative path."""
    return f"{source}:{_digest(source, normalise_relative(relative_path))}"


def absolute_audio_id(source: str, absolute_path: str) -> str:
    """The id of a clip kept outside its audio root on request: from its absolute path (which can
    never equal a relative one, so it cannot merge with a clip inside the root)."""
    path = posixpath.normpath(str(absolute_path).replace("\\", "/"))
    if not path.startswith("/"):
        raise SchemaError(f"{absolute_path!r} is not an absolute path")
    return f"{source}:{_digest(source, 'abs:' + path)}"


def text_id(source: str, text: str, audio_id: str | None = None, kind: str = "caption") -> str:
    """A caption is identified by its text and the clip it describes (the same sentence can caption
    two clips); a prompt by its label set and text."""
    return f"{kind[0]}:{_digest(source, kind, audio_id or '', text)}"


def model_slug(name: str) -> str:
    """Model names become part of table names (`emb_<slug>_audio`), so keep them SQL-safe."""
    slug = _SAFE.sub("_", name.lower()).strip("_")
    if not slug:
        raise ModelError(f"model name {name!r} has no usable characters (letters or digits)")
    return slug
