"""Reading review decisions (accept / reject per (text_id, audio_id) pair) written by the review page.

Accepted formats, chosen by suffix:
- `.csv`: a header row with at least `text_id,audio_id,decision`;
- `.json`: a list of objects, or an object with a `decisions` list;
- `.jsonl` / `.ndjson`: one object per line.
Decisions are case-insensitive `accept` / `reject`. When a pair appears more than once, the last
entry wins (the review page appends as the reviewer changes their mind).
"""

from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from schemas.errors import ParameterError

VALID = ("accept", "reject")
REQUIRED = ("text_id", "audio_id", "decision")


@dataclass
class Decisions:
    path: str
    sha256: str
    by_pair: dict[tuple[str, str], str] = field(default_factory=dict)  # (text_id, audio_id) -> decision

    @property
    def accepted(self) -> set[tuple[str, str]]:
        return {k for k, v in self.by_pair.items() if v == "accept"}

    @property
    def rejected(self) -> set[tuple[str, str]]:
        return {k for k, v in self.by_pair.items() if v == "reject"}

    def lineage(self) -> dict:
        return {"path": self.path, "sha256": self.sha256, "accepted": len(self.accepted),
                "rejected": len(self.rejected)}


def _records(path: Path, text: str) -> list[tuple[str, dict]]:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        reader = csv.DictReader(text.splitlines())
        missing = [c for c in REQUIRED if c not in (reader.fieldnames or [])]
        if missing:
            raise ParameterError(f"decisions file {path}: missing column(s) {', '.join(missing)}")
        return [(f"line {i + 2}", r) for i, r in enumerate(reader)]
    if suffix in (".jsonl", ".ndjson"):
        out = []
        for i, line in enumerate(text.splitlines()):
            if line.strip():
                out.append((f"line {i + 1}", _json(path, line, f"line {i + 1}")))
        return out
    if suffix == ".json":
        data = _json(path, text, "file")
        if isinstance(data, dict):
            data = data.get("decisions")
        if not isinstance(data, list):
            raise ParameterError(f"decisions file {path}: expected a list of decisions or {{\"decisions\": [...]}}")
        return [(f"entry {i + 1}", r) for i, r in enumerate(data)]
    raise ParameterError(f"decisions file {path}: unknown format {suffix or '(no suffix)'}; use .csv, .json or .jsonl")


def _json(path: Path, text: str, where: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ParameterError(f"decisions file {path}: {where} is not valid JSON ({exc.msg})") from None


def read_decisions(path: str) -> Decisions:
    p = Path(path)
    if not p.is_file():
        raise ParameterError(f"decisions file {path}: no such file")
    raw = p.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ParameterError(f"decisions file {path}: not UTF-8 text") from None
    result = Decisions(path=str(p.resolve()), sha256=hashlib.sha256(raw).hexdigest())
    for where, rec in _records(p, text):
        if not isinstance(rec, dict):
            raise ParameterError(f"decisions file {path}: {where} is not an object")
        values = {k: (str(rec.get(k)).strip() if rec.get(k) is not None else "") for k in REQUIRED}
        empty = [k for k in REQUIRED if not values[k]]
        if empty:
            raise ParameterError(f"decisions file {path}: {where} has no {', '.join(empty)}")
        decision = values["decision"].lower()
        if decision not in VALID:
            raise ParameterError(f"decisions file {path}: {where} has decision {values['decision']!r}; "
                                 "expected accept or reject")
        result.by_pair[(values["text_id"], values["audio_id"])] = decision
    return result
