"""The one device resolver: `--device auto | cpu | cuda | cuda:N` everywhere (curator and trainer).

`auto` is the GPU of this process's torchrun rank (`LOCAL_RANK`) when CUDA is available, else the
CPU; `cuda` is that same GPU, `cuda:N` a given one. Asking for a GPU that is not there is an error,
never a silent fall back to the CPU.
"""

from __future__ import annotations

import os

import torch

from schemas.errors import ParameterError


def resolve_device(option: str | torch.device | None = "auto", local_rank: int | None = None) -> torch.device:
    if isinstance(option, torch.device):
        return option
    option = "auto" if option is None else str(option).strip()
    rank = int(os.environ.get("LOCAL_RANK", 0)) if local_rank is None else int(local_rank)
    if option == "cpu":
        return torch.device("cpu")
    if option == "auto" and not torch.cuda.is_available():
        return torch.device("cpu")
    if option in ("auto", "cuda"):
        if not torch.cuda.is_available():
            raise ParameterError("--device cuda: no CUDA device is available (use --device cpu or auto)")
        return torch.device("cuda", rank % torch.cuda.device_count())
    if option.startswith("cuda:") and option[5:].isdigit():
        index = int(option[5:])
        if not torch.cuda.is_available():
            raise ParameterError(f"--device {option}: no CUDA device is available (use --device cpu or auto)")
        if index >= torch.cuda.device_count():
            raise ParameterError(f"--device {option}: this machine has {torch.cuda.device_count()} CUDA device(s)")
        return torch.device("cuda", index)
    raise ParameterError(f"--device {option!r}: expected auto, cpu, cuda or cuda:N")
