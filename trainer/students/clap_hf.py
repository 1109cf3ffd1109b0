"""The "clap-hf" student: a Hugging Face `ClapModel` trained further (a student starts from its teacher).

Audio goes through `trainer.data.audio.ClapFeatures` (the torch re-implementation of the HF
ClapFeatureExtractor, on the model's device), exactly as `curator.models.teachers.ClapTeacher` feeds the
same folder, so a fresh student embeds like its teacher. The HF traps are handled here:
- a BERT tokenizer would emit token_type_ids that ClapModel forwards to the audio tower: load it
  with model_input_names = input_ids + attention_mask;
- `get_audio_features` / `get_text_features` return an output object in transformers 5 (the
  embedding is `.pooler_output`), a tensor in 4.x;
- a fused model takes 4-channel input: a fitted window is never longer than the window, and HF's
  short-clip fusion input is the same mel four times with is_longer False.

`save(folder)` writes student.json + model.safetensors (what `load_student` reads) and a plain HF
folder `folder/hf/` (config, weights, tokenizer, feature extractor, processor) that
`ClapModel.from_pretrained` loads as-is. The weights are written twice for that reason.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from schemas.errors import ModelError, ParameterError
from trainer.data.audio import ClapFeatures
from trainer.students.weights import (
    TOKENIZER_INPUTS,
    first_line,
    load_weights,
    quiet_hf,
    refuse_custom_code,
    save_weights,
    write_student_json,
)

HF_DIR = "hf"
OPTIONS = ("max_text_len",)


def _pooled(out) -> torch.Tensor:
    pooled = getattr(out, "pooler_output", out)
    if not isinstance(pooled, torch.Tensor):
        raise ModelError(f"ClapModel returned {type(out).__name__} without pooler_output")
    return pooled


def _load_parts(folder: str, with_weights: bool):
    """(model, tokenizer, feature extractor) of a local ClapModel folder; weights optional."""
    from transformers import AutoTokenizer, ClapConfig, ClapFeatureExtractor, ClapModel

    refuse_custom_code(folder)
    try:
        with quiet_hf():
            config = ClapConfig.from_pretrained(folder, local_files_only=True, trust_remote_code=False)
            if with_weights:
                model = ClapModel.from_pretrained(folder, local_files_only=True, trust_remote_code=False)
            else:
                model = ClapModel(config)
            fe = ClapFeatureExtractor.from_pretrained(folder, local_files_only=True, trust_remote_code=False)
            tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True, trust_remote_code=False,
                                                      model_input_names=TOKENIZER_INPUTS)
    except Exception as exc:  # transformers raises OSError / ValueError / KeyError variants
        raise ModelError(f"{folder}: not a loadable ClapModel folder ({first_line(exc)})") from None
    if fe.feature_size != config.audio_config.num_mel_bins:
        raise ModelError(f"{folder}: feature extractor has {fe.feature_size} mel bins, the audio tower "
                         f"expects {config.audio_config.num_mel_bins}")
    return model, tokenizer, fe


class ClapStudent(nn.Module):
    kind = "clap-hf"

    def __init__(self, model, tokenizer, feature_extractor, init_path: str, max_text_len: int | None = None):
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.feature_extractor = feature_extractor
        self.init_path = str(init_path)
        self.features = ClapFeatures.from_extractor(feature_extractor)
        cfg = model.config
        self.fused = bool(cfg.audio_config.enable_fusion)
        self.dim = int(cfg.projection_dim)
        self.sample_rate = int(feature_extractor.sampling_rate)
        self.window_samples = int(feature_extractor.nb_max_samples)
        text_cfg = cfg.text_config
        # Roberta-style position ids start after pad_token_id, so fewer tokens fit than positions.
        positions = int(text_cfg.max_position_embeddings) - int(text_cfg.pad_token_id or 0) - 1
        limit = min(int(tokenizer.model_max_length), positions)
        self.max_text_len = max(8, min(int(max_text_len), limit) if max_text_len else limit)

    @property
    def logit_scale(self) -> nn.Parameter:
        # ClapModel keeps two scales (audio->text and text->audio); the student trains the audio one
        # and copies it onto the other when saving, so the HF folder has a single s.
        return self.model.logit_scale_a

    @property
    def device(self) -> torch.device:
        return self.model.logit_scale_a.device

    def encode_audio(self, waves: torch.Tensor) -> torch.Tensor:
        if waves.dim() == 1:
            waves = waves[None]
        with torch.autocast(device_type=self.device.type, enabled=False):
            feats = self.features(waves.to(self.device))
        is_longer = None
        if self.fused:
            feats = feats.repeat(1, 4, 1, 1)
            is_longer = torch.zeros(feats.shape[0], 1, dtype=torch.bool, device=feats.device)
        out = self.model.get_audio_features(input_features=feats, is_longer=is_longer)
        return F.normalize(_pooled(out), dim=-1)

    def tokenize(self, texts: list[str]) -> dict:
        tokens = self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.max_text_len,
                                return_tensors="pt")
        return {k: tokens[k] for k in TOKENIZER_INPUTS}

    def encode_text(self, tokens: dict) -> torch.Tensor:
        out = self.model.get_text_features(input_ids=tokens["input_ids"].to(self.device),
                                           attention_mask=tokens["attention_mask"].to(self.device))
        return F.normalize(_pooled(out), dim=-1)

    def encode_texts(self, texts: list[str]) -> torch.Tensor:
        return self.encode_text(self.tokenize(texts))

    def save(self, folder: str | os.PathLike) -> Path:
        folder = Path(folder)
        hf = folder / HF_DIR
        hf.mkdir(parents=True, exist_ok=True)
        with torch.no_grad():
            self.model.logit_scale_t.copy_(self.model.logit_scale_a)
        with quiet_hf():
            self.model.save_pretrained(hf)
            self._save_processor(hf)
        save_weights(self.model, folder)
        write_student_json(folder, self.kind, {"init_path": self.init_path, "max_text_len": self.max_text_len}, self)
        return folder

    def _save_processor(self, hf: Path) -> None:
        from transformers import ClapProcessor

        try:
            ClapProcessor(feature_extractor=self.feature_extractor, tokenizer=self.tokenizer).save_pretrained(hf)
        except (TypeError, ValueError):
            # a processor refusing this tokenizer class: the parts still load one by one
            self.feature_extractor.save_pretrained(hf)
            self.tokenizer.save_pretrained(hf)

    @classmethod
    def build(cls, init_path: str | None = None, **cfg) -> "ClapStudent":
        if not init_path:
            raise ParameterError("a clap-hf student needs init_path: a local ClapModel folder (its teacher)")
        unknown = sorted(set(cfg) - set(OPTIONS))
        if unknown:
            raise ParameterError(f"unknown clap-hf student option(s): {', '.join(unknown)}; known: {', '.join(OPTIONS)}")
        if not Path(init_path).is_dir():
            raise ModelError(f"{init_path}: no such folder")
        model, tokenizer, fe = _load_parts(str(init_path), with_weights=True)
        return cls(model, tokenizer, fe, str(init_path), cfg.get("max_text_len"))

    @classmethod
    def from_folder(cls, folder: Path, meta: dict, device: str) -> "ClapStudent":
        config = dict(meta.get("config") or {})
        model, tokenizer, fe = _load_parts(str(folder / HF_DIR), with_weights=False)
        load_weights(model, folder, device)
        return cls(model, tokenizer, fe, config.get("init_path", ""), config.get("max_text_len"))
