"""Audio front-end shared by the curator (teachers) and the trainer (students).

Decoding goes through soundfile (wav / flac / ogg / mp3) because `torchaudio.load` needs
torchcodec, which we do not ship. Resampling and log-mel features use torchaudio / torch so the
same code runs on DataLoader workers or on the GPU.

Window rule (`fit_window`):
- a clip shorter than the window is repeat-padded: tiled a whole number of times, then padded with
  zeros (exactly HF `ClapFeatureExtractor(padding="repeatpad")`, so features match HF bit for bit
  up to float rounding);
- a clip longer than the window is either cropped (`long_rule="crop"`: a deterministic centre crop,
  or a random crop when an `rng` is given, for training) or split into consecutive windows
  (`long_rule="average"`: windows at 0, n, 2n, ..., the last one aligned to the clip's end so no
  audio is dropped and nothing is padded); the caller averages the windows' embeddings.
"""

from __future__ import annotations

import os
from urllib.parse import unquote, urlparse

import numpy as np
import torch
from torch import nn

from schemas.errors import AudioError, ParameterError

LONG_RULES = ("crop", "average")


def _local_path(uri: str) -> str:
    if uri.startswith("file://"):
        return unquote(urlparse(uri).path)
    return uri


def load_audio(uri: str, target_sr: int, mono: bool = True) -> np.ndarray:
    """Decode `uri`, mix down to mono and resample to `target_sr`; float32 (samples,).

    Raises AudioError naming the file and the reason (missing, empty, corrupt, not finite).
    """
    import soundfile as sf

    path = _local_path(str(uri))
    if not os.path.exists(path):
        raise AudioError(f"{uri}: no such file")
    try:
        data, sr = sf.read(path, dtype="float32", always_2d=True)
    except Exception as exc:  # soundfile raises LibsndfileError / RuntimeError / TypeError variants
        reason = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
        raise AudioError(f"{uri}: cannot decode ({reason})") from None
    if data.shape[0] == 0:
        raise AudioError(f"{uri}: contains no samples")
    if not np.isfinite(data).all():
        raise AudioError(f"{uri}: contains NaN or infinite samples")
    wave = data.mean(axis=1) if mono else data.T
    return resample(np.ascontiguousarray(wave, dtype=np.float32), int(sr), int(target_sr))


def resample(wave: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    if orig_sr == target_sr:
        return wave
    import torchaudio.functional as AF

    out = AF.resample(torch.from_numpy(wave), orig_sr, target_sr)
    return out.numpy().astype(np.float32, copy=False)


def _repeat_pad(wave: np.ndarray, n_samples: int) -> np.ndarray:
    reps = n_samples // wave.shape[0]
    tiled = np.tile(wave, reps)
    return np.pad(tiled, (0, n_samples - tiled.shape[0]))


def window_starts(length: int, n_samples: int) -> list[int]:
    """Starts of consecutive windows covering a long clip; the last is aligned to the end."""
    starts = list(range(0, length - n_samples + 1, n_samples))
    if starts[-1] + n_samples < length:
        starts.append(length - n_samples)
    return starts


def fit_window(wave: np.ndarray, n_samples: int, long_rule: str = "crop",
               rng: np.random.Generator | None = None, max_windows: int | None = None) -> np.ndarray:
    """Return (n_windows, n_samples) float32 windows of `wave` (see the module docstring).

    `max_windows` bounds the cost of very long files under "average": evenly spaced windows are kept.
    """
    if long_rule not in LONG_RULES:
        raise ParameterError(f"long_rule must be one of {', '.join(LONG_RULES)}, got {long_rule!r}")
    wave = np.asarray(wave, dtype=np.float32)
    if wave.ndim != 1 or wave.shape[0] == 0:
        raise AudioError(f"expected a non-empty mono waveform, got shape {wave.shape}")
    length = wave.shape[0]
    if length <= n_samples:
        return _repeat_pad(wave, n_samples)[None, :]
    if long_rule == "crop":
        start = int(rng.integers(0, length - n_samples + 1)) if rng is not None else (length - n_samples) // 2
        return wave[None, start:start + n_samples].copy()
    starts = window_starts(length, n_samples)
    if max_windows and len(starts) > max_windows:
        pick = np.linspace(0, len(starts) - 1, max_windows).round().astype(int)
        starts = [starts[i] for i in pick]
    return np.stack([wave[s:s + n_samples] for s in starts])


class ClapFeatures(nn.Module):
    """HF `ClapFeatureExtractor` log-mel (truncation "rand_trunc" / "fusion" filter banks) in torch.

    Input: waves already fitted to the window, Tensor[B, samples] on any device. Output:
    Tensor[B, 1, frames, n_mels], the `input_features` layout `ClapModel.get_audio_features` takes.
    Matches the numpy extractor within 1e-4 dB with float64 (the CPU default) and within 1e-3 dB
    in float32 (tested); the STFT, the mel product and the dB conversion run wherever the input
    tensor lives. Windows shorter than n_fft/2 samples cannot be reflect-padded (as in HF).
    """

    def __init__(self, sample_rate: int, n_fft: int, hop_length: int, n_mels: int,
                 f_min: float, f_max: float, mel_filters: np.ndarray | None = None,
                 slaney: bool = True, max_length_s: float | None = None, precision: str = "auto"):
        super().__init__()
        if precision not in ("auto", "float32", "float64"):
            raise ParameterError(f"precision must be auto, float32 or float64, got {precision!r}")
        self.precision = precision
        self.sample_rate = int(sample_rate)
        self.n_fft = int(n_fft)
        self.hop_length = int(hop_length)
        self.n_mels = int(n_mels)
        self.window_samples = int(round(max_length_s * sample_rate)) if max_length_s else None
        if mel_filters is None:
            mel_filters = _mel_filters(n_fft // 2 + 1, f_min, f_max, n_mels, sample_rate, slaney)
        self.register_buffer("mel_filters", torch.as_tensor(np.asarray(mel_filters), dtype=torch.float32),
                             persistent=False)
        self.register_buffer("window", torch.hann_window(self.n_fft, periodic=True, dtype=torch.float64),
                             persistent=False)
        used = torch.nonzero(self.mel_filters.sum(dim=1) > 0).flatten()
        self.bins = (int(used.min()), int(used.max()) + 1) if len(used) else (0, self.n_fft // 2 + 1)

    @classmethod
    def from_extractor(cls, fe, precision: str = "auto") -> "ClapFeatures":
        """Build from a `transformers.ClapFeatureExtractor` (its own filter bank, float64-exact)."""
        slaney = getattr(fe, "truncation", "rand_trunc") != "fusion"
        filters = fe.mel_filters_slaney if slaney else fe.mel_filters
        return cls(fe.sampling_rate, fe.fft_window_size, fe.hop_length, fe.feature_size,
                   fe.frequency_min, fe.frequency_max, mel_filters=filters, slaney=slaney,
                   max_length_s=fe.max_length_s, precision=precision)

    @classmethod
    def from_pretrained(cls, folder: str, precision: str = "auto") -> "ClapFeatures":
        from transformers import ClapFeatureExtractor

        return cls.from_extractor(ClapFeatureExtractor.from_pretrained(str(folder), local_files_only=True,
                                                                        trust_remote_code=False), precision)

    def compute_dtype(self, device: torch.device) -> torch.dtype:
        """dtype of the framing + FFT. float32 FFT rounding moves bins ~60 dB below a frame's peak by
        ~1e-3 dB; a float64 FFT keeps the HF match within 1e-4 (the power, the mel product and the
        log are sums and products of positive terms and stay float32 either way). GPUs default to
        float32: fast, and far below model noise."""
        if self.precision == "auto":
            return torch.float64 if device.type == "cpu" else torch.float32
        return torch.float64 if self.precision == "float64" else torch.float32

    def forward(self, waves: torch.Tensor) -> torch.Tensor:
        if waves.dim() == 1:
            waves = waves[None]
        dtype = self.compute_dtype(waves.device)
        # a caller's bf16 autocast would round the mel product to ~3 digits: features stay exact
        with torch.autocast(device_type=waves.device.type, enabled=False):
            if waves.device.type == "cpu" and waves.shape[0] > 1:
                # one clip at a time keeps the frame / spectrum intermediates in cache: 2-3x faster on CPU
                return torch.cat([self._log_mel(w[None], dtype) for w in waves])
            return self._log_mel(waves, dtype)

    def _log_mel(self, waves: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        if not waves.is_floating_point():
            waves = waves.float()
        half = self.n_fft // 2
        # reflect padding by hand: F.pad's reflect kernel is several times slower on CPU
        padded = torch.cat([waves[:, 1:half + 1].flip(-1), waves, waves[:, -half - 1:-1].flip(-1)], dim=-1)
        frames = (padded.unfold(-1, self.n_fft, self.hop_length) * self.window.to(dtype)).to(dtype)
        lo, hi = self.bins
        spec = torch.view_as_real(torch.fft.rfft(frames)[..., lo:hi])  # only bins the filters touch
        power = (spec[..., 0].square() + spec[..., 1].square()).float()
        mel = torch.matmul(power, self.mel_filters[lo:hi]).clamp_min(1e-10)
        return (10.0 * torch.log10(mel)).unsqueeze(1)


def _mel_filters(n_freqs: int, f_min: float, f_max: float, n_mels: int, sr: int, slaney: bool) -> np.ndarray:
    import torchaudio.functional as AF

    fb = AF.melscale_fbanks(n_freqs, float(f_min), float(f_max), n_mels, sr,
                            norm="slaney" if slaney else None, mel_scale="slaney" if slaney else "htk")
    return fb.numpy()
