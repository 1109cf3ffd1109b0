"""The work of one embed batch: decode clips, embed them, and isolate the items that fail.

Long clips (`long_rule="average"`, the default): consecutive windows (last one aligned to the clip's
end, at most MAX_WINDOWS evenly spaced) are embedded and their mean re-normalised; "crop" takes
the centre window. Short clips are repeat-padded (trainer.data.audio.fit_window).
"""

from __future__ import annotations

import numpy as np

from schemas.errors import CuratorError
from trainer.data.audio import fit_window, load_audio

MAX_WINDOWS = 64


def decode(item: tuple[str, str], teacher, long_rule: str):
    """(windows of one clip, None) or (None, why it could not be decoded)."""
    _, uri = item
    try:
        wave = load_audio(uri, teacher.sample_rate)
        return fit_window(wave, teacher.window_samples, long_rule, max_windows=MAX_WINDOWS), None
    except CuratorError as exc:
        return None, str(exc)


def _embed_windows(teacher, windows: list[np.ndarray], batch_size: int) -> np.ndarray:
    """Embed each clip's windows (chunked by batch_size) and average them per clip."""
    if not windows:
        return np.empty((0, teacher.dim), np.float32)
    counts = np.array([w.shape[0] for w in windows])
    stacked = np.concatenate(windows)
    parts = [teacher.embed_audio(stacked[i:i + batch_size]) for i in range(0, len(stacked), batch_size)]
    vecs = np.concatenate(parts)
    if (counts == 1).all():
        return vecs
    means = np.add.reduceat(vecs, np.r_[0, np.cumsum(counts)[:-1]], axis=0) / counts[:, None]
    return (means / np.linalg.norm(means, axis=1, keepdims=True).clip(1e-12)).astype(np.float32)


def _isolating(embed_fn, ids: list[str], payloads: list, uris: list, dim: int, model_id: str):
    """Embed a batch; if it raises, embed item by item so only the item that breaks fails."""
    try:
        return ids, embed_fn(payloads), []
    except Exception:  # a model error on one odd input must not cost the rest of the batch
        pass
    good_ids, good, failures = [], [], []
    for item_id, payload, uri in zip(ids, payloads, uris):
        try:
            good.append(embed_fn([payload]))
            good_ids.append(item_id)
        except Exception as exc:  # whatever the model raised for this one item is its error row
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            failures.append({"item_id": item_id, "uri": uri,
                             "message": f"{model_id}: {exc.__class__.__name__}: {reason}"})
    return good_ids, (np.concatenate(good) if good else np.empty((0, dim), np.float32)), failures


def audio_batch(teacher, batch: list[tuple[str, str]], decoded: list, batch_size: int, model_id: str):
    """(ids, vectors, failures) of one batch of (id, uri) clips, given each clip's `decode` result."""
    ids, windows, uris, failures = [], [], [], []
    for (item_id, uri), (win, err) in zip(batch, decoded):
        if err is not None:
            failures.append({"item_id": item_id, "uri": uri, "message": err})
        else:
            ids.append(item_id)
            windows.append(win)
            uris.append(uri)
    ids, vecs, more = _isolating(lambda w: _embed_windows(teacher, w, batch_size), ids, windows, uris,
                                 teacher.dim, model_id)
    return ids, vecs, failures + more


def text_batch(teacher, batch: list[tuple[str, str]], model_id: str):
    """(ids, vectors, failures) of one batch of (id, text) items."""
    return _isolating(teacher.embed_texts, [b[0] for b in batch], [b[1] for b in batch], [None] * len(batch),
                      teacher.dim, model_id)
