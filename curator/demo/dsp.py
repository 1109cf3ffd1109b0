"""Small vectorised signal helpers shared by the sound families and the scene generator.

Everything is numpy on whole clips (no per-sample Python loops) so a corpus of thousands of clips
renders in seconds on one core. Filtering is done in the FFT domain on a 5-smooth length:
clip lengths are drawn at random and numpy's FFT is several times slower on lengths with large
prime factors.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np


def fast_len(n: int) -> int:
    """Smallest 2^a·3^b·5^c >= n: pocketfft is fastest there and it pads far less than a power of 2."""
    best = 1 << max(1, int(n - 1).bit_length())
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            m = p35
            while m < n:
                m *= 2
            best = min(best, m)
            p35 *= 3
        p5 *= 5
    return best


@lru_cache(maxsize=64)
def _grid(m: int, sr: int) -> tuple[np.ndarray, np.ndarray]:
    f = np.maximum(np.fft.rfftfreq(m, 1.0 / sr), 1.0)
    f.setflags(write=False)
    logf = np.log(f / 1000.0)
    logf.setflags(write=False)
    return f, logf


def times(n: int, sr: int) -> np.ndarray:
    return np.arange(n, dtype=np.float64) / sr


def phase(freq: np.ndarray, sr: int) -> np.ndarray:
    """Instantaneous phase of a tone whose frequency (Hz) changes sample by sample."""
    return 2.0 * np.pi * np.cumsum(freq) / sr


def harmonic(ph: np.ndarray, freq: np.ndarray | float, amps, sr: int) -> np.ndarray:
    """Sum of harmonics k·phase with amplitudes `amps`, muting any partial above Nyquist.

    sin(kφ) comes from the Chebyshev recursion sin(kφ) = 2cos(φ)·sin((k-1)φ) − sin((k-2)φ): one
    multiply-add per partial instead of a transcendental call (an engine has ~25 partials).
    """
    amps = np.asarray(amps, dtype=np.float64)
    freq = np.asarray(freq, dtype=np.float64)
    fmax = float(np.max(freq)) if freq.size else 0.0
    two_cos = 2.0 * np.cos(ph)
    prev, cur = np.zeros_like(ph), np.sin(ph)
    out = np.zeros_like(ph)
    for k, a in enumerate(amps, start=1):
        if a and k * fmax < 0.45 * sr:
            out += a * cur
        elif a:
            out += a * cur * (k * freq < 0.45 * sr)
        prev, cur = cur, two_cos * cur - prev
    return out


def band_gain(m: int, sr: int, lo: float | None, hi: float | None, slope_db_oct: float = 0.0) -> np.ndarray:
    """Magnitude response on the rfft grid of length m: 4th-order-like high/low-pass skirts and a
    spectral tilt in dB/octave (powers spelled as products: `**` on whole spectra is slow)."""
    f, logf = _grid(m, sr)
    g = np.exp(logf * (slope_db_oct / 6.0206)) if slope_db_oct else np.ones_like(f)
    if lo:
        r = lo / f
        r *= r
        g /= 1.0 + r * r
    if hi:
        r = f / hi
        r *= r
        g /= 1.0 + r * r
    g[0] = 0.0
    return g


def filtered(x: np.ndarray, sr: int, lo=None, hi=None, slope_db_oct: float = 0.0) -> np.ndarray:
    n = len(x)
    m = fast_len(n)
    return np.fft.irfft(np.fft.rfft(x, m) * band_gain(m, sr, lo, hi, slope_db_oct), m)[:n]


def noise(rng: np.random.Generator, n: int, sr: int, lo=None, hi=None, slope_db_oct: float = 0.0) -> np.ndarray:
    """Unit-RMS coloured noise (slope -6 dB/oct is brown-like, -3 pink-like), drawn directly as a
    random spectrum: one inverse FFT instead of a forward and an inverse one."""
    m = fast_len(n)
    k = m // 2 + 1
    spec = rng.standard_normal(k) + 1j * rng.standard_normal(k)
    return unit_rms(np.fft.irfft(spec * band_gain(m, sr, lo, hi, slope_db_oct), m)[:n])


def slow_random(rng: np.random.Generator, n: int, sr: int, rate_hz: float) -> np.ndarray:
    """A smooth random curve in about [-1, 1] that wanders at roughly `rate_hz`."""
    knots = max(2, int(np.ceil(n / sr * rate_hz)) + 2)
    values = rng.uniform(-1.0, 1.0, knots)
    return np.interp(np.linspace(0, knots - 1, n), np.arange(knots), values)


def envelope(n: int, sr: int, attack_s: float, release_s: float) -> np.ndarray:
    t = times(n, sr)
    up = np.clip(t / max(attack_s, 1e-4), 0.0, 1.0)
    down = np.clip((t[-1] - t) / max(release_s, 1e-4), 0.0, 1.0) if n else t
    return up * down


def gate(n: int, sr: int, period_s: float, duty: float, ramp_s: float = 0.004, offset_s: float = 0.0) -> np.ndarray:
    """Periodic on/off gate with short linear ramps (clicks-free beeps)."""
    tm = np.mod(times(n, sr) + offset_s, period_s)
    on = duty * period_s
    ramp = max(ramp_s, 1.0 / sr)
    return np.clip(np.minimum(tm / ramp, (on - tm) / ramp), 0.0, 1.0)


def place(out: np.ndarray, starts: np.ndarray, kernels: np.ndarray) -> np.ndarray:
    """Add kernels[i] into `out` at sample starts[i] (one kernel row per event, or one shared row)."""
    starts = np.asarray(starts, dtype=np.int64)
    if starts.size == 0:
        return out
    kernels = np.atleast_2d(kernels)
    k = kernels.shape[1]
    idx = starts[:, None] + np.arange(k)[None, :]
    vals = np.broadcast_to(kernels, idx.shape)
    ok = (idx >= 0) & (idx < len(out))
    np.add.at(out, idx[ok], vals[ok])
    return out


def decaying_partials(rng, n_events: int, sr: int, length_s: float, f_lo: float, f_hi: float,
                      tau_lo: float, tau_hi: float, glide: float = 0.0) -> np.ndarray:
    """One short decaying sinusoid per event (droplets, clicks, bubbles), as a (events, k) matrix.

    `glide` > 0 makes each partial rise in pitch by that many octaves per 10 ms (bubble-like).
    """
    k = max(2, int(length_s * sr))
    t = np.arange(k, dtype=np.float64)[None, :] / sr
    f = np.exp(rng.uniform(np.log(f_lo), np.log(f_hi), n_events))[:, None]
    tau = rng.uniform(tau_lo, tau_hi, n_events)[:, None]
    inst = f * 2.0 ** (glide * t / 0.01)
    ph = 2.0 * np.pi * np.cumsum(inst, axis=1) / sr
    return np.exp(-t / tau) * np.sin(ph)


def reverb(x: np.ndarray, sr: int, rng: np.random.Generator, rt60_s: float, wet: float) -> np.ndarray:
    """Convolve with an exponentially decaying noise tail (a plausible room, FFT convolution)."""
    k = max(2, int(0.5 * rt60_s * sr))  # the tail is -30 dB by rt60/2; the rest is inaudible here
    t = np.arange(k) / sr
    ir = rng.standard_normal(k) * np.exp(-6.9 * t / rt60_s)
    ir /= np.sqrt(np.sum(ir ** 2)) + 1e-12
    m = fast_len(len(x) + k)
    tail = np.fft.irfft(np.fft.rfft(x, m) * np.fft.rfft(ir, m), m)[: len(x)]
    return (1.0 - wet) * x + wet * unit_rms(tail) * rms(x)


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x)))) if len(x) else 0.0


def unit_rms(x: np.ndarray) -> np.ndarray:
    r = rms(x)
    return x / r if r > 1e-12 else x


def db(x: float) -> float:
    return 10.0 ** (x / 20.0)


def fit_length(x: np.ndarray, n: int) -> np.ndarray:
    """Crop or zero-pad to exactly n samples."""
    if len(x) >= n:
        return x[:n]
    return np.concatenate([x, np.zeros(n - len(x), dtype=x.dtype)])


def resample_linear(x: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """Linear-interpolation resampling; adequate for speech used as a synthetic sound family."""
    if sr_in == sr_out or len(x) == 0:
        return x
    n_out = int(round(len(x) * sr_out / sr_in))
    return np.interp(np.arange(n_out) * (sr_in / sr_out), np.arange(len(x)), x)


def to_level(x: np.ndarray, level_dbfs: float, peak_max: float = 0.98) -> tuple[np.ndarray, float]:
    """Scale to an RMS level in dBFS without letting the peak clip; returns (signal, level used)."""
    y = unit_rms(x) * db(level_dbfs)
    peak = float(np.max(np.abs(y))) if len(y) else 0.0
    if peak > peak_max:
        y *= peak_max / peak
        level_dbfs = 20.0 * np.log10(max(rms(y), 1e-12))
    return y, level_dbfs
