"""Embedding the store's clips and texts with a registered model, resumably and in shards.

Reading, decoding, embedding and writing are separate steps: which items (`pending`), the work
of one batch (`batch`), the buffered writer (`writer`). The work for one shard is the plain
function `embed_items`; who runs shards (one process, several, torchrun ranks, an array job) only
chooses `shard=(i, n)`. Rules that make that safe:

- a shard is `sha1(id) mod n`: every process computes the same split with no coordination;
- only items with no vector yet are embedded, so a rerun after a crash (even `kill -9`) resumes;
- vectors are appended in large buffers, each one Lance commit (atomic), so a crash loses at most
  the buffer in flight; concurrent appends from other shards are merged by Lance;
- a clip that fails (decode, model) goes to `errors` (stage "embed") and the run goes on.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from curator.embed.batch import audio_batch, decode, text_batch
from curator.embed.pending import changed_since_ingest, pending_items
from curator.embed.writer import FLUSH_ROWS, BufferedWriter, ensure_table
from curator.models.registry import ModelRecord, get_model
from curator.models.teachers import load_teacher
from curator.store.store import Store
from schemas.errors import ModelError, ParameterError


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


def _check_modality(record: ModelRecord, modality: str) -> None:
    if modality not in record.modalities:
        kind = "text-only" if record.modalities == ("text",) else "limited"
        raise ModelError(f"model {record.model_id!r} ({record.kind}) is {kind}: it cannot embed {modality} "
                         f"(supports: {', '.join(record.modalities)})")


def embed_items(store: Store, record: ModelRecord, teacher, modality: str, items: list[tuple[str, str]],
                batch_size: int = 32, long_rule: str = "average", workers: int = 2, progress=None,
                summary: EmbedSummary | None = None, flush_rows: int = FLUSH_ROWS) -> EmbedSummary:
    """Embed `items` ((id, uri) clips or (id, text) texts) with `teacher`; append vectors in batches.

    `progress(n)` is called after each batch with the number of items it finished.
    """
    if batch_size < 1:
        raise ParameterError(f"--batch-size must be at least 1, got {batch_size}")
    _check_modality(record, modality)
    summary = summary or EmbedSummary(record.model_id, modality, record.table(modality), (0, 1))
    start = time.perf_counter()
    ensure_table(store, record, modality)
    writer = BufferedWriter(store, record, modality, flush_rows)
    batches = [items[i:i + batch_size] for i in range(0, len(items), batch_size)]
    try:
        if modality == "text":
            for batch in batches:
                writer.write(*text_batch(teacher, batch, record.model_id))
                if progress:
                    progress(len(batch))
        else:
            with ThreadPoolExecutor(max(1, workers)) as pool:
                # decode batch k+1 on worker threads while the model runs batch k
                ahead = [pool.submit(decode, it, teacher, long_rule) for it in batches[0]] if batches else []
                for k, batch in enumerate(batches):
                    futures = ahead
                    ahead = ([pool.submit(decode, it, teacher, long_rule) for it in batches[k + 1]]
                             if k + 1 < len(batches) else [])
                    decoded = [f.result() for f in futures]
                    writer.write(*audio_batch(teacher, batch, decoded, batch_size, record.model_id))
                    if progress:
                        progress(len(batch))
    finally:
        # Ctrl-C or a failing batch still keeps every vector computed so far.
        writer.flush()
        summary.embedded += writer.written
        summary.failures.extend(writer.failures)
    summary.seconds += time.perf_counter() - start
    return summary


def embed(store: Store, model: str, modality: str, where: str | None = None, batch_size: int = 32,
          device: str = "auto", shard: tuple[int, int] = (0, 1), long_rule: str = "average",
          workers: int = 2, amp: bool = False, progress_factory=None, flush_rows: int = FLUSH_ROWS) -> EmbedSummary:
    """Embed one shard of a modality with a registered model (see the module docstring).

    `progress_factory(total, desc)` may return a callable(n) to report progress (the CLI's bar).
    """
    record = get_model(store, model)
    record.check_loadable()
    _check_modality(record, modality)
    items, selected, already = pending_items(store, record, modality, where, shard)
    summary = EmbedSummary(record.model_id, modality, record.table(modality), shard, selected, already)
    if not items:
        return summary
    if modality == "audio":
        changed = changed_since_ingest(store, items)
        if changed:  # never embedded under the old clip's id; recorded like any failing clip
            store.record_errors([{**f, "stage": "embed"} for f in changed])
            summary.failures.extend(changed)
            skip = {f["item_id"] for f in changed}
            items = [it for it in items if it[0] not in skip]
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
