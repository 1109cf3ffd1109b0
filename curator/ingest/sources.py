"""Where clips come from: a folder scan or a manifest CSV (ESC-50, UrbanSound8K and scenes presets,
or columns and a path template of your own). Each yields `ClipSpec`s; nothing is read from the
audio files here.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

from schemas.errors import CuratorError, SchemaError
from schemas.ids import absolute_audio_id

AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".mp3", ".oga", ".aiff", ".aif"}


@dataclass
class ClipSpec:
    """One clip to ingest, before its header is read."""

    path: Path
    relative: str
    source: str
    split: str | None = None
    labels: list[str] = field(default_factory=list)
    fold: int | None = None
    city: str | None = None
    recorded_at: datetime | None = None
    audio_id: str | None = None


def scan_folder(root: str | os.PathLike, source: str, split: str | None = None,
                labels_from_dirs: bool = False) -> list[ClipSpec]:
    root = Path(root)
    if root.exists():
        # Resolve once here: resolving each clip's path costs more than reading its header.
        root = root.resolve()
    if not root.exists():
        raise CuratorError(f"{root}: no such file or folder")
    if root.is_file():
        raise CuratorError(f"{root}: is a file; pass a folder, or a manifest ending in .csv")
    specs = []
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES):
        rel = path.relative_to(root).as_posix()
        labels = [path.parent.name] if labels_from_dirs and path.parent != root else []
        specs.append(ClipSpec(path=path, relative=rel, source=source, split=split, labels=labels))
    return specs


def is_manifest(src: str | os.PathLike) -> bool:
    return Path(src).suffix.lower() == ".csv"


def default_source(src: str | os.PathLike) -> str:
    """A source name when none is given: the manifest's stem, or the folder's name."""
    path = Path(src)
    return path.stem if is_manifest(path) else path.resolve().name


@dataclass
class ManifestColumns:
    """How to read a manifest CSV. `path` is a template over the row's columns, e.g.
    `{filename}` for ESC-50 or `fold{fold}/{slice_file_name}` for UrbanSound8K."""

    path: str = "{filename}"
    label: str | None = None
    fold: str | None = None
    split: str | None = None
    city: str | None = None
    time: str | None = None
    audio_id: str | None = None
    labelled: str | None = None  # a truthy/falsy column: unlabelled rows keep no label


PRESETS: dict[str, tuple[ManifestColumns, str]] = {
    # name: (columns, default audio root relative to the CSV's folder)
    "esc50": (ManifestColumns(path="{filename}", label="category", fold="fold"), "../audio"),
    "us8k": (ManifestColumns(path="fold{fold}/{slice_file_name}", label="class", fold="fold"), "../audio"),
    "scenes": (ManifestColumns(path="{filename}", label="scene_label", city="city", time="timestamp",
                               labelled="labelled"), "."),
}


def manifest_columns(preset: str | None = None, **overrides: str | None) -> ManifestColumns | None:
    """Columns of your own (`path=`, `label=`, ... as in ManifestColumns), each falling back to the
    preset's (or the default's); None when no override is given, so the manifest's header decides."""
    given = {k: v for k, v in overrides.items() if v}
    if not given:
        return None
    if preset and preset not in PRESETS:
        raise CuratorError(f"unknown preset {preset!r}; choose from {', '.join(PRESETS)}")
    base = PRESETS[preset][0] if preset else ManifestColumns()
    return replace(base, **given)


def find_clips(src: str | os.PathLike, source: str | None = None, split: str | None = None,
               labels_from_dirs: bool = False, preset: str | None = None,
               audio_root: str | os.PathLike | None = None,
               columns: ManifestColumns | None = None, allow_outside_root: bool = False) -> tuple[str, list[ClipSpec]]:
    """(source name, clips) of a folder (scanned recursively) or a manifest CSV (preset detected
    from its header unless given or `columns` say otherwise). Refuses a source with no clips."""
    source = source or default_source(src)
    if is_manifest(src):
        specs = read_manifest(src, source, split, columns=columns, audio_root=audio_root, preset=preset,
                              allow_outside_root=allow_outside_root)
    else:
        specs = scan_folder(src, source, split, labels_from_dirs)
    if not specs:
        raise CuratorError(f"{src}: no audio files found (looked for wav, flac, ogg, mp3)")
    return source, specs


def detect_preset(header: list[str]) -> str | None:
    cols = set(header)
    if {"filename", "fold", "target", "category"} <= cols:
        return "esc50"
    if {"slice_file_name", "fold", "classID", "class"} <= cols:
        return "us8k"
    if {"filename", "city"} <= cols and ({"timestamp"} & cols):
        return "scenes"
    return None


def parse_time(text: str, where: str) -> datetime | None:
    text = (text or "").strip()
    if not text:
        return None
    try:
        ts = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        try:
            ts = datetime.fromtimestamp(float(text), tz=timezone.utc)
        except ValueError:
            raise SchemaError(f"{where}: timestamp {text!r} is neither ISO 8601 nor epoch seconds") from None
    return ts if ts.tzinfo else ts.replace(tzinfo=timezone.utc)


_FALSY = {"", "0", "false", "no", "n", "f"}


def read_csv(path: Path, what: str) -> tuple[list[str], list[dict]]:
    """Header and rows of a CSV (a UTF-8 BOM, as spreadsheets write it, is tolerated)."""
    if not path.is_file():
        raise CuratorError(f"{path}: {what} not found")
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            return list(reader.fieldnames or []), list(reader)
    except UnicodeDecodeError as exc:
        raise SchemaError(f"{path}: {what} is not UTF-8 text (undecodable byte {exc.object[exc.start]:#04x}); "
                          "save it as UTF-8") from None
    except csv.Error as exc:
        raise SchemaError(f"{path}: {what} is not a readable CSV ({exc})") from None


def _inside(root: Path, rel: str, where: str, allow_outside: bool) -> tuple[Path, str]:
    """(path, identity path) of a manifest row's clip: relative to `root`, lexically normalised; a
    path that leaves the root is refused unless `allow_outside`, which keeps its absolute path."""
    path = Path(os.path.normpath(root / rel))
    try:
        return path, path.relative_to(root).as_posix()
    except ValueError:
        if not allow_outside:
            raise SchemaError(f"{where}: {rel!r} is outside the audio root {root}; pass --allow-outside-root "
                              "to keep such clips with their absolute path as identity") from None
        return path, path.as_posix()


_COMPARED = ("split", "labels", "fold", "city", "recorded_at", "audio_id")


def _refuse_conflicts(specs: list[ClipSpec], lines: list[int], csv_path: Path) -> list[ClipSpec]:
    """One spec per clip: identical duplicate rows collapse; rows naming one clip with different
    fields are refused with their row numbers."""
    first: dict[str, int] = {}
    keep = []
    for k, spec in enumerate(specs):
        j = first.setdefault(spec.relative, k)
        if j == k:
            keep.append(spec)
            continue
        diff = [f for f in _COMPARED if getattr(spec, f) != getattr(specs[j], f)]
        if diff:
            f = diff[0]
            raise SchemaError(f"{csv_path}: rows {lines[j]} and {lines[k]} both name {spec.relative!r} but differ in "
                              f"{', '.join(diff)} ({getattr(specs[j], f)!r} vs {getattr(spec, f)!r}); keep one row")
    return keep


def read_manifest(csv_path: str | os.PathLike, source: str, split: str | None = None,
                  columns: ManifestColumns | None = None, audio_root: str | os.PathLike | None = None,
                  preset: str | None = None, allow_outside_root: bool = False) -> list[ClipSpec]:
    csv_path = Path(csv_path)
    header, rows = read_csv(csv_path, "manifest")
    preset = preset or (None if columns else detect_preset(header))
    root_default = "."
    if preset:
        if preset not in PRESETS:
            raise CuratorError(f"unknown preset {preset!r}; choose from {', '.join(PRESETS)}")
        preset_cols, root_default = PRESETS[preset]
        columns = columns or preset_cols
    columns = columns or ManifestColumns()
    if audio_root:
        root = Path(audio_root).resolve()
    else:
        # ESC-50 keeps audio in ../audio beside meta/; copies often put audio/ next to the CSV.
        candidates = [csv_path.parent / root_default, csv_path.parent / "audio", csv_path.parent]
        root = next((c for c in candidates if c.is_dir()), csv_path.parent).resolve()
    for name in [columns.label, columns.fold, columns.split, columns.city, columns.time, columns.audio_id,
                 columns.labelled]:
        if name and name not in header:
            raise SchemaError(f"{csv_path}: column {name!r} not found; columns: {', '.join(header)}")
    specs, lines = [], []
    for i, row in enumerate(rows, start=2):
        where = f"{csv_path}:{i}"
        try:
            rel = columns.path.format(**row)
        except KeyError as exc:
            raise SchemaError(f"{where}: path template {columns.path!r} needs column {exc.args[0]!r}; "
                              f"columns: {', '.join(header)}") from None
        path, rel = _inside(root, rel, where, allow_outside_root)
        labelled = columns.labelled is None or (row[columns.labelled] or "").strip().lower() not in _FALSY
        label = (row.get(columns.label) or "").strip() if columns.label else ""
        fold = (row.get(columns.fold) or "").strip() if columns.fold else ""
        lines.append(i)
        specs.append(ClipSpec(
            path=path,
            relative=rel,
            source=source,
            split=(row.get(columns.split) or None) if columns.split else split,
            labels=[label] if label and labelled else [],
            fold=int(fold) if fold.isdigit() else None,
            city=((row.get(columns.city) or "").strip() or None) if columns.city else None,
            recorded_at=parse_time(row.get(columns.time, ""), where) if columns.time else None,
            audio_id=((row.get(columns.audio_id) or None) if columns.audio_id
                      else absolute_audio_id(source, rel) if rel.startswith("/") else None),
        ))
    return _refuse_conflicts(specs, lines, csv_path)
