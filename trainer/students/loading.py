"""Build a fresh student of any kind, or load a saved one from its folder."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch.nn as nn

from schemas.errors import ModelError, ParameterError
from trainer.students.clap_hf import ClapStudent
from trainer.students.compact import CompactStudent
from trainer.students.weights import FORMAT, STUDENT_JSON

KINDS = ("compact", "clap-hf")


def _student_class(kind: str):
    if kind == "compact":
        return CompactStudent
    if kind == "clap-hf":
        return ClapStudent
    raise ParameterError(f"unknown student kind {kind!r}; expected one of {', '.join(KINDS)}")


def build_student(kind: str, init_path: str | None = None, **cfg) -> nn.Module:
    """A fresh student: "compact" from a BERT-family text folder (default: the MiniLM package),
    "clap-hf" from a ClapModel folder (required)."""
    return _student_class(kind).build(init_path, **cfg)


def load_student(folder: str | os.PathLike, device: str = "cpu") -> nn.Module:
    """Rebuild a saved student from student.json + model.safetensors (in eval mode, on `device`)."""
    folder = Path(folder)
    path = folder / STUDENT_JSON
    if not path.exists():
        raise ModelError(f"{folder}: no {STUDENT_JSON}; not a student checkpoint folder")
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ModelError(f"{path}: not valid JSON ({exc})") from None
    if meta.get("format") != FORMAT:
        raise ModelError(f"{path}: student format {meta.get('format')!r} is not supported (expected {FORMAT})")
    kind = meta.get("kind")
    if kind not in KINDS:
        raise ModelError(f"{path}: unknown student kind {kind!r}")
    student = _student_class(kind).from_folder(folder, meta, str(device))
    return student.to(device).eval()
