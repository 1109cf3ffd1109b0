"""Building blocks of the compact student: log-mel front end, SE-ResNet + Transformer audio encoder.

The front end lives inside the model so a checkpoint takes raw waves at its own sample rate and
nobody has to keep feature settings in sync between training, embedding and evaluation.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


class LogMel(nn.Module):
    """Raw waves (B, samples) -> log-mel (B, 1, n_mels, frames), normalised per mel bin.

    The per-bin BatchNorm (PANNs' "bn0") replaces hand-set dB offsets: it learns each bin's level.
    SpecAugment (frequency and time masks, per example) runs only in training mode when enabled.
    """

    def __init__(self, sample_rate: int, n_fft: int, hop_length: int, n_mels: int, f_min: float,
                 f_max: float | None, spec_augment: bool = False, freq_mask: int = 8, time_mask: int = 20,
                 n_masks: int = 2):
        super().__init__()
        import torchaudio.transforms as T

        self.mel = T.MelSpectrogram(sample_rate=sample_rate, n_fft=n_fft, hop_length=hop_length,
                                    n_mels=n_mels, f_min=f_min, f_max=f_max, power=2.0)
        # torch's periodic hann window is a view of an (n+1)-long one; safetensors refuses partial storage
        self.mel.spectrogram.window = self.mel.spectrogram.window.clone()
        self.to_db = T.AmplitudeToDB(stype="power", top_db=80.0)
        self.norm = nn.BatchNorm2d(n_mels)
        self.spec_augment = spec_augment
        self.masks = nn.ModuleList(
            [m for _ in range(n_masks) for m in (T.FrequencyMasking(freq_mask, iid_masks=True),
                                                  T.TimeMasking(time_mask, iid_masks=True))])

    def forward(self, waves: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=waves.device.type, enabled=False):
            spec = self.to_db(self.mel(waves.float())).unsqueeze(1)  # (B, 1, mels, frames)
        # BatchNorm2d over mel bins: move mels to the channel axis and back
        spec = self.norm(spec.transpose(1, 2)).transpose(1, 2)
        if self.training and self.spec_augment:
            for mask in self.masks:
                spec = mask(spec)
        return spec


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int, reduction: int = 8):
        super().__init__()
        hidden = max(4, channels // reduction)
        self.fc1 = nn.Linear(channels, hidden)
        self.fc2 = nn.Linear(hidden, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = torch.sigmoid(self.fc2(F.relu(self.fc1(x.mean(dim=(2, 3))))))
        return x * w[:, :, None, None]


class SEResBlock(nn.Module):
    """conv-BN-ReLU-conv-BN, squeeze-excitation, residual add, ReLU, then 2×2 average pooling."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.se = SqueezeExcite(c_out)
        self.skip = (nn.Identity() if c_in == c_out else
                     nn.Sequential(nn.Conv2d(c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out)))
        self.pool = nn.AvgPool2d(2, ceil_mode=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.se(self.bn2(self.conv2(y)))
        return self.pool(F.relu(y + self.skip(x)))


def sinusoidal_positions(length: int, dim: int, device, dtype) -> torch.Tensor:
    """Fixed sine/cosine positions: no learnt table, so any clip length works."""
    pos = torch.arange(length, device=device, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(length, dim, device=device, dtype=torch.float32)
    table[:, 0::2] = torch.sin(pos * freq)
    table[:, 1::2] = torch.cos(pos * freq[: dim // 2])
    return table.to(dtype)


class AudioEncoder(nn.Module):
    """SE-ResNet over the log-mel, frequency mean, Transformer over time, mean pool, projection + LN.

    Returns unnormalised (B, dim) vectors; the student L2-normalises them.
    """

    def __init__(self, n_mels: int, channels: tuple[int, ...], layers: int, heads: int, dim: int,
                 dropout: float):
        super().__init__()
        chans = [1, *channels]
        self.blocks = nn.Sequential(*[SEResBlock(a, b) for a, b in zip(chans[:-1], chans[1:])])
        width = channels[-1]
        layer = nn.TransformerEncoderLayer(width, heads, dim_feedforward=2 * width, dropout=dropout,
                                           activation="gelu", batch_first=True, norm_first=True)
        self.transformer = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.final_norm = nn.LayerNorm(width)
        self.proj = nn.Linear(width, dim)
        self.proj_norm = nn.LayerNorm(dim)

    def forward(self, spec: torch.Tensor) -> torch.Tensor:
        x = self.blocks(spec)                        # (B, C, mels', frames')
        x = x.mean(dim=2).transpose(1, 2)            # (B, frames', C)
        x = x + sinusoidal_positions(x.shape[1], x.shape[2], x.device, x.dtype)
        x = self.final_norm(self.transformer(x)).mean(dim=1)
        return self.proj_norm(self.proj(x))


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of token states over the attention mask (sentence-transformers pooling)."""
    mask = mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp_min(1e-9)
