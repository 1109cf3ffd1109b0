"""Where a training run executes: device choice, torchrun/DDP process group, autocast, and the
student it starts from. Kept apart from the loop so the loop reads as the maths of one step."""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

from schemas.errors import ModelError, ParameterError
from trainer.device import resolve_device
from trainer.students.compact import default_text_model
from trainer.students.loading import build_student, load_student
from trainer.students.named import resolve_model


@dataclass
class Runtime:
    rank: int
    world: int
    local_rank: int
    device: torch.device
    comm_device: torch.device  # where collective tensors live (cuda for nccl, cpu for gloo)
    owns_group: bool

    def autocast(self):
        """bf16 autocast on CUDA; full precision on CPU, where bf16 matmuls are slow."""
        if self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def close(self) -> None:
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()


def setup_runtime(device_option: str = "auto") -> Runtime:
    """Single process, or one rank of `torchrun` (env RANK / WORLD_SIZE / LOCAL_RANK): gloo on CPU,
    nccl on CUDA."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_option, local)
    owns = False
    if world > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=rank, world_size=world)
        owns = True
    comm = device if device.type == "cuda" else torch.device("cpu")
    return Runtime(rank, world, local, device, comm, owns)


def _folder_kind(folder: Path) -> str:
    if (folder / "student.json").exists():
        return "student"
    config = folder / "config.json"
    if not config.exists():
        raise ModelError(f"--init {folder}: no student.json or config.json; expected a student checkpoint, "
                         f"a ClapModel folder or a BERT-family text model folder")
    try:
        model_type = json.loads(config.read_text()).get("model_type")
    except json.JSONDecodeError as exc:
        raise ModelError(f"--init {folder}/config.json is not valid JSON ({exc})") from None
    return "clap" if model_type == "clap" else "text"


def build_or_load_student(cfg, resume_dir: Path | None):
    """(student, kind). Resume: the checkpoint's own weights. Otherwise `--init` decides: a student
    checkpoint continues training, a ClapModel folder gives a clap-hf student (starting from its
    teacher), a text model folder a fresh compact student."""
    if resume_dir is not None:
        student = load_student(resume_dir)
        return student, student_kind(resume_dir)
    init = Path(resolve_model(cfg.store, cfg.init, "--init") if cfg.init
                else (default_text_model() if cfg.student in (None, "compact") else ""))
    if not cfg.init and cfg.student not in (None, "compact"):
        raise ParameterError(f"--student {cfg.student} needs --init (a ClapModel folder)")
    if not init.is_dir():
        raise ModelError(f"--init {init}: no such folder")
    kind = _folder_kind(init)
    if kind == "student":
        return load_student(init), student_kind(init)
    wanted = {"clap": "clap-hf", "text": "compact"}[kind]
    if cfg.student not in (None, wanted):
        raise ParameterError(f"--student {cfg.student} does not fit --init {init}: that folder holds a "
                             f"{'ClapModel' if kind == 'clap' else 'text model'}, which makes a {wanted} student")
    return build_student(wanted, init_path=str(init), **(cfg.student_config or {})), wanted


def student_kind(folder: Path) -> str:
    """The kind recorded in a student folder's student.json ("unknown" if unreadable)."""
    try:
        return json.loads((folder / "student.json").read_text()).get("kind", "unknown")
    except (OSError, json.JSONDecodeError):
        return "unknown"

