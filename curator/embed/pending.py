"""Which items one embed shard still has to do.

A shard is `sha1(id) mod n`: every process computes the same split with no coordination; only
items with no vector yet are pending, so a rerun after a crash (even `kill -9`) resumes.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curator.ingest.audio import sha1_of
from curator.models.registry import ModelRecord
from curator.store.sql import ids_where
from curator.store.store import Store
from curator.store.vectors import ID_COLUMN
from schemas.errors import ParameterError, StoreError

SOURCE = {"audio": ("audio", "uri"), "text": ("texts", "text")}  # modality -> (table, payload column)


def parse_shard(spec: str | None) -> tuple[int, int]:
    """`"I/N"` -> (I, N); None -> (RANK, WORLD_SIZE) from the environment, else (0, 1)."""
    if spec is None:
        rank, world = os.environ.get("RANK"), os.environ.get("WORLD_SIZE")
        spec = f"{rank}/{world}" if rank is not None and world is not None else "0/1"
    try:
        i, n = (int(x) for x in str(spec).split("/"))
    except ValueError:
        raise ParameterError(f"--shard {spec!r}: expected I/N, e.g. 0/4") from None
    if n < 1 or not 0 <= i < n:
        raise ParameterError(f"--shard {spec!r}: need 0 <= I < N")
    return i, n


def shard_mask(ids: list[str], shard: tuple[int, int]) -> np.ndarray:
    i, n = shard
    if n == 1:
        return np.ones(len(ids), dtype=bool)
    keys = np.fromiter((int.from_bytes(hashlib.sha1(x.encode("utf-8")).digest()[:8], "big") % n for x in ids),
                       dtype=np.int64, count=len(ids))
    return keys == i


def done_ids(store: Store, record: ModelRecord, modality: str) -> pa.Array:
    """Ids that already have a vector of `record` (from any shard, any earlier run)."""
    name = record.table(modality)
    if not store.has(name):
        return pa.array([], pa.string())
    return store.read(name, columns=[ID_COLUMN[modality]]).column(0).combine_chunks()


def changed_since_ingest(store: Store, items: list[tuple[str, str]]) -> list[dict]:
    """Before clips are embedded: a file whose size differs from its ingest, or that was modified
    after it, is re-hashed; content that is not what was ingested (another sha1) must not be
    embedded under the old clip's id. Returns those as failure rows (item_id, uri, message)."""
    if not items:
        return []
    meta = store.read("audio", columns=["audio_id", "sha1", "size_bytes", "ingested_at"])
    known = {r["audio_id"]: r for r in meta.to_pylist()}
    changed = []
    for item_id, uri in items:
        row = known.get(item_id)
        if not row or not row["sha1"]:
            continue
        try:
            st = os.stat(uri)
        except OSError:
            continue  # a missing file fails at decode and is recorded in `errors`
        stamp = row["ingested_at"]
        if st.st_size == row["size_bytes"] and (stamp is None or st.st_mtime <= stamp.timestamp()):
            continue
        try:
            same = sha1_of(Path(uri)) == row["sha1"]
        except OSError:
            continue
        if not same:
            changed.append({"item_id": item_id, "uri": uri,
                            "message": f"{uri}: changed since it was ingested (sha1 differs from {row['sha1'][:12]}); "
                                       "re-ingest it to record the new content, then embed"})
    return changed


def pending_items(store: Store, record: ModelRecord, modality: str, where: str | None = None,
                  shard: tuple[int, int] = (0, 1)) -> tuple[list[tuple[str, str]], int, int]:
    """(items to embed as (id, uri-or-text), selected in shard, already done) for one shard."""
    source, payload = SOURCE[modality]
    id_col = ID_COLUMN[modality]
    if not store.has(source):
        raise StoreError(f"store has no {source!r} table; ingest {'audio' if modality == 'audio' else 'texts'} first")
    rows = store.read(source, columns=[id_col, payload])
    wanted = ids_where(store, source, id_col, where, "--where")
    if wanted is not None:
        rows = rows.filter(pc.is_in(rows.column(id_col), value_set=pa.array(wanted, pa.string())))
    ids = rows.column(id_col).to_pylist()
    rows = rows.filter(pa.array(shard_mask(ids, shard)))
    done = pc.is_in(rows.column(id_col), value_set=done_ids(store, record, modality))
    todo = rows.filter(pc.invert(done))
    items = list(zip(todo.column(id_col).to_pylist(), todo.column(payload).to_pylist()))
    return items, rows.num_rows, rows.num_rows - todo.num_rows
