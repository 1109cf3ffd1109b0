"""Teachers: one interface over every kind of registered model.

`load_teacher(record, device)` returns an object with `.embed_audio(waves)`, `.embed_texts(texts)`
(both -> float32 (n, dim), L2-normalised), `.sample_rate`, `.window_samples`, `.dim`,
`.logit_scale` (the multiplier s) and `.modalities`. Kinds:

- `clap-hf`: a Hugging Face `ClapModel` folder (laion/clap-htsat-unfused layout). Features come from
  `trainer.data.audio.ClapFeatures` (torch, on the model's device), not the numpy extractor.
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
from trainer.data.audio import ClapFeatures, fit_window
from trainer.device import resolve_device
from trainer.students.loading import load_student

TOKENIZER_INPUTS = ["input_ids", "attention_mask"]  # BERT's token_type_ids would reach CLAP's audio tower


def _quiet_transformers() -> None:
    # "Loading weights" bars from every from_pretrained would bury the embed progress bar.
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else exc.__class__.__name__


def _pooled(out) -> torch.Tensor:
    """transformers 5 returns an output object whose pooler_output is the embedding; 4.x a tensor."""
    if isinstance(out, torch.Tensor):
        return out
    pooled = getattr(out, "pooler_output", None)
    if pooled is None:
        raise ModelError(f"model returned {type(out).__name__} without pooler_output")
    return pooled


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


class ClapTeacher(Teacher):
    def __init__(self, name: str, folder: str, device: torch.device, amp: bool = False):
        super().__init__(name, device, amp)
        from transformers import AutoTokenizer, ClapFeatureExtractor, ClapModel

        try:
            self.model = ClapModel.from_pretrained(folder, local_files_only=True, trust_remote_code=False)
            fe = ClapFeatureExtractor.from_pretrained(folder, local_files_only=True)
            self.tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True,
                                                           model_input_names=TOKENIZER_INPUTS)
        except Exception as exc:  # transformers raises OSError / ValueError / KeyError variants
            raise ModelError(f"model {name!r}: {folder} is not a loadable ClapModel folder ({_first_line(exc)})") from None
        cfg = self.model.config
        if fe.feature_size != cfg.audio_config.num_mel_bins:
            raise ModelError(f"model {name!r}: feature extractor has {fe.feature_size} mel bins, audio tower "
                             f"expects {cfg.audio_config.num_mel_bins}")
        self.model.eval().to(device)
        self.features = ClapFeatures.from_extractor(fe).to(device)
        self.fused = bool(cfg.audio_config.enable_fusion)
        self.sample_rate = int(fe.sampling_rate)
        self.window_samples = int(fe.nb_max_samples)
        self.dim = int(cfg.projection_dim)
        self.logit_scale = float(self.model.logit_scale_a.detach().exp())
        text_cfg = cfg.text_config
        positions = int(text_cfg.max_position_embeddings) - int(text_cfg.pad_token_id or 0) - 1
        self.max_tokens = max(8, min(int(self.tokenizer.model_max_length), positions))

    def _audio(self, batch: torch.Tensor) -> torch.Tensor:
        feats = self.features(batch)
        is_longer = None
        if self.fused:
            # A fitted window is never longer than the window: HF's short-clip fusion input is
            # the same mel four times, with is_longer False.
            feats = feats.repeat(1, 4, 1, 1)
            is_longer = torch.zeros(feats.shape[0], 1, dtype=torch.bool, device=feats.device)
        return _pooled(self.model.get_audio_features(input_features=feats, is_longer=is_longer))

    def _texts(self, texts: list[str]) -> torch.Tensor:
        tokens = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_tokens, return_tensors="pt")
        tokens = {k: v.to(self.device) for k, v in tokens.items() if k in TOKENIZER_INPUTS}
        return _pooled(self.model.get_text_features(**tokens))


class StudentTeacher(Teacher):
    def __init__(self, name: str, folder: str, device: torch.device, amp: bool = False):
        super().__init__(name, device, amp)
        try:
            self.student = load_student(folder, device=str(device))
        except ModelError:
            raise
        except Exception as exc:  # a torn or foreign folder: say which and why, in one line
            raise ModelError(f"model {name!r}: {folder} is not a loadable student checkpoint ({_first_line(exc)})") from None
        self.student.eval()
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
            cfg = AutoConfig.from_pretrained(folder, local_files_only=True, trust_remote_code=False)
        except Exception as exc:  # transformers raises OSError / ValueError / KeyError variants
            raise ModelError(f"model {name!r}: {folder} is not a transformers model folder ({_first_line(exc)})") from None
        if cfg.model_type == "clap":
            raise ModelError(f"model {name!r}: {folder} is a CLAP model; register it with --kind clap-hf")
        self.pooling, self.max_tokens = self._sentence_config(root)
        try:
            self.model = AutoModel.from_pretrained(folder, local_files_only=True, trust_remote_code=False)
            self.tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        except Exception as exc:  # as above: one line naming the folder instead of a transformers trace
            raise ModelError(f"model {name!r}: cannot load sentence encoder from {folder} ({_first_line(exc)})") from None
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


_KINDS = {"clap-hf": ClapTeacher, "checkpoint": StudentTeacher, "sentence": SentenceTeacher}


def load_teacher(record, device: str | torch.device = "auto", verify: bool = True, amp: bool = False) -> Teacher:
    """Load the registered model `record` (a curator.models.registry.ModelRecord) on `device`.

    `verify` re-hashes the folder first: vectors from a folder that changed since registration
    would not be the registered model's.
    """
    if record.kind not in _KINDS:
        raise ModelError(f"model {record.model_id!r}: unknown kind {record.kind!r}; kinds: {', '.join(_KINDS)}")
    if verify:
        verify_files(record)
    dev = resolve_device(device)
    _quiet_transformers()
    teacher = _KINDS[record.kind](record.model_id, record.path, dev, amp)
    if record.dim and teacher.dim != record.dim:
        raise ModelError(f"model {record.model_id!r}: loads as {teacher.dim}-d but was registered as {record.dim}-d")
    return teacher
