"""Scene classifiers (DESIGN 6.7-6.9): a student's audio tower + classifier head, optionally fused
with city / time metadata; checkpoints, `predict_proba` for `curator pseudo-label --classifier`.

A classifier checkpoint folder is a student checkpoint folder (student.json + model.safetensors,
so `curator models add --kind checkpoint` registers it and `curator embed` can use its towers)
plus `classifier.json` (class list, city vocabulary, fusion and head config, context template)
and `classifier.safetensors` (head + fusion weights). `checkpoint.json` records the set it was
trained on (`trained_on`), which is how pseudo-label lineage reaches back to round 0.

The head sees sqrt(dim) * a for the L2-normalised audio vector a: unit vectors have coordinates of
size ~1/sqrt(dim), which would start the head's first layer in a near-zero-gradient regime.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
import torch.nn as nn

from schemas.errors import ModelError, ParameterError, StoreError
from schemas.reading import read_table, table_names
from trainer.data.context import DEFAULT_CONTEXT_TEMPLATE, city_index
from trainer.data.rows import eval_loader
from trainer.device import resolve_device
from trainer.students.heads import TIME_FEATURES, ClassifierHead, MetadataFusion, time_features
from trainer.students.loading import load_student
from trainer.students.weights import load_file_into

CLASSIFIER_JSON = "classifier.json"
CLASSIFIER_WEIGHTS = "classifier.safetensors"
FORMAT = 1


@dataclass
class ClassifierConfig:
    classes: list[str]
    cities: list[str] = field(default_factory=list)  # vocabulary; unknown / unseen cities -> the learnt unknown row
    fuse_metadata: bool = False
    hidden: int = 256
    dropout: float = 0.0
    city_dim: int = 16
    time_hidden: int = 32
    time_features: int = TIME_FEATURES
    context_template: str = DEFAULT_CONTEXT_TEMPLATE
    lam: float = 0.1

    def validate(self) -> None:
        if len(self.classes) < 2 or len(set(self.classes)) != len(self.classes):
            raise ParameterError(f"a classifier needs at least 2 distinct classes, got {self.classes}")
        if self.fuse_metadata and not self.cities:
            raise ParameterError("--fuse-metadata: no training row has a city, so there is nothing to fuse")


class SceneClassifier(nn.Module):
    """student audio tower -> [fusion] -> ClassifierHead. `forward` returns (audio vectors, logits)."""

    def __init__(self, student: nn.Module, cfg: ClassifierConfig):
        super().__init__()
        cfg.validate()
        self.student, self.cfg = student, cfg
        self.fusion = (MetadataFusion(len(cfg.cities), cfg.time_features, cfg.city_dim, cfg.time_hidden)
                       if cfg.fuse_metadata else None)
        width = self.fusion.out_dim(student.dim) if self.fusion else student.dim
        self.head = ClassifierHead(width, len(cfg.classes), cfg.hidden, cfg.dropout)

    @property
    def classes(self) -> list[str]:
        return list(self.cfg.classes)

    def logits(self, audio: torch.Tensor, city: torch.Tensor | None = None,
               time: torch.Tensor | None = None) -> torch.Tensor:
        x = audio * math.sqrt(audio.shape[-1])
        if self.fusion is not None:
            n = audio.shape[0]
            city = city if city is not None else torch.full((n,), -1, dtype=torch.long, device=audio.device)
            time = time if time is not None else torch.zeros(n, self.cfg.time_features, device=audio.device)
            x = self.fusion(x, city.to(audio.device), time.to(audio.device))
        return self.head(x)

    def forward(self, waves: torch.Tensor, city=None, time=None) -> tuple[torch.Tensor, torch.Tensor]:
        audio = self.student.encode_audio(waves)
        return audio, self.logits(audio, city, time)

    def head_modules(self) -> nn.ModuleDict:
        mods = {"head": self.head}
        if self.fusion is not None:
            mods["fusion"] = self.fusion
        return nn.ModuleDict(mods)

    def save(self, folder: str | os.PathLike) -> Path:
        """Student files first (the folder stays a loadable student), then the head and its config."""
        from safetensors.torch import save_model

        folder = Path(folder)
        self.student.save(folder)
        save_model(self.head_modules(), str(folder / CLASSIFIER_WEIGHTS))
        meta = {"format": FORMAT, **asdict(self.cfg)}
        (folder / CLASSIFIER_JSON).write_text(json.dumps(meta, indent=2, sort_keys=True))
        return folder

    def metadata_tensors(self, cities: list, recorded_at: list) -> tuple[torch.Tensor, torch.Tensor]:
        """(city index, time features) tensors for rows of metadata, unknowns as the fusion expects."""
        return (torch.tensor(city_index(self.cfg.cities, cities), dtype=torch.long),
                torch.from_numpy(time_features(recorded_at)))


def load_classifier(folder: str | os.PathLike, device: str = "cpu") -> SceneClassifier:
    """Rebuild a saved classifier (eval mode) from its folder; safetensors only, no pickles."""
    folder = Path(folder)
    path = folder / CLASSIFIER_JSON
    if not path.is_file():
        raise ModelError(f"{folder}: no {CLASSIFIER_JSON}; not a classifier checkpoint "
                         "(train one with `trainer fit --loss hybrid --classes ...`)")
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ModelError(f"{path}: not valid JSON ({exc})") from None
    if meta.pop("format", None) != FORMAT:
        raise ModelError(f"{path}: classifier format is not {FORMAT}")
    try:
        cfg = ClassifierConfig(**meta)
    except TypeError as exc:
        raise ModelError(f"{path}: unexpected classifier config ({exc})") from None
    model = SceneClassifier(load_student(folder, device), cfg)
    load_file_into(model.head_modules(), folder / CLASSIFIER_WEIGHTS, CLASSIFIER_JSON, device)
    return model.to(device).eval()


# -- reading clips -------------------------------------------------------------------------------
CLIP_COLUMNS = ["audio_id", "uri", "city", "recorded_at", "labels"]


def audio_rows(store_uri: str, audio_ids: list[str] | None = None) -> pa.Table:
    """`audio` rows (CLIP_COLUMNS) of the given ids, in that order; all rows when ids is None."""
    if "audio" not in table_names(store_uri):
        raise StoreError(f"store {store_uri} has no 'audio' table; ingest clips first")
    table = read_table(store_uri, "audio", columns=CLIP_COLUMNS)
    if audio_ids is None:
        return table
    pos = pc.index_in(pa.array(list(audio_ids), pa.string()), value_set=table.column("audio_id"))
    if pos.null_count:
        missing = [a for a, ok in zip(audio_ids, pos.is_valid().to_pylist()) if not ok]
        raise ParameterError(f"{len(missing)} audio id(s) not in the store's audio table, e.g. {missing[0]!r}")
    return table.take(pos)


@torch.no_grad()
def predict_table(model: SceneClassifier, clips: pa.Table, batch_size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities (n, C), ok mask) for clips with uri / city / recorded_at; centre windows.
    A clip that fails to decode gets the uniform distribution (it can never pass a confidence cut)."""
    n, k = clips.num_rows, len(model.classes)
    probs = np.full((n, k), 1.0 / k, dtype=np.float64)
    ok = np.zeros(n, dtype=bool)
    cities = clips.column("city").to_pylist() if "city" in clips.column_names else [None] * n
    times = clips.column("recorded_at").to_pylist() if "recorded_at" in clips.column_names else [None] * n
    city_t, time_t = model.metadata_tensors(cities, times)
    device = next(model.parameters()).device
    was_training = model.training  # evaluated mid-run by the training loop: hand it back as it was
    model.eval()
    student = model.student
    try:
        for batch in eval_loader(clips.select(["audio_id", "uri"]), student.sample_rate, student.window_samples,
                                 batch_size):
            if not batch["n"]:
                continue
            rows = torch.tensor(batch["rows"], dtype=torch.long)
            _, logits = model(batch["wave"].to(device), city_t[rows], time_t[rows])
            probs[batch["rows"]] = torch.softmax(logits.float(), dim=1).cpu().numpy()
            ok[batch["rows"]] = True
    finally:
        model.train(was_training)
    return probs, ok


def predict_proba(ckpt_dir: str | os.PathLike, store_uri: str, audio_ids: list[str],
                  batch_size: int = 32, device: str = "auto") -> tuple[list[str], np.ndarray]:
    """(class labels, p(c | x) of shape (len(audio_ids), C)) from a classifier checkpoint, reading
    each clip's audio and city / time from the store (the contract `curator pseudo-label` uses)."""
    model = load_classifier(ckpt_dir, str(resolve_device(device)))
    if not audio_ids:
        return model.classes, np.zeros((0, len(model.classes)))
    probs, _ = predict_table(model, audio_rows(store_uri, list(audio_ids)), batch_size)
    return model.classes, probs
