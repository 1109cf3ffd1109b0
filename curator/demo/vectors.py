"""Synthetic embeddings for tests and benchmarks of matching: no embedding model needed.

Clustered unit vectors behave like real CLAP embeddings for matching purposes (captions and clips
of one sound class sit near one direction), which uniform random vectors do not: in 512-d those
are all nearly orthogonal and no threshold separates anything.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from curator.store.store import now
from curator.store.vectors import embedding_table, vector_array
from schemas.tables import AUDIO, MODELS, TEXTS, embeddings


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def clustered(n: int, dim: int, n_clusters: int = 50, spread: float = 1.0, seed: int = 0,
              centers: np.ndarray | None = None) -> np.ndarray:
    """`n` unit vectors around `n_clusters` random directions; `spread` ~ angle of a cluster."""
    rng = np.random.default_rng(seed)
    if centers is None:
        centers = unit(np.random.default_rng(12345).standard_normal((n_clusters, dim)))
    out = np.empty((n, dim), np.float32)
    step = 65536
    for i in range(0, n, step):
        m = min(step, n - i)
        pick = centers[rng.integers(0, len(centers), m)]
        noise = rng.standard_normal((m, dim), dtype=np.float32) * (spread / np.sqrt(dim))
        out[i:i + m] = unit(pick + noise)
    return out


def write_model(store, name: str, text_vecs: np.ndarray, audio_vecs: np.ndarray, prefix: str = "",
                source: str = "synth", with_rows: bool = True) -> tuple[list[str], list[str]]:
    """Register `name` in `models` and write its two embedding tables (plus `audio` / `texts` rows).

    Returns (text_ids, audio_ids). Row i of `texts` is a caption of clip i % n_audio.
    """
    dim = int(audio_vecs.shape[1])
    n_t, n_a = len(text_vecs), len(audio_vecs)
    audio_ids = [f"{source}:{prefix}a{i:07d}" for i in range(n_a)]
    text_ids = [f"c:{prefix}t{i:07d}" for i in range(n_t)]
    store.upsert("models", pa.Table.from_pylist([{
        "model_id": name, "kind": "clap-hf", "path": f"/synthetic/{name}", "sha256": "0" * 64,
        "dim": dim, "logit_scale": 14.3, "sample_rate": 48000, "modalities": ["audio", "text"],
        "added_at": now(),
    }], schema=MODELS))
    meta = {"model_id": name}
    for modality, ids, vecs, col in (("audio", audio_ids, audio_vecs, "audio_id"), ("text", text_ids, text_vecs, "text_id")):
        schema = embeddings(col, int(vecs.shape[1])).with_metadata(meta)
        data = pa.table({col: pa.array(ids, pa.string()), "vector": vector_array(vecs)}, schema=schema)
        store.overwrite(embedding_table(name, modality), data, schema)
    if with_rows:
        _write_rows(store, text_ids, audio_ids, source, prefix)
    return text_ids, audio_ids


def _write_rows(store, text_ids, audio_ids, source, prefix) -> None:
    n_a = len(audio_ids)
    split = ["train" if i % 5 else "test" for i in range(n_a)]
    store.upsert("audio", pa.table({
        "audio_id": audio_ids, "uri": [f"/synthetic/{prefix}{i}.wav" for i in range(n_a)],
        "source": [source] * n_a, "split": split, "duration_s": [10.0] * n_a,
    }), schema=AUDIO)
    store.upsert("texts", pa.table({
        "text_id": text_ids, "text": [f"caption {i}" for i in range(len(text_ids))],
        "kind": ["caption"] * len(text_ids), "source": [source] * len(text_ids),
        "audio_id": [audio_ids[i % n_a] for i in range(len(text_ids))],
    }), schema=TEXTS)


__all__ = ["clustered", "unit", "write_model"]
