"""Ingest captions (Clotho / AudioCaps style CSVs) and label prompts into `texts`."""

from __future__ import annotations

import os
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


def _clip_index(store: Store, audio_source: str | None) -> tuple[dict[str, str], set[str]]:
    """Map file name, relative-looking path tails and audio_id -> audio_id, for linking captions."""
    if not store.has("audio"):
        return {}, set()
    audio = store.read("audio", columns=["audio_id", "uri", "source"]).to_pylist()
    by_name: dict[str, str] = {}
    ids = set()
    for row in audio:
        if audio_source and row["source"] != audio_source:
            continue
        ids.add(row["audio_id"])
        p = PurePosixPath(row["uri"].replace("\\", "/"))
        by_name.setdefault(p.name, row["audio_id"])
        by_name.setdefault(p.stem, row["audio_id"])
    return by_name, ids


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
    by_name, ids = _clip_index(store, audio_source)
    report = TextReport()
    out, stamp = [], now()
    for row in rows:
        key = (row.get(file_column) or "").strip()
        if not key:
            continue
        linked = key if key in ids else by_name.get(key) or by_name.get(PurePosixPath(key).name)
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
