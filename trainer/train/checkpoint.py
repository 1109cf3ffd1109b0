"""Checkpoint folders: student files + `checkpoint.json` (lineage, hyper-parameters, step) + `train_state/`.

The folder is what `curator models add --kind checkpoint DIR` registers: `load_student` reads only
student.json + model.safetensors. `train_state/` holds what an exact resume needs: optimizer and
scheduler state (torch.save, read back with weights_only=True), the torch / numpy / python RNG
states and the step. Nothing here unpickles arbitrary objects.

A save is atomic (docs/RELIABILITY.md): every file is written into `.staging-<pid>/`, which one
rename commits as `.next/`; its entries are then moved into place and `.next/` removed. A kill
before the rename leaves the previous checkpoint and a staging folder, which the next start
removes; a kill after it leaves a complete `.next/`, which the next start (`recover_checkpoint`,
run by every reader here) moves into place. Either way a reader sees the previous checkpoint or
the new one, never a mix.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from schemas.errors import TrainingError
from schemas.faults import crash_point
from trainer.students.weights import first_line

CHECKPOINT_JSON = "checkpoint.json"
TRAIN_STATE = "train_state"
FORMAT = 1
STAGING = ".staging-"  # + pid: a save being written (incomplete until renamed to NEXT)
NEXT = ".next"  # a complete, committed save whose files are being moved into place
OLD = ".old"  # suffix of a folder entry being swapped out
LOCK = ".checkpoint.lock"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _other_weights(folder: Path) -> dict[str, str]:
    """Hashes of the safetensors files beside model.safetensors (a classifier's head): a save torn
    between them must be caught on resume too."""
    return {p.name: _sha256(p) for p in sorted(folder.glob("*.safetensors")) if p.name != "model.safetensors"}


def capture_rng() -> tuple[dict, dict]:
    """(tensors, json-able) RNG states of torch (CPU and CUDA), numpy's global RNG and `random`."""
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        tensors["cuda"] = torch.stack(torch.cuda.get_rng_state_all())
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    py = random.getstate()
    plain = {"numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(gauss)],
             "python": [py[0], list(py[1]), py[2]]}
    return tensors, plain


def restore_rng(tensors: dict, plain: dict) -> None:
    torch.set_rng_state(tensors["torch"])
    if "cuda" in tensors and torch.cuda.is_available():
        states = list(tensors["cuda"])
        if len(states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(states)
    kind, keys, pos, has_gauss, gauss = plain["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
    version, state, gauss_next = plain["python"]
    random.setstate((version, tuple(state), gauss_next))


def _replace(src: Path, dst: Path) -> None:
    """Move src over dst; a directory is swapped via a side name so dst is never half-written."""
    if src.is_dir() and dst.exists():
        old = dst.with_name(dst.name + OLD)
        shutil.rmtree(old, ignore_errors=True)
        os.replace(dst, old)
        os.replace(src, dst)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(src, dst)


@contextmanager
def _locked(out: Path):
    """One process at a time saves or recovers a checkpoint folder (DDP ranks, a second `fit`)."""
    import fcntl

    fd = os.open(out / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _move_into_place(out: Path) -> None:
    nxt = out / NEXT
    # train_state first and checkpoint.json last: even a reader that ignores `.next` sees the step
    # of checkpoint.json only once the state it names is in place
    for entry in sorted(nxt.iterdir(), key=lambda p: (p.name == CHECKPOINT_JSON, p.name != TRAIN_STATE)):
        _replace(entry, out / entry.name)


def _leftover(path: Path) -> bool:
    return path.name.startswith(STAGING) or (path.name.endswith(OLD) and path.is_dir())


def recover_checkpoint(out: str | os.PathLike) -> list[str]:
    """Finish or undo a save a kill interrupted; returns one line per thing done (nothing: [])."""
    out = Path(out)
    if not out.is_dir() or not any(_leftover(p) or p.name == NEXT for p in out.iterdir()):
        return []  # the usual case takes no lock, so a read-only checkpoint folder reads fine
    notes = []
    with _locked(out):
        if (out / NEXT).is_dir():
            _move_into_place(out)
            shutil.rmtree(out / NEXT, ignore_errors=True)
            notes.append(f"{out}: completed a checkpoint save that was interrupted after it was committed")
        for leftover in sorted(out.iterdir()):
            if _leftover(leftover):
                shutil.rmtree(leftover, ignore_errors=True)
                notes.append(f"{out}: removed {leftover.name}, left by an interrupted checkpoint save")
    return notes


def save_checkpoint(out: str | os.PathLike, student, meta: dict, optimizer, scheduler, step: int,
                    extra_state: dict | None = None) -> Path:
    """Write (or overwrite) the checkpoint in `out`, atomically (see the module doc): staged in
    `.staging-<pid>/`, committed by one rename to `.next/`, then moved into place."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    recover_checkpoint(out)
    stage = out / f"{STAGING}{os.getpid()}"
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir()
    student.save(stage)
    weights = stage / "model.safetensors"
    if not weights.exists():
        raise TrainingError(f"student.save wrote no model.safetensors in {stage}")
    state_dir = stage / TRAIN_STATE
    state_dir.mkdir()
    tensors, plain = capture_rng()
    torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": tensors},
               state_dir / "state.pt")
    plain.update({"format": FORMAT, "step": int(step), "weights_sha256": _sha256(weights),
                  "other_weights_sha256": _other_weights(stage), **(extra_state or {})})
    (state_dir / "state.json").write_text(json.dumps(plain))
    meta = {**meta, "format": FORMAT, "step": int(step)}
    (stage / CHECKPOINT_JSON).write_text(json.dumps(meta, indent=2, sort_keys=True, default=str))
    crash_point("checkpoint staged")
    with _locked(out):
        os.replace(stage, out / NEXT)  # the commit: from here on the new checkpoint wins
        crash_point("checkpoint committed")
        _move_into_place(out)
        crash_point("checkpoint swapped")
        shutil.rmtree(out / NEXT, ignore_errors=True)
    return out


def read_checkpoint(folder: str | os.PathLike) -> dict:
    recover_checkpoint(folder)
    path = Path(folder) / CHECKPOINT_JSON
    if not path.exists():
        raise TrainingError(f"{folder}: no {CHECKPOINT_JSON}; not a trainer checkpoint folder")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise TrainingError(f"{path}: unreadable ({exc})") from None


def load_train_state(folder: str | os.PathLike) -> dict:
    """What `fit --resume` needs; raises TrainingError if the folder cannot be resumed from."""
    folder = Path(folder)
    meta = read_checkpoint(folder)
    state_dir = folder / TRAIN_STATE
    if not (state_dir / "state.pt").exists() or not (state_dir / "state.json").exists():
        raise TrainingError(f"{folder}: no {TRAIN_STATE}/ to resume from (was it saved by `trainer fit`?)")
    try:
        plain = json.loads((state_dir / "state.json").read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise TrainingError(f"{state_dir / 'state.json'}: unreadable ({first_line(exc)})") from None
    if plain.get("step") != meta.get("step"):
        raise TrainingError(f"{folder}: train state is at step {plain.get('step')} but checkpoint.json at "
                            f"{meta.get('step')} (interrupted while saving?)")
    weights = folder / "model.safetensors"
    if (not weights.exists() or _sha256(weights) != plain.get("weights_sha256")
            or _other_weights(folder) != plain.get("other_weights_sha256", {})):
        raise TrainingError(f"{folder}: the weights files do not match the saved train state "
                            f"(interrupted while saving?)")
    try:
        state = torch.load(state_dir / "state.pt", map_location="cpu", weights_only=True)
    except Exception as exc:  # torn file: EOFError, RuntimeError, UnpicklingError ... one line, no pickle advice
        raise TrainingError(f"{state_dir / 'state.pt'}: cannot be read as plain tensors ({first_line(exc)}); "
                            "the file is corrupt, resume from another checkpoint or start afresh") from None
    if not isinstance(state, dict):
        raise TrainingError(f"{state_dir / 'state.pt'}: not a train state (a {type(state).__name__})")
    return {"meta": meta, "plain": plain, **state}
