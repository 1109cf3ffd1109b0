"""Parsing of `name`, `name@7`, `name@tag` references (sets) and `table@7` (table versions)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from schemas.errors import RefError

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_TAG = re.compile(r"^[A-Za-z0-9_.\-]+$")


@dataclass(frozen=True)
class Ref:
    """A reference to a versioned thing. Exactly one of `version` / `tag` is set, or neither
    (meaning "latest"; whoever resolves it records the number it resolved to)."""

    name: str
    version: int | None = None
    tag: str | None = None

    @property
    def is_latest(self) -> bool:
        return self.version is None and self.tag is None

    def __str__(self) -> str:
        if self.version is not None:
            return f"{self.name}@{self.version}"
        if self.tag is not None:
            return f"{self.name}@{self.tag}"
        return self.name


def parse_ref(text: str) -> Ref:
    """Parse `name`, `name@7` or `name@tag`; raise RefError naming the problem."""
    if not isinstance(text, str) or not text.strip():
        raise RefError("empty reference: expected name, name@VERSION or name@TAG")
    text = text.strip()
    name, sep, rest = text.partition("@")
    if not _NAME.match(name):
        raise RefError(
            f"bad reference {text!r}: name {name!r} must start with a letter and use only letters, digits, _"
        )
    if not sep:
        return Ref(name)
    if not rest:
        raise RefError(f"bad reference {text!r}: nothing after '@'")
    if rest.isdigit():
        version = int(rest)
        if version < 1:
            raise RefError(f"bad reference {text!r}: versions start at 1")
        return Ref(name, version=version)
    if not _TAG.match(rest):
        raise RefError(f"bad reference {text!r}: tag {rest!r} has characters outside [A-Za-z0-9_.-]")
    return Ref(name, tag=rest)
