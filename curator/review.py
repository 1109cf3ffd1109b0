"""Write a self-contained review page for a match run or a set version, and serve it locally.

The page is static: index.html + review.js + review.css from the package, and a `data.js` that
assigns one global (a `<script src>` works from file://, where fetch() of a local file does not).
Audio copies and spectrogram thumbnails are made only for the first `media` distinct clips in
page order, so a 100k-pair run costs seconds, not an hour of file copying.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import shutil
from dataclasses import dataclass, field
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from urllib.parse import quote, unquote, urlparse

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import soundfile as sf

from curator.review_data import ReviewData, check_around, order_rows, sample_rows, summarize
from schemas.errors import AudioError, ParameterError, StoreError

ASSETS = ("index.html", "review.js", "review.css")
DATA_GLOBAL = "CURATOR_REVIEW"
SPEC_WIDTH, SPEC_HEIGHT = 128, 48
SPEC_MAX_SECONDS = 30.0  # a thumbnail of a 10-minute recording needs no more than its start
DEFAULT_MEDIA = 2000
PAGE_SIZE = 100


@dataclass
class ReviewPage:
    out: Path
    rows: int  # rows in the page
    total: int  # rows in the run / set
    media_clips: int  # clips with audio (copied or linked) and a spectrogram
    skipped: list[str] = field(default_factory=list)  # "uri: reason" for clips left without media

    @property
    def index(self) -> Path:
        return self.out / "index.html"


def build_review(data: ReviewData, out: str | os.PathLike, *, around: float | None = None,
                 band: float = 0.05, sample: int | None = None, media: int = DEFAULT_MEDIA,
                 link: bool = False, seed: int = 0, page_size: int = PAGE_SIZE) -> ReviewPage:
    """Write the page for `data` into `out` (created; earlier media there is reused)."""
    check_around(around, band)
    if media < 0:
        raise ParameterError(f"--media {media}: must be >= 0")
    if page_size < 1:
        raise ParameterError(f"page size {page_size}: must be >= 1")
    out = Path(out)
    _prepare_out(out)
    rows = order_rows(sample_rows(data.rows, sample, seed), around)
    summary = summarize(data.rows, data.threshold)
    summary["shown"] = rows.num_rows
    texts, text_idx = _dictionary(pc.coalesce(rows.column("text_id"), rows.column("text")),
                                  rows, ("text_id", "text"))
    clips, clip_idx = _dictionary(rows.column("audio_id"), rows, ("audio_id", "uri", "clip_labels"))
    labels, label_idx = _labels(rows.column("label"))
    n_media = min(media, clips.num_rows)
    src, spec, skipped = _media(clips, n_media, out, link)
    with_media = sum(1 for s in src if s)
    payload = {
        "format": 1,
        "kind": data.kind,
        "key": data.key,
        "title": data.title,
        "score_name": data.score_name,
        "threshold": data.threshold,
        "around": None if around is None else {"t": around, "band": band},
        "order": "desc" if around is None else "near",  # the order of `rows` (review.js sort modes)
        "page_size": page_size,
        "media": {"clips": with_media, "cap": media, "linked": link, "sampled": sample or None},
        "meta": data.meta,
        "summary": summary,
        "texts": {"id": texts.column("text_id").to_pylist(), "text": texts.column("text").to_pylist()},
        "clips": {"id": clips.column("audio_id").to_pylist(), "uri": clips.column("uri").to_pylist(),
                  "labels": clips.column("clip_labels").to_pylist(), "src": src, "spec": spec},
        "labels": labels,
        "rows": {"t": text_idx, "c": clip_idx, "l": label_idx, "s": _rounded(rows.column("score"))},
    }
    (out / "data.js").write_text(f"window.{DATA_GLOBAL} = {js_literal(payload)};\n", encoding="utf-8")
    _copy_assets(out)
    return ReviewPage(out, rows.num_rows, data.rows.num_rows, with_media, skipped)


def js_literal(obj) -> str:
    """JSON that is also safe inside a <script> element: no `</script>`, `<!--`, U+2028/9 survive."""
    text = json.dumps(obj, ensure_ascii=True, separators=(",", ":"), allow_nan=False, default=str)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _prepare_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise StoreError(f"--out {out}: exists and is not a folder")
    for sub in ("", "audio", "spec"):
        (out / sub).mkdir(parents=True, exist_ok=True)


def _copy_assets(out: Path) -> None:
    folder = resources.files("curator") / "review_assets"
    for name in ASSETS:
        (out / name).write_bytes((folder / name).read_bytes())


def _dictionary(keys, rows: pa.Table, columns: tuple[str, ...]) -> tuple[pa.Table, list[int]]:
    """Distinct rows by `keys` in order of first appearance, plus each row's index into them.

    First-appearance order matters: the first N entries of `clips` are then exactly the clips of
    the first rows in page order, which is what gets media.
    """
    keys = pc.fill_null(keys, "")  # a row with neither id nor text still gets an entry
    encoded = pc.dictionary_encode(keys.combine_chunks() if hasattr(keys, "combine_chunks") else keys)
    indices = encoded.indices.to_numpy(zero_copy_only=False)
    if indices.size == 0:
        return rows.select(list(columns)).slice(0, 0), []
    _, first = np.unique(indices, return_index=True)
    distinct = rows.select(list(columns)).take(pa.array(first))  # np.unique sorts by index = by appearance
    return distinct, indices.astype(np.int64).tolist()


def _labels(column) -> tuple[list[str], list[int]]:
    encoded = pc.dictionary_encode(column.combine_chunks())
    idx = pc.fill_null(encoded.indices.cast(pa.int64()), -1)  # -1: no label
    return encoded.dictionary.to_pylist(), idx.to_pylist()


def _rounded(column) -> list:
    values = column.to_numpy(zero_copy_only=False).astype(np.float64)
    values = np.round(values, 5)
    return [None if not np.isfinite(v) else float(v) for v in values.tolist()]


# -- media ----------------------------------------------------------------------------------------
def _media(clips: pa.Table, n: int, out: Path, link: bool) -> tuple[list, list, list[str]]:
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
class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002  (signature fixed by http.server)
        pass


def make_server(out: str | os.PathLike, port: int = 8765) -> ThreadingHTTPServer:
    """An HTTP server for the page folder on 127.0.0.1 only (port 0 = any free port)."""
    out = Path(out)
    if not (out / "index.html").is_file():
        raise StoreError(f"{out}: no review page here (index.html missing)")
    handler = functools.partial(_QuietHandler, directory=str(out))
    try:
        return ThreadingHTTPServer(("127.0.0.1", port), handler)
    except OSError as exc:
        raise ParameterError(f"--port {port}: cannot listen on 127.0.0.1 ({exc.strerror or exc})") from None


def server_url(server: ThreadingHTTPServer) -> str:
    host, port = server.server_address[:2]
    return f"http://{host}:{port}/index.html"
