"""`trainer fit --loss clap|soft|multi`: a student's audio and text towers trained contrastively on a
set version, optionally with a replay set (DESIGN 6.1-6.3, 6.10), zero-shot evaluated at checkpoints."""

from __future__ import annotations

import torch
from torch import nn

from trainer.data.batches import BatchPlan
from trainer.data.rows import SetSource, check_init_teacher, open_sets
from trainer.eval.zero_shot import zero_shot_hook
from trainer.students.named import resolve_model
from trainer.train.losses import clap_loss, multi_positive_loss, soft_label_loss
from trainer.train.objective import Objective, all_min
from trainer.train.runtime import build_or_load_student


class _Pair(nn.Module):
    """One forward through both towers, so DDP sees a forward call and syncs every used gradient."""

    def __init__(self, student):
        super().__init__()
        self.student = student

    def forward(self, waves, tokens):
        return self.student.encode_audio(waves), self.student.encode_text(tokens), self.student.logit_scale.exp()


def label_ids(sources: list[SetSource]) -> dict[str, int]:
    """Label -> integer over every set of the run (multi-positive targets compare these)."""
    labels = set()
    for s in sources:
        if "label" in s.table.column_names:
            labels.update(v for v in s.table.column("label").to_pylist() if v is not None)
    return {lab: i for i, lab in enumerate(sorted(labels))}


class ContrastiveObjective(Objective):
    name = "contrastive"
    trajectory = ("replay_ratio", "alpha", "tau_s", "soft_source")

    def open(self) -> None:
        cfg = self.cfg
        main, replay = open_sets(cfg.store, cfg.set_ref, cfg.replay_ref, cfg.loss)
        self.sources = {"set": main, "replay": replay}
        self.tables = [main.table] + ([replay.table] if replay else [])
        self.label_ids = label_ids([s for s in (main, replay) if s])

    def plan(self, world: int) -> BatchPlan:
        replay = self.sources["replay"]
        return BatchPlan(self.tables[0].num_rows, replay.table.num_rows if replay else 0, self.cfg.batch_size, world,
                         self.cfg.replay_ratio if replay else 0.0, self.cfg.seed)

    def build(self, resume_dir) -> None:
        if resume_dir is None and self.cfg.init:
            check_init_teacher(self.sources["set"], resolve_model(self.cfg.store, self.cfg.init, "--init"), self.cfg.loss)
        self.student, self.student_kind = build_or_load_student(self.cfg, resume_dir)
        self.module = self.student

    def forward_module(self) -> nn.Module:
        return _Pair(self.student)

    def loss(self, model, batch: dict, n: int, step: int, rt) -> tuple[torch.Tensor, dict, str]:
        """The configured loss; a soft-label batch without teacher vectors (e.g. a replay batch) falls
        back to the hard CLAP loss, decided jointly by all ranks so their collectives line up."""
        cfg = self.cfg
        waves = batch["wave"][:n].to(rt.device, non_blocking=True)
        tokens = {k: v[:n].to(rt.device) for k, v in self.student.tokenize(batch["text"][:n]).items()}
        with rt.autocast():
            audio, text, scale = model(waves, tokens)
        audio, text, scale = audio.float(), text.float(), scale.float()
        if cfg.loss == "soft" and all_min(int("teacher_audio" in batch), rt):
            ta = batch["teacher_audio"][:n].to(rt.device, torch.float32)
            tt = batch["teacher_text"][:n].to(rt.device, torch.float32)
            return soft_label_loss(audio, text, ta, tt, scale, cfg.alpha, cfg.tau_s, cfg.soft_source), {}, "soft"
        if cfg.loss == "multi":
            ids = torch.tensor([self.label_ids.get(v, -1) if v is not None else -1 for v in batch["label"][:n]],
                               device=rt.device)
            return multi_positive_loss(audio, text, ids, scale), {}, "multi"
        return clap_loss(audio, text, scale), {}, "clap"

    def evaluator(self, rt):
        cfg = self.cfg
        if not cfg.eval_label_set or rt.rank != 0:
            return None
        return zero_shot_hook(cfg.store, self.student, cfg.eval_label_set, cfg.eval_where, cfg.eval_template)
