"""The review page's media: audio copies (or links) and spectrogram thumbnails of the first clips.

Only the first `media` distinct clips in page order get media, so a 100k-pair run costs seconds.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from pathlib import Path
from urllib.parse import quote, unquote, urlparse

import numpy as np
import pyarrow as pa
import soundfile as sf

from schemas.errors import AudioError

SPEC_WIDTH, SPEC_HEIGHT = 128, 48
SPEC_MAX_SECONDS = 30.0  # a thumbnail of a 10-minute recording needs no more than its start


def prepare_media(clips: pa.Table, n: int, out: Path, link: bool) -> tuple[list, list, list[str]]:
    """Audio src and spectrogram path for the first `n` clips (None for the rest)."""
    total = clips.num_rows
    src: list = [None] * total
    spec: list = [None] * total
    skipped: list[str] = []
    ids = clips.column("audio_id").to_pylist()
    uris = clips.column("uri").to_pylist()
    for i in range(n):
        uri = uris[i]
        path = local_path(uri)
        if path is None:
            if link and uri and urlparse(uri).scheme in ("http", "https"):
                src[i] = uri
            else:
                skipped.append(f"{uri}: not a local file; only local clips are copied")
            continue
        try:
            # Spectrogram first: it decodes the file, so an unplayable clip gets no audio either.
            spec[i] = _spectrogram(path, out)
            src[i] = _link(path, out) if link else _copy_audio(path, ids[i], out)
        except (AudioError, OSError) as exc:
            skipped.append(f"{uri}: {exc}")
    return src, spec, skipped


def local_path(uri: str | None) -> Path | None:
    if not uri:
        return None
    if uri.startswith("file://"):
        return Path(unquote(urlparse(uri).path))
    if "://" in uri:
        return None
    return Path(uri)


def _safe_name(audio_id: str, suffix: str) -> str:
    # audio ids look like `esc50:3f2a...`; a colon is not welcome in every file system or URL.
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", audio_id)[:48]
    digest = hashlib.sha1(audio_id.encode("utf-8")).hexdigest()[:8]
    return f"{stem}-{digest}{suffix.lower()}"


def _copy_audio(path: Path, audio_id: str, out: Path) -> str:
    if not path.is_file():
        raise AudioError(f"{path}: no such file")
    name = _safe_name(audio_id, path.suffix)
    target = out / "audio" / name
    if not (target.exists() and target.stat().st_size == path.stat().st_size):
        shutil.copyfile(path, target)
    return f"audio/{name}"


def _link(path: Path, out: Path) -> str:
    if not path.is_file():
        raise AudioError(f"{path}: no such file")
    rel = os.path.relpath(path.resolve(), out.resolve())
    return "/".join(quote(part) for part in Path(rel).parts)


def _spectrogram(path: Path, out: Path) -> str:
    """A cached log-mel thumbnail; the cache key is the file's path, size and mtime."""
    if not path.is_file():
        raise AudioError(f"{path}: no such file")
    st = path.stat()
    key = hashlib.sha1(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:20]
    target = out / "spec" / f"{key}.png"
    if not target.exists():
        image = log_mel_image(path)
        _write_png(image, target)
    return f"spec/{target.name}"


def log_mel_image(path: Path, width: int = SPEC_WIDTH, height: int = SPEC_HEIGHT) -> np.ndarray:
    """(height, width) log-mel power in dB, low frequencies in row 0, for a thumbnail."""
    try:
        info = sf.info(str(path))
        frames = min(info.frames, int(info.samplerate * SPEC_MAX_SECONDS)) if info.frames > 0 else -1
        wave, sr = sf.read(str(path), frames=frames, dtype="float32", always_2d=True)
    except (RuntimeError, sf.LibsndfileError) as exc:  # soundfile reports corrupt/unknown files this way
        raise AudioError(f"{path}: cannot decode ({str(exc).splitlines()[0]})") from None
    wave = wave.mean(axis=1)
    if wave.size == 0:
        raise AudioError(f"{path}: no samples")
    n_fft = 1024 if sr >= 32000 else 512
    hop = n_fft // 2
    if wave.size < n_fft:
        wave = np.pad(wave, (0, n_fft - wave.size))
    n_frames = 1 + (wave.size - n_fft) // hop
    frames = np.lib.stride_tricks.sliding_window_view(wave, n_fft)[::hop][:n_frames]
    power = np.abs(np.fft.rfft(frames * np.hanning(n_fft).astype(np.float32), axis=1)) ** 2
    mel = power @ mel_filters(sr, n_fft, height).T  # (frames, height)
    db = 10.0 * np.log10(np.maximum(mel, 1e-10))
    return _fit_width(db, width).T


def mel_filters(sr: int, n_fft: int, n_mels: int) -> np.ndarray:
    """Triangular HTK-mel filterbank, (n_mels, n_fft // 2 + 1)."""
    def to_mel(f):
        return 2595.0 * np.log10(1.0 + f / 700.0)

    def to_hz(m):
        return 700.0 * (10.0 ** (m / 2595.0) - 1.0)

    bins = np.linspace(0.0, sr / 2.0, n_fft // 2 + 1)
    points = to_hz(np.linspace(to_mel(0.0), to_mel(sr / 2.0), n_mels + 2))
    lower, centre, upper = points[:-2, None], points[1:-1, None], points[2:, None]
    rise = (bins[None, :] - lower) / np.maximum(centre - lower, 1e-9)
    fall = (upper - bins[None, :]) / np.maximum(upper - centre, 1e-9)
    return np.maximum(0.0, np.minimum(rise, fall))


def _fit_width(db: np.ndarray, width: int) -> np.ndarray:
    """Average frames into `width` columns (long clips) or stretch by interpolation (short ones)."""
    n = db.shape[0]
    if n >= width:
        edges = np.linspace(0, n, width + 1).astype(int)
        return np.stack([db[a:max(b, a + 1)].mean(axis=0) for a, b in zip(edges[:-1], edges[1:])])
    x = np.linspace(0, n - 1, width)
    return np.stack([np.interp(x, np.arange(n), db[:, k]) for k in range(db.shape[1])], axis=1)


def _write_png(image: np.ndarray, target: Path) -> None:
    from matplotlib import image as mpimg  # no pyplot: no GUI backend, no global figure state

    top = float(image.max())
    tmp = target.with_suffix(".tmp.png")
    mpimg.imsave(tmp, image, cmap="magma", origin="lower", vmin=top - 80.0, vmax=top)
    os.replace(tmp, target)  # a page never links a half-written thumbnail


# -- serving --------------------------------------------------------------------------------------
