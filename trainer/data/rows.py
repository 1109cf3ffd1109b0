"""Training data: the rows of one set version (plus an optional replay set) as decoded, windowed clips.

Each clip's random crop is a pure function of (seed, epoch, row), like the batch order in
`trainer.data.batches`, so a resumed run decodes exactly what the uninterrupted one did.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import torch
from torch.utils.data import DataLoader, Dataset

from schemas.errors import AudioError, MixedModelsError, RefError
from schemas.fingerprint import folder_sha256
from schemas.refs import parse_ref
from schemas.sets import ResolvedSet, read_set
from trainer.data.audio import fit_window, load_audio

MAIN, REPLAY = 0, 1
TEACHER_LOSSES = ("soft",)  # losses that read the teacher vectors stored on the rows


@dataclass(frozen=True)
class SetSource:
    """A set as the trainer uses it: the reference as given, what it resolved to, its rows."""

    ref: str
    resolved: ResolvedSet
    table: pa.Table

    def lineage(self) -> dict:
        return {"ref": self.ref, "name": self.resolved.name, "version": self.resolved.version,
                "content_hash": self.resolved.content_hash, "rows": self.table.num_rows}


def open_set(store_uri: str, ref: str) -> SetSource:
    """Read one set version (bare name = latest); rows are re-hashed against the catalog."""
    parse_ref(ref)
    table, resolved = read_set(store_uri, ref)
    if table.num_rows == 0:
        raise RefError(f"set {resolved.ref} has no rows; nothing to train on")
    for col in ("uri", "text"):
        if col not in table.column_names:
            raise RefError(f"set {resolved.ref} has no {col!r} column")
    return SetSource(ref=ref, resolved=resolved, table=table)


def _teacher(src: SetSource) -> tuple[str | None, int | None]:
    """(teacher identity, vector size) of a set that carries teacher vectors; (None, None) otherwise."""
    col = "teacher_audio"
    if col not in src.table.column_names or not pa.types.is_fixed_size_list(src.table.schema.field(col).type) \
            or src.table.column(col).null_count == src.table.num_rows:
        return None, None
    r = src.resolved
    return (r.model_sha256 or r.model_id), src.table.schema.field(col).type.list_size


def open_sets(store_uri: str, ref: str, replay_ref: str | None, loss: str) -> tuple[SetSource, SetSource | None]:
    """The training set and the optional replay set. A loss that reads teacher vectors refuses a
    replay set whose vectors come from another teacher: two teachers' similarities are not one target."""
    main = open_set(store_uri, ref)
    replay = open_set(store_uri, replay_ref) if replay_ref else None
    if replay is not None and loss in TEACHER_LOSSES:
        (t_main, d_main), (t_replay, d_replay) = _teacher(main), _teacher(replay)
        if t_main and t_replay and (t_main != t_replay or d_main != d_replay):
            raise MixedModelsError(
                f"--replay {replay.resolved.ref}: its teacher vectors come from {replay.resolved.model_id!r} "
                f"({d_replay}-d), the set {main.resolved.ref}'s from {main.resolved.model_id!r} ({d_main}-d); "
                f"--loss {loss} cannot mix two teachers (use a replay set built by the same teacher, or --loss clap)")
    return main, replay


def check_init_teacher(main: SetSource, init_folder: str, loss: str) -> None:
    """A loss that reads teacher vectors trains a student to match that teacher's similarities, so
    the student must start from that teacher (DESIGN 6.2): refuse an `--init` whose files are not
    the model the set was built by. Sets built without a model (no teacher vectors) pass."""
    expected = main.resolved.model_sha256
    if loss not in TEACHER_LOSSES or not expected:
        return
    if folder_sha256(init_folder) != expected:
        raise MixedModelsError(
            f"--init {init_folder}: not the teacher whose vectors set {main.resolved.ref} carries "
            f"(model {main.resolved.model_id!r}, sha256 {expected[:12]}); --loss {loss} starts a student from its "
            f"teacher: pass that model's folder (or its registered name) to --init, or use --loss clap")


def _vectors(table: pa.Table, name: str) -> tuple[np.ndarray | None, np.ndarray]:
    """(n, d) float32 array of a fixed-size-list column and a row mask of non-null vectors."""
    if name not in table.column_names:
        return None, np.zeros(table.num_rows, dtype=bool)
    col = table.column(name).combine_chunks()
    if not pa.types.is_fixed_size_list(col.type):
        return None, np.zeros(table.num_rows, dtype=bool)
    valid = ~np.asarray(col.is_null().to_numpy(zero_copy_only=False), dtype=bool)
    dim = col.type.list_size
    out = np.zeros((len(col), dim), dtype=np.float32)
    if valid.any():
        filled = col.filter(pa.array(valid))
        out[valid] = filled.flatten().to_numpy(zero_copy_only=False).astype(np.float32).reshape(-1, dim)
    return out, valid


def crop_window(wave: np.ndarray, n_samples: int, rng: np.random.Generator | None) -> np.ndarray:
    """One window of `n_samples`: a random crop with `rng`, the centre crop without; short clips are
    repeat-padded by the shared front-end, so training and embedding window clips the same way."""
    return fit_window(wave, n_samples, "crop", rng)[0]


class ClipRows(Dataset):
    """Rows of a set (and optionally a replay set); items are addressed by (part, row, epoch).

    `train=True` crops at random with a generator seeded by (seed, part, row, epoch); otherwise
    the centre is taken. A clip that cannot be decoded yields an item with `error` set instead
    of raising, so one corrupt file costs one example, not the run.
    """

    def __init__(self, parts: list[pa.Table], sample_rate: int, window_samples: int, train: bool = True,
                 seed: int = 0, cache_bytes: int = 0):
        self.sample_rate = int(sample_rate)
        self.window_samples = int(window_samples)
        self.train = train
        self.seed = int(seed)
        self.cache_bytes = int(cache_bytes)
        self._cache: dict[tuple[int, int], np.ndarray] = {}
        self._cached = 0
        self.parts = [self._columns(t) for t in parts]

    @staticmethod
    def _columns(table: pa.Table) -> dict:
        n = table.num_rows

        def col(name, default=None):
            return table.column(name).to_pylist() if name in table.column_names else [default] * n

        ta, ta_ok = _vectors(table, "teacher_audio")
        tt, tt_ok = _vectors(table, "teacher_text")
        return {"n": n, "uri": col("uri"), "text": col("text", ""), "label": col("label"),
                "audio_id": col("audio_id"), "teacher_audio": ta, "teacher_text": tt,
                "teacher_ok": ta_ok & tt_ok}

    def __len__(self) -> int:
        return sum(p["n"] for p in self.parts)

    def _decode(self, part: int, row: int) -> np.ndarray:
        key = (part, row)
        wave = self._cache.get(key)
        if wave is None:
            wave = load_audio(self.parts[part]["uri"][row], self.sample_rate)
            if self._cached + wave.nbytes <= self.cache_bytes:
                self._cache[key] = wave
                self._cached += wave.nbytes
        return wave

    def __getitem__(self, key) -> dict:
        part, row, epoch = key if isinstance(key, tuple) else (MAIN, int(key), 0)
        p = self.parts[part]
        item = {"part": part, "row": row, "audio_id": p["audio_id"][row], "uri": p["uri"][row]}
        try:
            wave = self._decode(part, row)
            if wave.size == 0:
                raise AudioError(f"{p['uri'][row]}: decoded to zero samples")
        except AudioError as exc:
            item["error"] = str(exc)
            return item
        rng = np.random.default_rng([self.seed, part, row, epoch]) if self.train else None
        item["wave"] = crop_window(wave, self.window_samples, rng)
        item["text"] = p["text"][row] or ""
        item["label"] = p["label"][row]
        if p["teacher_ok"][row]:
            item["teacher_audio"] = p["teacher_audio"][row]
            item["teacher_text"] = p["teacher_text"][row]
        return item


def collate(items: list[dict]) -> dict:
    """Stack the decodable items; failed ones travel along in `errors` for the loop to record."""
    good = [it for it in items if "error" not in it]
    errors = [{"audio_id": it["audio_id"], "uri": it["uri"], "message": it["error"]} for it in items if "error" in it]
    batch = {"errors": errors, "n": len(good), "part": items[0]["part"] if items else MAIN,
             "rows": [it["row"] for it in good], "audio_id": [it["audio_id"] for it in good],
             "text": [it.get("text", "") for it in good], "label": [it.get("label") for it in good]}
    if good:
        batch["wave"] = torch.from_numpy(np.stack([it["wave"] for it in good]))
    if good and all("teacher_audio" in it for it in good):
        batch["teacher_audio"] = torch.from_numpy(np.stack([it["teacher_audio"] for it in good]))
        batch["teacher_text"] = torch.from_numpy(np.stack([it["teacher_text"] for it in good]))
    return batch


def eval_loader(table: pa.Table, sample_rate: int, window_samples: int, batch_size: int = 32,
                num_workers: int = 0) -> DataLoader:
    """Centre-cropped, in-order clips for evaluation (same windows every time)."""
    rows = ClipRows([table], sample_rate, window_samples, train=False)
    # Own generator: evaluating mid-run must not draw from the global torch RNG (exact resume).
    return DataLoader(rows, batch_size=batch_size, shuffle=False, collate_fn=collate, num_workers=num_workers,
                      generator=torch.Generator().manual_seed(0))
