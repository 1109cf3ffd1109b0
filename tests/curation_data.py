"""A small, fully known store for curation tests: audio/texts rows, a models row and embedding
tables written directly (no embedding model), with clustered unit vectors so thresholds select
meaningful, non-trivial subsets.

Layout: K clusters (one per label). Paired teacher-training clips + their captions (source
'clotho'), a wild pool (source 'wild'), evaluation clips (source 'esc50'), one prompt per label in
label set 'esc'. Wild clip 0 is a byte copy of eval clip 0 (same sha1); wild clip 1 is a
near-duplicate of eval clip 1 (vector cosine > 0.99, different sha1).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime, timezone

import numpy as np
import pyarrow as pa

from schemas.ids import audio_id, model_slug, text_id
from schemas.tables import AUDIO, MODELS, TEXTS, embedding_table_name, embeddings

LABELS = ["dog", "rain", "siren", "engine"]
PROMPT = "this is a sound of {}"
DIM = 16


def unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


@dataclass
class World:
    """Everything written, kept in numpy so tests can compute the expected rows by brute force."""

    model: str = "teach"
    audio: dict = field(default_factory=dict)  # audio_id -> row
    texts: dict = field(default_factory=dict)  # text_id -> row
    avec: dict = field(default_factory=dict)  # audio_id -> vector (teacher)
    tvec: dict = field(default_factory=dict)  # text_id -> vector (teacher)

    def ids(self, source: str) -> list[str]:
        return sorted(a for a, r in self.audio.items() if r["source"] == source)

    def captions(self) -> list[str]:
        return sorted(t for t, r in self.texts.items() if r["kind"] == "caption")

    def prompts(self) -> list[str]:
        return sorted(t for t, r in self.texts.items() if r["kind"] == "prompt")

    def A(self, ids):
        return np.stack([self.avec[i] for i in ids])

    def T(self, ids):
        return np.stack([self.tvec[i] for i in ids])


def write_model(store, name: str, dim: int = DIM, kind: str = "clap-hf", logit_scale: float | None = 20.0,
                trained_on: str | None = None, modalities=("audio", "text")) -> None:
    row = {"model_id": name, "kind": kind, "path": f"/models/{name}", "sha256": (name * 64)[:64].ljust(64, "0"),
           "dim": dim, "logit_scale": logit_scale, "sample_rate": 48000, "modalities": list(modalities),
           "trained_on": trained_on, "added_at": datetime(2024, 1, 1, tzinfo=timezone.utc)}
    store.upsert("models", pa.Table.from_pylist([row], schema=MODELS))


def write_vectors(store, model: str, modality: str, vecs: dict) -> None:
    col = "audio_id" if modality == "audio" else "text_id"
    ids = sorted(vecs)
    dim = len(next(iter(vecs.values())))
    flat = pa.array(np.stack([vecs[i] for i in ids]).astype(np.float32).reshape(-1))
    table = pa.table({col: pa.array(ids, pa.string()), "vector": pa.FixedSizeListArray.from_arrays(flat, dim)})
    store.overwrite(embedding_table_name(model_slug(model), modality), table, embeddings(col, dim))


def _audio_row(source: str, i: int, sha1: str, split: str = "train") -> dict:
    aid = audio_id(source, f"{source}/{i:03d}.wav")
    return {"audio_id": aid, "uri": f"/data/{source}/{i:03d}.wav", "source": source, "split": split,
            "duration_s": 5.0, "sample_rate": 48000, "channels": 1, "format": "wav", "labels": None,
            "city": "lyon" if i % 2 else "paris", "recorded_at": datetime(2023, 5, 1 + i % 20, tzinfo=timezone.utc),
            "sha1": sha1, "size_bytes": 1000}


def build_world(store, n_pairs: int = 16, n_wild: int = 48, n_eval: int = 6, seed: int = 0,
                noise: float = 0.6) -> World:
    rng = np.random.default_rng(seed)
    centers = unit(rng.standard_normal((len(LABELS), DIM)))
    w = World()

    def around(k, scale=noise):
        return unit(centers[k] + scale * rng.standard_normal(DIM) / np.sqrt(DIM) * 2)

    for src, n in (("clotho", n_pairs), ("wild", n_wild), ("esc50", n_eval)):
        for i in range(n):
            row = _audio_row(src, i, hashlib.sha1(f"{src}/{i}".encode()).hexdigest(), split="eval" if src == "esc50" else "train")
            w.audio[row["audio_id"]] = row
            w.avec[row["audio_id"]] = around(i % len(LABELS))
    ev, wild = w.ids("esc50"), w.ids("wild")
    w.audio[wild[0]]["sha1"] = w.audio[ev[0]]["sha1"]  # byte copy of an eval clip
    w.avec[wild[1]] = unit(w.avec[ev[1]] + 0.01 * rng.standard_normal(DIM))  # re-encode of an eval clip
    for k, aid in enumerate(w.ids("clotho")):
        text = f"caption {k} near {LABELS[k % len(LABELS)]}"
        tid = text_id("clotho", text, aid, "caption")
        w.texts[tid] = {"text_id": tid, "text": text, "kind": "caption", "source": "clotho", "audio_id": aid,
                        "label_set": None, "label": None}
        # Caption vectors sit between their clip and the cluster, so captions match their cluster.
        w.tvec[tid] = unit(w.avec[aid] + around(k % len(LABELS)))
    for k, label in enumerate(LABELS):
        text = PROMPT.format(label)
        tid = text_id("esc", text, None, "prompt")
        w.texts[tid] = {"text_id": tid, "text": text, "kind": "prompt", "source": "esc", "audio_id": None,
                        "label_set": "esc", "label": label}
        w.tvec[tid] = unit(centers[k] + 0.2 * rng.standard_normal(DIM) / np.sqrt(DIM))
    store.upsert("audio", pa.Table.from_pylist(list(w.audio.values()), schema=AUDIO))
    store.upsert("texts", pa.Table.from_pylist(list(w.texts.values()), schema=TEXTS))
    write_model(store, w.model)
    write_vectors(store, w.model, "audio", w.avec)
    write_vectors(store, w.model, "text", w.tvec)
    return w


def brute_match(T: np.ndarray, A: np.ndarray, threshold: float, top_k: int | None = None):
    """Reference pairs (text index, audio index, score): all >= threshold, top_k per text."""
    S = T.astype(np.float64) @ A.astype(np.float64).T
    out = []
    for t in range(len(T)):
        hits = [(float(S[t, a]), a) for a in range(len(A)) if S[t, a] >= threshold]
        hits.sort(key=lambda x: -x[0])
        out += [(t, a, s) for s, a in hits[:top_k]]
    return out


def versions(store, name: str) -> int:
    return len(store.versions(name)) if store.has(name) else 0
