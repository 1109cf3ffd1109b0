"""A student checkpoint folder on disk: `student.json` (kind + config + sizes) and
`model.safetensors` (all weights), shared by every student kind. safetensors only: loading a
student never unpickles anything.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import torch.nn as nn

from schemas.errors import ModelError

STUDENT_JSON = "student.json"
WEIGHTS = "model.safetensors"
TEXT_DIR = "text"
FORMAT = 1
TOKENIZER_INPUTS = ["input_ids", "attention_mask"]


def _names_custom_code(node) -> bool:
    if isinstance(node, dict):
        return "auto_map" in node or any(_names_custom_code(v) for v in node.values())
    if isinstance(node, list):
        return any(_names_custom_code(v) for v in node)
    return False


def refuse_custom_code(folder: str | Path) -> None:
    """Refuse a Hugging Face folder any of whose config files (config.json, tokenizer_config.json,
    preprocessor_config.json, ..., in subfolders too, e.g. a checkpoint's text tower) has an
    `auto_map`: that names Python shipped with the folder, which transformers would offer to run.
    Every load also passes `trust_remote_code=False`; this makes the refusal one clear line."""
    root = Path(folder)
    if not root.is_dir():
        return
    for path in sorted(root.rglob("*config.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            continue  # not ours to diagnose: the loader names the broken file
        if _names_custom_code(data):
            raise ModelError(f"{path}: names custom code (auto_map); models that ship their own Python "
                             "are refused (trust_remote_code is always off)")


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message. torch's refusal to unpickle code ends with advice to
    pass `weights_only=False` (which would run the pickle): that advice is never passed on."""
    text = str(exc).strip()
    if "weights_only" in text or "Unsupported global" in text:
        return "a pickle that holds more than plain tensors; refused (it could run code when loaded)"
    return text.splitlines()[0] if text else exc.__class__.__name__


@contextlib.contextmanager
def quiet_hf():
    """Silence transformers' per-file progress bars and load reports (library code draws no bars)."""
    from transformers.utils import logging as hf_logging

    bars, level = hf_logging.is_progress_bar_enabled(), hf_logging.get_verbosity()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


def save_weights(module: nn.Module, folder: Path) -> None:
    from safetensors.torch import save_model

    save_model(module, str(folder / WEIGHTS))


def load_weights(module: nn.Module, folder: Path, device: str = "cpu") -> None:
    load_file_into(module, folder / WEIGHTS, STUDENT_JSON, device)


def load_file_into(module: nn.Module, path: Path, config_name: str, device: str = "cpu") -> None:
    """Load the safetensors file `path` into `module`, which `config_name` described; a torn,
    foreign or ill-fitting file is a ModelError naming the file."""
    from safetensors.torch import load_model

    if not path.exists():
        raise ModelError(f"{path.parent}: no {path.name}")
    try:
        missing, unexpected = load_model(module, str(path), strict=False, device=str(device))
    except Exception as exc:  # safetensors raises SafetensorError / RuntimeError on torn or foreign files
        raise ModelError(f"{path}: cannot load weights ({first_line(exc)})") from None
    if missing or unexpected:
        names = ", ".join((list(missing) + list(unexpected))[:4])
        raise ModelError(f"{path}: weights do not fit {config_name} "
                         f"({len(missing)} missing, {len(unexpected)} unexpected: {names})")


def write_student_json(folder: Path, kind: str, config: dict, student) -> None:
    meta = {"format": FORMAT, "kind": kind, "config": config, "dim": int(student.dim),
            "sample_rate": int(student.sample_rate), "window_samples": int(student.window_samples),
            "logit_scale": float(student.logit_scale.detach().exp())}
    (folder / STUDENT_JSON).write_text(json.dumps(meta, indent=2, sort_keys=True))


