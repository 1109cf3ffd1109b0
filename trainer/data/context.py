"""Clip context for the scene workflow (DESIGN 6.8-6.9): time features and context captions.

Time features are read in UTC, the zone ingest stores `recorded_at` in (a CSV timestamp without a
zone is taken as UTC, so a recording's local wall-clock hour survives unchanged):

- hour: 0-23;
- part_of_day: night [0, 6), morning [6, 12), afternoon [12, 18), evening [18, 24);
- weekday: 0 = Monday ... 6 = Sunday (Python's `datetime.weekday()`).

`curator/sql.py` defines the same three columns in DuckDB (view `audio_context`); the trainer
cannot import curator, so the definition lives twice and a test checks the two agree.

A context caption is `template.format(...)` over the fields below. A missing city or timestamp
becomes an explicit unknown token, never an error: the text side of the loss then says "unknown"
rather than silently borrowing another clip's context.
"""

from __future__ import annotations

import string
from datetime import datetime, timezone

from schemas.errors import ParameterError

PARTS_OF_DAY = ("night", "morning", "afternoon", "evening")  # 6-hour blocks from midnight
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
DEFAULT_CONTEXT_TEMPLATE = "{label}, recorded in {city} in the {part_of_day}"
UNKNOWN = {"city": "an unknown city", "part_of_day": "unknown part of the day", "hour": "an unknown hour",
           "weekday": "an unknown day", "label": "an unknown scene"}
FIELDS = ("label", "city", "part_of_day", "hour", "weekday")


def _utc(when: datetime) -> datetime:
    return when.astimezone(timezone.utc) if when.tzinfo else when


def part_of_day(hour: int) -> str:
    if not 0 <= hour < 24:
        raise ParameterError(f"hour {hour}: must be in 0-23")
    return PARTS_OF_DAY[hour // 6]


def time_context(when: datetime | None) -> dict:
    """{'hour', 'part_of_day', 'weekday'} of a timestamp (UTC); all None when it is unknown."""
    if when is None:
        return {"hour": None, "part_of_day": None, "weekday": None}
    when = _utc(when)
    return {"hour": when.hour, "part_of_day": part_of_day(when.hour), "weekday": when.weekday()}


def check_template(template: str) -> str:
    """Refuse a template naming a field we do not fill (one clear line, before any training)."""
    try:
        names = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as exc:
        raise ParameterError(f"--context-template {template!r}: {exc}") from None
    bad = [n for n in names if n not in FIELDS]
    if bad:
        raise ParameterError(f"--context-template {template!r}: unknown field(s) {', '.join(bad)}; "
                             f"known: {', '.join(FIELDS)}")
    return template


def context_caption(template: str, label: str | None, city: str | None, when: datetime | None) -> str:
    """The caption of one clip, e.g. 'park, recorded in paris in the morning'."""
    t = time_context(when)
    values = {
        "label": label if label else UNKNOWN["label"],
        "city": city.strip() if city and city.strip() else UNKNOWN["city"],
        "part_of_day": t["part_of_day"] or UNKNOWN["part_of_day"],
        "hour": f"{t['hour']:02d}:00" if t["hour"] is not None else UNKNOWN["hour"],
        "weekday": WEEKDAYS[t["weekday"]] if t["weekday"] is not None else UNKNOWN["weekday"],
    }
    return check_template(template).format(**values)


def city_vocabulary(cities) -> list[str]:
    """Sorted distinct known cities; index len(vocab) (-1 at lookup) is the unknown city."""
    return sorted({c.strip() for c in cities if c and c.strip()})


def city_index(vocab: list[str], cities) -> list[int]:
    """Index of each city in `vocab`, -1 for a missing or unseen city (MetadataFusion's unknown row)."""
    pos = {c: i for i, c in enumerate(vocab)}
    return [pos.get(c.strip(), -1) if c else -1 for c in cities]
