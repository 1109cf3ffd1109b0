"""Ingest captions (Clotho / AudioCaps style CSVs) and label prompts into `texts`."""

from __future__ import annotations

import os
import posixpath
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import pyarrow as pa

from curator.ingest.sources import read_csv
from curator.store.store import Store, now
from schemas.errors import CuratorError, SchemaError
from schemas.ids import text_id
from schemas.tables import PROMPT_TEMPLATE, TEXTS, check_template

FILE_COLUMNS = ("file_name", "filename", "audio_id", "youtube_id", "fname", "file")


@dataclass
class TextReport:
    added: int = 0
    existing: int = 0
    linked: int = 0
    unlinked: list[str] = field(default_factory=list)  # file names with no clip in the store


def _ends_with(parts: tuple[str, ...], tail: tuple[str, ...]) -> bool:
    """Does a clip path end with `tail` (its last part as the file name or its stem)?"""
    if len(parts) < len(tail) or tuple(parts[len(parts) - len(tail):-1]) != tail[:-1]:
        return False
    return parts[-1] == tail[-1] or PurePosixPath(parts[-1]).stem == tail[-1]


class ClipIndex:
    """Links a captions CSV's file column to clips: an audio_id, or a path relative to the audio
    root (matched against the end of each clip's path, so `b/x.wav` never links to `a/x.wav`). A
    bare name or stem links only when one clip has it; otherwise the error names the candidates."""

    def __init__(self, store: Store, audio_source: str | None):
        self.ids: set[str] = set()
        self.by_name: dict[str, list[tuple[tuple[str, ...], str, str]]] = {}  # name or stem -> (parts, id, uri)
        if not store.has("audio"):
            return
        for row in store.read("audio", columns=["audio_id", "uri", "source"]).to_pylist():
            if audio_source and row["source"] != audio_source:
                continue
            self.ids.add(row["audio_id"])
            p = PurePosixPath(row["uri"].replace("\\", "/"))
            entry = (p.parts, row["audio_id"], row["uri"])
            self.by_name.setdefault(p.name, []).append(entry)
            if p.stem != p.name:
                self.by_name.setdefault(p.stem, []).append(entry)

    def link(self, key: str, where: str) -> str | None:
        if key in self.ids:
            return key
        rel = PurePosixPath(posixpath.normpath(key.replace("\\", "/")))
        tail = rel.parts
        found = {aid: uri for parts, aid, uri in self.by_name.get(rel.name, []) if _ends_with(parts, tail)}
        if len(found) > 1:
            shown = ", ".join(sorted(found.values())[:4]) + (" ..." if len(found) > 4 else "")
            raise SchemaError(f"{where}: {key!r} matches {len(found)} clips ({shown}); give the path relative "
                              "to the audio root (e.g. folder/name.wav)")
        return next(iter(found), None)


def ingest_captions(store: Store, csv_path: str | os.PathLike, source: str,
                    file_column: str | None = None, caption_columns: list[str] | None = None,
                    audio_source: str | None = None) -> TextReport:
    csv_path = Path(csv_path)
    header, rows = read_csv(csv_path, "captions CSV")
    file_column = file_column or next((c for c in FILE_COLUMNS if c in header), None)
    if not file_column or file_column not in header:
        raise SchemaError(f"{csv_path}: no file column (tried {', '.join(FILE_COLUMNS)}); "
                          f"columns: {', '.join(header)}; pass --file-column")
    caption_columns = caption_columns or [c for c in header if c.lower().startswith("caption")]
    missing = [c for c in caption_columns if c not in header]
    if not caption_columns or missing:
        raise SchemaError(f"{csv_path}: caption column(s) {', '.join(missing) or 'caption*'} not found; "
                          f"columns: {', '.join(header)}")
    index = ClipIndex(store, audio_source)
    report = TextReport()
    out, stamp = [], now()
    for line, row in enumerate(rows, start=2):
        key = (row.get(file_column) or "").strip()
        if not key:
            continue
        linked = index.link(key, f"{csv_path}:{line}")
        if linked:
            report.linked += 1
        else:
            report.unlinked.append(key)
        for col in caption_columns:
            text = (row.get(col) or "").strip()
            if not text:
                continue
            out.append({
                # The file name (not the link) keys the id, so linking later does not change it.
                "text_id": text_id(source, text, f"file:{key}", "caption"),
                "text": text, "kind": "caption", "source": source, "audio_id": linked,
                "label_set": None, "label": None, "ingested_at": stamp,
            })
    _upsert_texts(store, out, report)
    return report


def _upsert_texts(store: Store, rows: list[dict], report: TextReport) -> None:
    if not rows:
        return
    data = pa.Table.from_pylist(rows, schema=TEXTS)
    added = store.upsert("texts", data)
    report.added += added
    report.existing += data.num_rows - added
    # Captions ingested before their clips get linked on a later ingest.
    if report.existing and any(r["audio_id"] for r in rows):
        current = {r["text_id"]: r["audio_id"] for r in store.read("texts", columns=["text_id", "audio_id"]).to_pylist()}
        relink = [r for r in rows if r["audio_id"] and current.get(r["text_id"]) is None]
        if relink:
            store.upsert("texts", pa.Table.from_pylist(relink, schema=TEXTS), update=True)


def read_labels_file(path: str | os.PathLike) -> list[str]:
    path = Path(path)
    if not path.is_file():
        raise CuratorError(f"{path}: labels file not found")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise SchemaError(f"{path}: labels file is not UTF-8 text (undecodable byte {exc.object[exc.start]:#04x}); "
                          "save it as UTF-8") from None
    labels = [line.strip() for line in text.splitlines()]
    return [label for label in labels if label and not label.startswith("#")]


def ingest_labels(store: Store, label_set: str, labels: list[str], template: str = PROMPT_TEMPLATE) -> TextReport:
    check_template(template)
    labels = list(dict.fromkeys(label.strip() for label in labels if label.strip()))
    if not labels:
        raise CuratorError(f"label set {label_set!r}: no labels given")
    stamp = now()
    rows = [{
        "text_id": text_id(label_set, template.format(label=label), None, "prompt"),
        "text": template.format(label=label), "kind": "prompt", "source": f"labels:{label_set}",
        "audio_id": None, "label_set": label_set, "label": label, "ingested_at": stamp,
    } for label in labels]
    report = TextReport()
    _upsert_texts(store, rows, report)
    return report
