"""What `fit --resume` may continue: options taken from the checkpoint, and the refusal of a resume
that would not replay the original run (other data, other settings, another world size)."""

from __future__ import annotations

import os

from schemas.errors import TrainingError
from trainer.data.rows import SetSource
from trainer.train.checkpoint import read_checkpoint

# Options that shape the trajectory of every run: a resume that changes one would not replay it.
TRAJECTORY = ("loss", "epochs", "batch_size", "lr", "weight_decay", "warmup_steps", "grad_clip", "seed", "student",
              "student_config", "steps", "val_set", "val_fraction", "val_every", "patience")


def resume_options(out: str | os.PathLike, options: dict, explicit: set[str]) -> dict:
    """`options` with every name not in `explicit` (options the user did not give) replaced by the
    checkpoint's recorded value, so `--resume --out D` alone continues a run; explicit options are
    left for `fit` to check against the checkpoint."""
    meta = read_checkpoint(out)
    recorded = dict(meta.get("hparams", {}))
    if "classifier" in meta:  # hybrid checkpoints written before the one loop did not record the loss
        recorded.setdefault("loss", "hybrid")
    recorded["set_ref"] = (meta.get("set") or {}).get("ref")
    recorded["replay_ref"] = (meta.get("replay") or {}).get("ref")
    recorded.pop("device", None)  # where a run continues is the caller's choice, not the checkpoint's
    merged = dict(options)
    for name, value in recorded.items():
        if name in merged and name not in explicit:
            merged[name] = value
    return merged


def check_resume(meta: dict, cfg, sources: dict[str, SetSource | None], world: int, trajectory: tuple[str, ...]) -> None:
    """Raise TrainingError unless `cfg` on `sources` ({"set": ..., "replay": ...}) replays the run
    recorded in `meta`."""
    if ("classifier" in meta) != cfg.hybrid:  # the saved optimiser state would not even fit the module
        raise TrainingError(f"cannot resume: the checkpoint holds a {'hybrid' if 'classifier' in meta else cfg.loss} "
                            f"run's state, not a --loss {cfg.loss} one")
    for key, src in sources.items():
        what, recorded = ("set" if key == "set" else f"{key} set"), meta.get(key)
        if (src is None) != (recorded is None):
            raise TrainingError(f"cannot resume: the checkpoint was trained {'with' if recorded else 'without'} a {what}")
        if src is None:
            continue
        if (src.resolved.name, src.resolved.version, src.resolved.content_hash) != (
                recorded["name"], recorded["version"], recorded["content_hash"]):
            raise TrainingError(
                f"cannot resume: the checkpoint was trained on {what} {recorded['name']}@{recorded['version']} "
                f"(hash {recorded['content_hash'][:12]}) but {src.ref!r} now resolves to {src.resolved.ref} "
                f"(hash {src.resolved.content_hash[:12]}); start a new run to train on the new data")
    hp = meta.get("hparams", {})
    keys = TRAJECTORY + tuple(k for k in trajectory if k not in TRAJECTORY)
    changed = [f"{k} {hp.get(k)!r} -> {getattr(cfg, k)!r}" for k in keys if k in hp and hp[k] != getattr(cfg, k)]
    if meta.get("world_size", 1) != world:
        changed.append(f"world size {meta.get('world_size', 1)} -> {world}")
    if changed:
        raise TrainingError("cannot resume with different settings: " + "; ".join(changed))
