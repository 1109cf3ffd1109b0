"""Builders of small, real training data for the trainer tests: tone clips whose pitch depends on
the class, captions naming the class, a `set_<name>` table + `sets` catalog row written through the
schemas with LanceDB, and `audio` / `texts` rows for evaluation."""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone

import lancedb
import numpy as np
import pyarrow as pa

from schemas.sets import content_hash
from schemas.tables import AUDIO, SETS, TEXTS, set_rows, set_table_name
from schemas.validate import conform

# (label, tone frequency Hz, caption variants): pitch is the audio's only class cue.
CLASSES = [
    ("dog", 200.0, ["a dog barking", "the sound of a dog barking loudly"]),
    ("rain", 330.0, ["rain falling on a roof", "heavy rain pouring down"]),
    ("siren", 520.0, ["a police siren wailing", "an ambulance siren passing by"]),
    ("bell", 800.0, ["a church bell ringing", "bells chiming in a tower"]),
    ("birds", 1250.0, ["birds chirping in the morning", "small birds singing in trees"]),
    ("engine", 1900.0, ["a car engine idling", "a truck engine rumbling"]),
    ("baby", 2800.0, ["a baby crying", "an infant wailing in a crib"]),
    ("knock", 4000.0, ["someone knocking on a door", "knocks on a wooden door"]),
]
SR = 16000
DIM = 16
# A compact student small enough for a 2-core CPU: 1 s windows, two thin SE-ResNet blocks, one
# Transformer layer, MiniLM text tower with 5 of its 6 layers frozen, no dropout (so DDP ranks and
# single runs see the same maths).
TINY_STUDENT = {"dim": 32, "window_s": 1.0, "n_fft": 512, "hop_length": 160, "n_mels": 32, "channels": [8, 16],
                "transformer_layers": 1, "heads": 2, "freeze_layers": 5, "dropout": 0.0}


def make_clips(folder, tone, per_class: int = 4, seconds: float = 1.0, classes=CLASSES, seed: int = 0) -> list[dict]:
    """Write per_class wav files per class; return rows with audio_id, uri, label, text."""
    rows = []
    for c, (label, freq, captions) in enumerate(classes):
        for i in range(per_class):
            k = c * per_class + i
            path = tone(os.path.join(str(folder), f"{label}_{i}.wav"), seconds=seconds, sr=SR,
                        freq=freq * (1.0 + 0.02 * (i % 3)), seed=seed * 1000 + k)
            rows.append({"audio_id": f"a{k:04d}", "uri": os.path.abspath(path), "label": label,
                         "text": captions[i % len(captions)], "text_id": f"t{k:04d}", "class": c})
    return rows


def teacher_vectors(rows: list[dict], dim: int = DIM, seed: int = 0, noise: float = 0.3):
    """Teacher vectors derived from the class (prototype + noise), unit-normalised."""
    rng = np.random.default_rng(seed)
    protos = rng.standard_normal((max(r["class"] for r in rows) + 1, dim))
    def unit(x):
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    cls = np.array([r["class"] for r in rows])
    ta = unit(protos[cls] + noise * rng.standard_normal((len(rows), dim)))
    tt = unit(protos[cls] + noise * rng.standard_normal((len(rows), dim)))
    return ta, tt


def _names(db) -> list[str]:
    listed = db.list_tables()
    return list(getattr(listed, "tables", listed))


def write_set(store_uri: str, name: str, rows: list[dict], dim: int = DIM, seed: int = 0,
              teachers: bool = True, nan_rows: tuple[int, ...] = (), model_sha256: str | None = None) -> int:
    """One overwrite of set_<name> plus its catalog row (what curator's write_set does); returns the
    version. The synthetic teacher vectors come from no model's files, so the catalog names no
    `model_sha256` unless the test passes the folder fingerprint of a real teacher. `nan_rows` get absurd teacher vectors (1e20: finite, so LanceDB stores them, but their
    similarities overflow float32 and the soft-label loss turns NaN)."""
    db = lancedb.connect(store_uri)
    schema = set_rows(dim, dim)
    ta, tt = teacher_vectors(rows, dim, seed) if teachers else (None, None)
    if nan_rows:
        ta[list(nan_rows)] = 1e20
    data = {"audio_id": [r["audio_id"] for r in rows], "uri": [r["uri"] for r in rows],
            "text_id": [r["text_id"] for r in rows], "text": [r["text"] for r in rows],
            "label": [r["label"] for r in rows], "score": [0.5] * len(rows)}
    table = pa.table(data)
    if teachers:
        table = table.append_column("teacher_audio", pa.FixedSizeListArray.from_arrays(pa.array(ta.ravel()), dim))
        table = table.append_column("teacher_text", pa.FixedSizeListArray.from_arrays(pa.array(tt.ravel()), dim))
    if not teachers:  # a set without teacher vectors (LanceDB stores no null vectors): drop the columns
        schema = pa.schema([f for f in schema if not f.name.startswith("teacher_")])
    table = conform(table, schema, set_table_name(name))
    t = db.create_table(set_table_name(name), table, schema=schema, mode="overwrite")
    version = int(t.version)
    row = {"name": name, "version": version, "strategy": "test", "params": json.dumps({"seed": seed}),
           "inputs": ["audio@1"], "model_id": "teacher", "model_sha256": model_sha256, "rows": table.num_rows,
           "content_hash": content_hash(table), "created_at": datetime.now(timezone.utc)}
    catalog = pa.Table.from_pylist([row], schema=SETS)
    if "sets" in _names(db):
        db.open_table("sets").add(catalog)
    else:
        db.create_table("sets", catalog, schema=SETS)
    return version


def write_audio_texts(store_uri: str, rows: list[dict], label_set: str = "tones", source: str = "test") -> None:
    """`audio` rows (labels = [label]), paired caption rows and one prompt per class in `texts`."""
    db = lancedb.connect(store_uri)
    audio = pa.table({"audio_id": [r["audio_id"] for r in rows], "uri": [r["uri"] for r in rows],
                      "source": [source] * len(rows), "split": ["test"] * len(rows),
                      "labels": [[r["label"]] for r in rows], "sample_rate": [SR] * len(rows)})
    labels = sorted({r["label"] for r in rows})
    texts = pa.table({
        "text_id": [r["text_id"] for r in rows] + [f"p_{lab}" for lab in labels],
        "text": [r["text"] for r in rows] + [f"this is a sound of {lab}" for lab in labels],
        "kind": ["caption"] * len(rows) + ["prompt"] * len(labels),
        "source": [source] * (len(rows) + len(labels)),
        "audio_id": [r["audio_id"] for r in rows] + [None] * len(labels),
        "label_set": [None] * len(rows) + [label_set] * len(labels),
        "label": [r["label"] for r in rows] + labels})
    for name, data, schema in (("audio", audio, AUDIO), ("texts", texts, TEXTS)):
        data = conform(data, schema, name)
        if name in _names(db):
            db.open_table(name).add(data)
        else:
            db.create_table(name, data, schema=schema)
