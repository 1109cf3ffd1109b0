"""Embedding the store's clips and texts with a registered model, resumably and in shards.

Reading, decoding, embedding and writing are separate steps; the work for one shard is the plain
function `embed_items`; who runs shards (one process, several, torchrun ranks, an array job) only
chooses `shard=(i, n)`. Rules that make that safe:

- a shard is `sha1(id) mod n`: every process computes the same split with no coordination;
- only items with no vector yet are embedded, so a rerun after a crash (even `kill -9`) resumes;
- vectors are appended in batches, each one Lance commit (atomic), so a crash loses at most the
  batch in flight and never leaves half a batch; concurrent appends from other shards are merged
  by Lance, with a bounded retry here on commit conflicts;
- a clip that fails (decode, model) goes to `errors` (stage "embed") and the run goes on.

Long clips (`long_rule="average"`, the default): consecutive windows (last one aligned to the clip's
end, at most MAX_WINDOWS evenly spaced) are embedded and their mean re-normalised; "crop" takes
the centre window. Short clips are repeat-padded (trainer.data.audio.fit_window).
"""

from __future__ import annotations

import hashlib
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curator.models.registry import ModelRecord, get_model
from curator.store.sql import ids_where
from curator.store.store import Store
from schemas.errors import CuratorError, MixedModelsError, ModelError, ParameterError, StoreError
from schemas.tables import embeddings
from trainer.data.audio import fit_window, load_audio

ID_COLUMN = {"audio": "audio_id", "text": "text_id"}
SOURCE = {"audio": ("audio", "uri"), "text": ("texts", "text")}
MAX_WINDOWS = 64
COMMIT_RETRIES = 6


@dataclass
class EmbedSummary:
    model_id: str
    modality: str
    table: str
    shard: tuple[int, int]
    selected: int = 0  # items of this shard matching the filter
    already: int = 0  # of those, embedded before this run
    embedded: int = 0
    failures: list[dict] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def failed(self) -> int:
        return len(self.failures)

    def line(self) -> str:
        what = "clips" if self.modality == "audio" else "texts"
        if not self.embedded and not self.failures:
            return (f"{self.model_id} {self.modality}: nothing to embed (shard {self.shard[0]}/{self.shard[1]}: "
                    f"{self.selected} selected, {self.already} already done) -> {self.table}")
        rate = self.embedded / self.seconds if self.seconds > 0 else 0.0
        text = (f"{self.model_id} {self.modality}: embedded {self.embedded} {what} "
                f"(shard {self.shard[0]}/{self.shard[1]}: {self.selected} selected, {self.already} already done) "
                f"in {self.seconds:.1f}s, {rate:.1f} {what}/s -> {self.table}")
        if self.failures:
            text += f"; {self.failed} failed (first: {self.failures[0]['message']}); see table errors, stage 'embed'"
        return text


# -- sharding --------------------------------------------------------------------------------------

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


# -- what to embed ---------------------------------------------------------------------------------

def table_schema(record: ModelRecord, modality: str) -> pa.Schema:
    # The metadata lets readers (curator.store.vectors) refuse a table that holds another model's vectors.
    return embeddings(ID_COLUMN[modality], record.dim).with_metadata(
        {"model_id": record.model_id, "model_sha256": record.sha256})


def ensure_table(store: Store, record: ModelRecord, modality: str):
    """Open (or create) the model's embedding table, refusing one made by another model."""
    name = record.table(modality)
    schema = table_schema(record, modality)
    table = store.table(name, schema)
    vec = table.schema.field("vector").type
    if getattr(vec, "list_size", None) != record.dim:
        raise MixedModelsError(f"table {name} holds {getattr(vec, 'list_size', '?')}-d vectors but model "
                               f"{record.model_id!r} is {record.dim}-d; refusing to mix models")
    stated = (table.schema.metadata or {}).get(b"model_id")
    if stated and stated.decode() != record.model_id:
        raise MixedModelsError(f"table {name} holds vectors of model {stated.decode()!r}, not {record.model_id!r}")
    return table


def done_ids(store: Store, record: ModelRecord, modality: str) -> pa.Array:
    name = record.table(modality)
    if not store.has(name):
        return pa.array([], pa.string())
    return store.read(name, columns=[ID_COLUMN[modality]]).column(0).combine_chunks()


def pending_items(store: Store, record: ModelRecord, modality: str, where: str | None = None,
                  shard: tuple[int, int] = (0, 1)) -> tuple[list[tuple[str, str]], int, int]:
    """(items to embed as (id, uri-or-text), selected in shard, already done) for one shard."""
    source, payload = SOURCE[modality]
    id_col = ID_COLUMN[modality]
    if not store.has(source):
        raise StoreError(f"store has no {source!r} table; ingest {'audio' if modality == 'audio' else 'texts'} first")
    rows = store.read(source, columns=[id_col, payload])
    wanted = ids_where(store, source, id_col, where)
    if wanted is not None:
        rows = rows.filter(pc.is_in(rows.column(id_col), value_set=pa.array(wanted, pa.string())))
    ids = rows.column(id_col).to_pylist()
    rows = rows.filter(pa.array(shard_mask(ids, shard)))
    done = pc.is_in(rows.column(id_col), value_set=done_ids(store, record, modality))
    todo = rows.filter(pc.invert(done))
    items = list(zip(todo.column(id_col).to_pylist(), todo.column(payload).to_pylist()))
    return items, rows.num_rows, rows.num_rows - todo.num_rows


# -- writing ---------------------------------------------------------------------------------------

def append_retrying(store: Store, name: str, data: pa.Table, schema: pa.Schema) -> None:
    delay = 0.05
    for attempt in range(COMMIT_RETRIES):
        try:
            store.append(name, data, schema)
            return
        except CuratorError:
            raise
        except Exception as exc:  # Lance reports a lost commit race as a generic error
            text = str(exc).lower()
            if attempt == COMMIT_RETRIES - 1 or not any(w in text for w in ("conflict", "commit", "retry")):
                raise StoreError(f"writing {name}: {str(exc).splitlines()[0]}") from None
            time.sleep(delay)
            delay *= 2


def vectors_table(ids: list[str], vecs: np.ndarray, schema: pa.Schema) -> pa.Table:
    flat = pa.array(np.ascontiguousarray(vecs, np.float32).ravel())
    vec = pa.FixedSizeListArray.from_arrays(flat, vecs.shape[1])
    return pa.Table.from_arrays([pa.array(ids, pa.string()), vec], schema=schema)


FLUSH_ROWS = 2048
FLUSH_SECONDS = 10.0


class _Writer:
    """Buffers vectors and appends them in large commits: every Lance commit is a version and a
    fragment, and thousands of 32-row fragments make every later read of the table slow. A crash
    loses at most the buffer (`flush_rows` rows or `FLUSH_SECONDS` of work), which the rerun redoes."""

    def __init__(self, store: Store, record: ModelRecord, modality: str, summary: EmbedSummary,
                 flush_rows: int = FLUSH_ROWS):
        self.store, self.record, self.modality, self.summary = store, record, modality, summary
        self.schema = table_schema(record, modality)
        self.flush_rows = max(1, flush_rows)
        self._ids: list[str] = []
        self._vecs: list[np.ndarray] = []
        self._since = time.perf_counter()

    def write(self, ids: list[str], vecs: np.ndarray, failures: list[dict]) -> None:
        ok = np.isfinite(vecs).all(axis=1) if len(ids) else np.zeros(0, bool)
        for i in np.flatnonzero(~ok):
            failures.append({"item_id": ids[i], "uri": None, "message": f"{self.record.model_id}: non-finite vector"})
        if ok.any():
            self._ids.extend(ids[i] for i in np.flatnonzero(ok))
            self._vecs.append(vecs[ok])
            if len(self._ids) >= self.flush_rows or time.perf_counter() - self._since >= FLUSH_SECONDS:
                self.flush()
        if failures:
            self.store.record_errors([{**f, "stage": "embed"} for f in failures])
            self.summary.failures.extend(failures)

    def flush(self) -> None:
        if self._ids:
            data = vectors_table(self._ids, np.concatenate(self._vecs), self.schema)
            append_retrying(self.store, self.record.table(self.modality), data, self.schema)
            self.summary.embedded += len(self._ids)
        self._ids, self._vecs, self._since = [], [], time.perf_counter()


# -- the per-shard work ----------------------------------------------------------------------------

def _decode(item: tuple[str, str], teacher, long_rule: str):
    item_id, uri = item
    try:
        wave = load_audio(uri, teacher.sample_rate)
        return fit_window(wave, teacher.window_samples, long_rule, max_windows=MAX_WINDOWS), None
    except CuratorError as exc:
        return None, str(exc)


def _embed_windows(teacher, windows: list[np.ndarray], batch_size: int) -> np.ndarray:
    """Embed each clip's windows (chunked by batch_size) and average them per clip."""
    if not windows:
        return np.empty((0, teacher.dim), np.float32)
    counts = np.array([w.shape[0] for w in windows])
    stacked = np.concatenate(windows)
    parts = [teacher.embed_audio(stacked[i:i + batch_size]) for i in range(0, len(stacked), batch_size)]
    vecs = np.concatenate(parts)
    if (counts == 1).all():
        return vecs
    means = np.add.reduceat(vecs, np.r_[0, np.cumsum(counts)[:-1]], axis=0) / counts[:, None]
    return (means / np.linalg.norm(means, axis=1, keepdims=True).clip(1e-12)).astype(np.float32)


def _isolating(embed_fn, ids: list[str], payloads: list, uris: list, dim: int, model_id: str):
    """Embed a batch; if it raises, embed item by item so only the item that breaks fails."""
    try:
        return ids, embed_fn(payloads), []
    except Exception:  # a model error on one odd input must not cost the rest of the batch
        pass
    good_ids, good, failures = [], [], []
    for item_id, payload, uri in zip(ids, payloads, uris):
        try:
            good.append(embed_fn([payload]))
            good_ids.append(item_id)
        except Exception as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            failures.append({"item_id": item_id, "uri": uri,
                             "message": f"{model_id}: {exc.__class__.__name__}: {reason}"})
    return good_ids, (np.concatenate(good) if good else np.empty((0, dim), np.float32)), failures


def _audio_batch(teacher, batch, decoded, batch_size, model_id):
    ids, windows, uris, failures = [], [], [], []
    for (item_id, uri), (win, err) in zip(batch, decoded):
        if err is not None:
            failures.append({"item_id": item_id, "uri": uri, "message": err})
        else:
            ids.append(item_id)
            windows.append(win)
            uris.append(uri)
    ids, vecs, more = _isolating(lambda w: _embed_windows(teacher, w, batch_size), ids, windows, uris,
                                 teacher.dim, model_id)
    return ids, vecs, failures + more


def _text_batch(teacher, batch, model_id):
    return _isolating(teacher.embed_texts, [b[0] for b in batch], [b[1] for b in batch], [None] * len(batch),
                      teacher.dim, model_id)


def embed_items(store: Store, record: ModelRecord, teacher, modality: str, items: list[tuple[str, str]],
                batch_size: int = 32, long_rule: str = "average", workers: int = 2, progress=None,
                summary: EmbedSummary | None = None, flush_rows: int = FLUSH_ROWS) -> EmbedSummary:
    """Embed `items` ((id, uri) clips or (id, text) texts) with `teacher`; append vectors in batches.

    `progress(n)` is called after each batch with the number of items it finished.
    """
    if batch_size < 1:
        raise ParameterError(f"--batch-size must be at least 1, got {batch_size}")
    if modality not in record.modalities:
        raise ModelError(f"model {record.model_id!r} ({record.kind}) cannot embed {modality}; "
                         f"it supports: {', '.join(record.modalities)}")
    summary = summary or EmbedSummary(record.model_id, modality, record.table(modality), (0, 1))
    start = time.perf_counter()
    ensure_table(store, record, modality)
    writer = _Writer(store, record, modality, summary, flush_rows)
    batches = [items[i:i + batch_size] for i in range(0, len(items), batch_size)]
    try:
        if modality == "text":
            for batch in batches:
                writer.write(*_text_batch(teacher, batch, record.model_id))
                if progress:
                    progress(len(batch))
        else:
            with ThreadPoolExecutor(max(1, workers)) as pool:
                # decode batch k+1 on worker threads while the model runs batch k
                ahead = [pool.submit(_decode, it, teacher, long_rule) for it in batches[0]] if batches else []
                for k, batch in enumerate(batches):
                    futures = ahead
                    ahead = ([pool.submit(_decode, it, teacher, long_rule) for it in batches[k + 1]]
                             if k + 1 < len(batches) else [])
                    decoded = [f.result() for f in futures]
                    writer.write(*_audio_batch(teacher, batch, decoded, batch_size, record.model_id))
                    if progress:
                        progress(len(batch))
    finally:
        # Ctrl-C or a failing batch still keeps every vector computed so far.
        writer.flush()
    summary.seconds += time.perf_counter() - start
    return summary


def embed(store: Store, model: str, modality: str, where: str | None = None, batch_size: int = 32,
          device: str = "auto", shard: tuple[int, int] = (0, 1), long_rule: str = "average",
          workers: int = 2, amp: bool = False, progress_factory=None, flush_rows: int = FLUSH_ROWS) -> EmbedSummary:
    """Embed one shard of a modality with a registered model (see the module docstring).

    `progress_factory(total, desc)` may return a callable(n) to report progress (the CLI's bar).
    """
    from curator.models.teachers import load_teacher

    record = get_model(store, model)
    if modality not in record.modalities:
        raise ModelError(f"model {record.model_id!r} ({record.kind}) is {'text-only' if record.modalities == ('text',) else 'limited'}: "
                         f"it cannot embed {modality} (supports: {', '.join(record.modalities)})")
    items, selected, already = pending_items(store, record, modality, where, shard)
    summary = EmbedSummary(record.model_id, modality, record.table(modality), shard, selected, already)
    if not items:
        return summary
    teacher = load_teacher(record, device, amp=amp)
    bar = progress_factory(len(items), f"{record.model_id} {modality}") if progress_factory else None
    try:
        return embed_items(store, record, teacher, modality, items, batch_size, long_rule, workers,
                           bar, summary, flush_rows)
    finally:
        close = getattr(bar, "close", None)
        if close:
            close()
