"""Write a self-contained review page for a match run or a set version, and serve it locally.

The page is static: index.html + review.js + review.css from the package, and a `data.js` that
assigns one global (a `<script src>` works from file://, where fetch() of a local file does not).
Audio copies and spectrogram thumbnails are made only for the first `media` distinct clips in
page order, so a 100k-pair run costs seconds, not an hour of file copying.
"""

from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass, field
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curator.review.data import ReviewData, check_around, order_rows, sample_rows, summarize
from curator.review.media import prepare_media
from schemas.errors import ParameterError, StoreError

ASSETS = ("index.html", "review.js", "review.css")
DATA_GLOBAL = "CURATOR_REVIEW"
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
    src, spec, skipped = prepare_media(clips, n_media, out, link)
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
    folder = resources.files("curator.review") / "assets"
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
