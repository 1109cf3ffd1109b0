"""Checkpoint folders: student files + `checkpoint.json` (lineage, hyper-parameters, step) + `train_state/`.

The folder is what `curator models add --kind checkpoint DIR` registers: `load_student` reads only
student.json + model.safetensors. `train_state/` holds what an exact resume needs: optimizer and
scheduler state (torch.save, read back with weights_only=True), the torch / numpy / python RNG
states and the step. Nothing here unpickles arbitrary objects.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch

from schemas.errors import TrainingError
from trainer.students.weights import first_line

CHECKPOINT_JSON = "checkpoint.json"
TRAIN_STATE = "train_state"
FORMAT = 1


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
        old = dst.with_name(dst.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(dst, old)
        os.replace(src, dst)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(src, dst)


def save_checkpoint(out: str | os.PathLike, student, meta: dict, optimizer, scheduler, step: int,
                    extra_state: dict | None = None) -> Path:
    """Write (or overwrite) the checkpoint in `out`. Files are staged next to it and moved into place,
    train_state first and checkpoint.json last, so a crash mid-save leaves the previous checkpoint
    readable and `load_train_state` detects a torn one by the weights' hash."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    stage = out / f".staging-{os.getpid()}"
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
    entries = sorted(stage.iterdir(), key=lambda p: (p.name == CHECKPOINT_JSON, p.name != TRAIN_STATE))
    for entry in entries:
        _replace(entry, out / entry.name)
    shutil.rmtree(stage, ignore_errors=True)
    return out


def read_checkpoint(folder: str | os.PathLike) -> dict:
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
