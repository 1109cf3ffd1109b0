"""trainer.data.audio: real files through soundfile, windows, and the torch log-mel against HF's numpy one."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch
from tiny_models import tiny_feature_extractor

from schemas.errors import AudioError, ParameterError
from trainer.data.audio import ClapFeatures, fit_window, load_audio, window_starts


@pytest.mark.parametrize("suffix,sr,channels", [(".wav", 16000, 1), (".flac", 22050, 2), (".ogg", 48000, 1),
                                                (".mp3", 44100, 2)])
def test_load_audio_decodes_mixes_and_resamples(tmp_path, tone, suffix, sr, channels):
    path = tone(tmp_path / f"clip{suffix}", seconds=0.5, sr=sr, freq=440.0, channels=channels)
    wave = load_audio(path, 16000)
    assert wave.dtype == np.float32 and wave.ndim == 1
    # mp3 frames add encoder delay / padding; the others are sample exact
    assert abs(wave.shape[0] - 8000) <= (1200 if suffix == ".mp3" else 1)
    spectrum = np.abs(np.fft.rfft(wave[:4096]))
    assert abs(np.argmax(spectrum) * 16000 / 4096 - 440.0) < 8  # still a 440 Hz tone after resampling


def test_load_audio_stereo_mix_down_is_the_mean(tmp_path):
    left, right = np.full(1000, 0.5, np.float32), np.full(1000, -0.25, np.float32)
    sf.write(tmp_path / "s.wav", np.stack([left, right], axis=1), 16000, subtype="FLOAT")
    np.testing.assert_allclose(load_audio(str(tmp_path / "s.wav"), 16000), 0.125, atol=1e-7)
    assert load_audio(f"file://{tmp_path}/s.wav", 16000).shape == (1000,)


def test_load_audio_errors_name_the_file_and_reason(tmp_path):
    with pytest.raises(AudioError, match=r"nope\.wav: no such file"):
        load_audio(str(tmp_path / "nope.wav"), 16000)
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF....WAVEfmt garbage that is not audio" * 10)
    with pytest.raises(AudioError, match=r"bad\.wav: cannot decode"):
        load_audio(str(bad), 16000)
    sf.write(tmp_path / "empty.wav", np.zeros((0,), np.float32), 16000)
    with pytest.raises(AudioError, match="no samples"):
        load_audio(str(tmp_path / "empty.wav"), 16000)


def test_fit_window_repeat_pads_like_hf_and_crops_long_clips():
    short = np.arange(1, 4, dtype=np.float32)  # 3 samples into 8: tiled twice, then two zeros
    np.testing.assert_array_equal(fit_window(short, 8), [[1, 2, 3, 1, 2, 3, 0, 0]])
    long = np.arange(10, dtype=np.float32)
    np.testing.assert_array_equal(fit_window(long, 4), [[3, 4, 5, 6]])  # deterministic centre crop
    a = fit_window(long, 4, rng=np.random.default_rng(7))
    b = fit_window(long, 4, rng=np.random.default_rng(7))
    np.testing.assert_array_equal(a, b)
    windows = fit_window(long, 4, "average")
    np.testing.assert_array_equal(windows, [[0, 1, 2, 3], [4, 5, 6, 7], [6, 7, 8, 9]])  # last aligned to end
    assert window_starts(8, 4) == [0, 4]
    assert fit_window(np.ones(1000, np.float32), 10, "average", max_windows=5).shape == (5, 10)
    with pytest.raises(ParameterError, match="long_rule"):
        fit_window(long, 4, "middle")


def _test_waves(n: int, sr: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    t = np.arange(int(n * 0.7)) / sr
    clips = [0.5 * np.sin(2 * np.pi * 440 * t) + 0.01 * rng.standard_normal(t.shape),  # tone, repeat-padded
             0.3 * rng.standard_normal(3 * n),  # long noise, centre crop
             1e-3 * rng.standard_normal(700)]  # very quiet and very short
    return np.concatenate([fit_window(c.astype(np.float32), n) for c in clips])


@pytest.mark.parametrize("size", ["tiny", "laion"])
def test_clap_features_match_hf_extractor(size):
    from transformers import ClapFeatureExtractor

    fe = tiny_feature_extractor() if size == "tiny" else ClapFeatureExtractor(truncation="rand_trunc")
    waves = _test_waves(fe.nb_max_samples, fe.sampling_rate)
    ref = fe(list(waves.astype(np.float64)), sampling_rate=fe.sampling_rate, return_tensors="np")["input_features"]
    module = ClapFeatures.from_extractor(fe)
    ours = module(torch.from_numpy(waves)).numpy()
    assert ours.shape == ref.shape == (3, 1, fe.nb_max_samples // fe.hop_length + 1, fe.feature_size)
    assert np.abs(ours - ref).max() < 1e-4  # CPU default: float64 STFT
    fast = ClapFeatures.from_extractor(fe, precision="float32")(torch.from_numpy(waves)).numpy()
    assert np.abs(fast - ref).max() < 2e-3
    # built from plain parameters (torchaudio filter bank) it is the same transform
    plain = ClapFeatures(fe.sampling_rate, fe.fft_window_size, fe.hop_length, fe.feature_size,
                         fe.frequency_min, fe.frequency_max)
    assert np.abs(plain(torch.from_numpy(waves)).numpy() - ref).max() < 1e-3


def test_clap_features_loads_from_a_processor_folder(tmp_path):
    from transformers import ClapFeatureExtractor

    tiny_feature_extractor().save_pretrained(tmp_path)
    module = ClapFeatures.from_pretrained(str(tmp_path))
    assert (module.sample_rate, module.window_samples, module.n_mels) == (16000, 16000, 32)
    fe = ClapFeatureExtractor.from_pretrained(str(tmp_path), trust_remote_code=False)
    assert fe.truncation == "rand_trunc"
