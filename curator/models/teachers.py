"""Teachers: one interface over every kind of registered model.

`load_teacher(record, device)` returns an object with `.embed_audio(waves)`, `.embed_texts(texts)`
(both -> float32 (n, dim), L2-normalised), `.sample_rate`, `.window_samples`, `.dim`,
`.logit_scale` (the multiplier s) and `.modalities`. Kinds:

- `clap-hf`: a Hugging Face `ClapModel` folder (laion/clap-htsat-unfused layout), wrapped by
  `trainer.students.clap_hf.ClapStudent`; features come from `trainer.data.audio.ClapFeatures`
  (torch, on the model's device), not the numpy extractor.
- `checkpoint`: a student folder written by `trainer fit`, loaded by `trainer.students.loading.load_student`.
- `sentence`: a text-only sentence encoder (BERT-family + pooling); audio is refused.

Everything loads offline from local files with `trust_remote_code` off.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from curator.models.fingerprint import verify_files
from schemas.errors import ModelError
from trainer.data.audio import fit_window
from trainer.device import resolve_device
from trainer.students.clap_hf import ClapStudent
from trainer.students.loading import load_student
from trainer.students.weights import first_line, quiet_hf, refuse_custom_code


class Teacher:
    modalities: tuple[str, ...] = ("audio", "text")
    sample_rate: int | None = None
    window_samples: int | None = None
    dim: int = 0
    logit_scale: float | None = None

    def __init__(self, name: str, device: torch.device, amp: bool = False):
        self.name = name
        self.device = device
        # bf16 autocast only where it pays (CUDA); vectors are re-normalised in float32 afterwards.
        self.amp = bool(amp) and device.type == "cuda"

    def _autocast(self):
        return torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.amp) if self.device.type == "cuda" \
            else torch.autocast("cpu", enabled=False)

    def _batch(self, waves) -> torch.Tensor:
        """A (B, window) float32 tensor; lists of clips are fitted (repeat-pad / centre crop)."""
        if isinstance(waves, torch.Tensor) and waves.dim() == 2 and waves.shape[1] == self.window_samples:
            return waves.to(self.device, torch.float32)
        if isinstance(waves, np.ndarray) and waves.ndim == 2 and waves.shape[1] == self.window_samples:
            return torch.from_numpy(np.ascontiguousarray(waves, np.float32)).to(self.device)
        fitted = [fit_window(np.asarray(w, np.float32), self.window_samples, "crop")[0] for w in waves]
        return torch.from_numpy(np.stack(fitted)).to(self.device)

    def embed_audio(self, waves) -> np.ndarray:
        if "audio" not in self.modalities:
            raise ModelError(f"model {self.name!r} is text-only (kind sentence); it cannot embed audio")
        if len(waves) == 0:
            return np.empty((0, self.dim), np.float32)
        with torch.inference_mode(), self._autocast():
            vecs = self._audio(self._batch(waves))
        return F.normalize(vecs.float(), dim=-1).cpu().numpy()

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        if len(texts) == 0:
            return np.empty((0, self.dim), np.float32)
        with torch.inference_mode(), self._autocast():
            vecs = self._texts(list(texts))
        return F.normalize(vecs.float(), dim=-1).cpu().numpy()

    def _audio(self, batch: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _texts(self, texts: list[str]) -> torch.Tensor:
        raise NotImplementedError


class StudentTeacher(Teacher):
    """A trainer student used as a teacher: a `checkpoint` folder is loaded as saved; a `clap-hf`
    folder is a ClapModel, wrapped by the same `ClapStudent` code a student starting from it trains,
    so teacher and fresh student embed identically (and the Hugging Face traps are handled once)."""

    def __init__(self, name: str, folder: str, device: torch.device, amp: bool = False, kind: str = "checkpoint"):
        super().__init__(name, device, amp)
        try:
            student = ClapStudent.build(folder) if kind == "clap-hf" else load_student(folder, device=str(device))
        except ModelError as exc:
            raise ModelError(f"model {name!r}: {exc}") from None
        except Exception as exc:  # a torn or foreign folder: say which and why, in one line
            raise ModelError(f"model {name!r}: {folder} is not a loadable student checkpoint ({first_line(exc)})") from None
        self.student = student.to(device).eval()
        self.sample_rate = int(self.student.sample_rate)
        self.window_samples = int(self.student.window_samples)
        self.dim = int(self.student.dim)
        self.logit_scale = float(self.student.logit_scale.detach().exp())

    def _audio(self, batch: torch.Tensor) -> torch.Tensor:
        return self.student.encode_audio(batch)

    def _texts(self, texts: list[str]) -> torch.Tensor:
        return self.student.encode_texts(texts)


class SentenceTeacher(Teacher):
    modalities = ("text",)
    POOLING = ("mean", "cls", "max")

    def __init__(self, name: str, folder: str, device: torch.device, amp: bool = False):
        super().__init__(name, device, amp)
        from transformers import AutoConfig, AutoModel, AutoTokenizer

        root = Path(folder)
        try:
            refuse_custom_code(folder)
        except ModelError as exc:
            raise ModelError(f"model {name!r}: {exc}") from None
        try:
            cfg = AutoConfig.from_pretrained(folder, local_files_only=True, trust_remote_code=False)
        except Exception as exc:  # transformers raises OSError / ValueError / KeyError variants
            raise ModelError(f"model {name!r}: {folder} is not a transformers model folder ({first_line(exc)})") from None
        if cfg.model_type == "clap":
            raise ModelError(f"model {name!r}: {folder} is a CLAP model; register it with --kind clap-hf")
        self.pooling, self.max_tokens = self._sentence_config(root)
        try:
            self.model = AutoModel.from_pretrained(folder, local_files_only=True, trust_remote_code=False)
            self.tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True, trust_remote_code=False)
        except Exception as exc:  # as above: one line naming the folder instead of a transformers trace
            raise ModelError(f"model {name!r}: cannot load sentence encoder from {folder} ({first_line(exc)})") from None
        self.model.eval().to(device)
        self.dim = int(cfg.hidden_size)

    def _sentence_config(self, root: Path) -> tuple[str, int]:
        pooling, max_tokens = "mean", 256
        modules = root / "modules.json"
        if modules.exists():
            for module in json.loads(modules.read_text()):
                kind = module.get("type", "").rsplit(".", 1)[-1]
                if kind not in ("Transformer", "Pooling", "Normalize"):
                    raise ModelError(f"model {self.name!r}: sentence-transformers module {kind} is not supported "
                                     f"(only Transformer + Pooling + Normalize)")
        pool_cfg = root / "1_Pooling" / "config.json"
        if pool_cfg.exists():
            flags = json.loads(pool_cfg.read_text())
            chosen = [p for p in self.POOLING if flags.get(f"pooling_mode_{p}_token" if p == "cls" else f"pooling_mode_{p}_tokens")]
            if len(chosen) != 1:
                raise ModelError(f"model {self.name!r}: {pool_cfg} must select exactly one of mean/cls/max pooling")
            pooling = chosen[0]
        st_cfg = root / "sentence_bert_config.json"
        if st_cfg.exists():
            max_tokens = int(json.loads(st_cfg.read_text()).get("max_seq_length", max_tokens))
        return pooling, max_tokens

    def _texts(self, texts: list[str]) -> torch.Tensor:
        tokens = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_tokens, return_tensors="pt")
        tokens = {k: v.to(self.device) for k, v in tokens.items()}
        hidden = self.model(**tokens).last_hidden_state
        mask = tokens["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        if self.pooling == "cls":
            return hidden[:, 0]
        if self.pooling == "max":
            return hidden.masked_fill(mask == 0, float("-inf")).max(dim=1).values
        return (hidden * mask).sum(1) / mask.sum(1).clamp_min(1e-9)


def load_teacher(record, device: str | torch.device = "auto", verify: bool = True, amp: bool = False) -> Teacher:
    """Load the registered model `record` (a curator.models.registry.ModelRecord) on `device`.

    `verify` re-hashes the folder first: vectors from a folder that changed since registration
    would not be the registered model's.
    """
    if record.kind == "external":  # vectors only: no weights here (ModelRecord.check_loadable says so)
        record.check_loadable()
    if record.kind not in ("clap-hf", "checkpoint", "sentence"):  # the registry's LOADABLE kinds
        raise ModelError(f"model {record.model_id!r}: unknown kind {record.kind!r}")
    if verify:
        verify_files(record)
    dev = resolve_device(device)
    with quiet_hf():  # "Loading weights" bars from every from_pretrained would bury the embed bar
        if record.kind == "sentence":
            teacher = SentenceTeacher(record.model_id, record.path, dev, amp)
        else:
            teacher = StudentTeacher(record.model_id, record.path, dev, amp, kind=record.kind)
    if record.dim and teacher.dim != record.dim:
        raise ModelError(f"model {record.model_id!r}: loads as {teacher.dim}-d but was registered as {record.dim}-d")
    return teacher
