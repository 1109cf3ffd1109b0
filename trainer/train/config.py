"""The options of one `trainer fit` run, whatever its objective, and their validation.

One flat dataclass on purpose: its field names are the CLI's option names and the keys of
`checkpoint.json`'s `hparams`, so `--resume --out DIR` can take every option from the checkpoint.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from schemas.errors import ParameterError
from schemas.tables import PROMPT_TEMPLATE
from trainer.data.context import DEFAULT_CONTEXT_TEMPLATE, check_template
from trainer.train.losses import DEFAULT_TAU_S

CONTRASTIVE_LOSSES = ("clap", "soft", "multi")
LOSSES = CONTRASTIVE_LOSSES + ("hybrid",)
HYBRID_DEFAULTS = {"classes": None, "lam": 0.1, "fuse_metadata": False, "context_template": DEFAULT_CONTEXT_TEMPLATE,
                   "mixup": False, "mixup_alpha": 1.0, "spec_augment": False, "head_hidden": 256,
                   "balance_classes": False}
CONTRASTIVE_ONLY = ("replay_ref", "replay_ratio", "alpha", "tau_s", "soft_source", "val_set")
# Never recorded as hyper-parameters: where the run lives and how this invocation was started.
NOT_HPARAMS = ("store", "out", "resume", "stop_after", "checkpoint_minutes")
_FLAGS = {"lam": "lambda", "replay_ref": "replay"}


def flag(name: str) -> str:
    """The CLI option of a config field."""
    return "--" + _FLAGS.get(name, name).replace("_", "-")


@dataclass
class FitConfig:
    store: str
    set_ref: str | None
    out: str
    init: str | None = None
    student: str | None = None  # compact | clap-hf; None = inferred from --init
    student_config: dict = field(default_factory=dict)
    replay_ref: str | None = None
    replay_ratio: float = 0.0
    loss: str = "soft"
    alpha: float = 0.3
    tau_s: float = DEFAULT_TAU_S
    soft_source: str = "cross"
    epochs: int = 1
    steps: int | None = None  # optimiser steps in all (overrides --epochs): one budget whatever the set's size
    batch_size: int = 32
    lr: float = 1e-4
    weight_decay: float = 0.01
    warmup_steps: int = 0
    grad_clip: float = 1.0
    device: str = "auto"
    seed: int = 0
    checkpoint_every: int = 0
    checkpoint_minutes: float = 10.0  # also checkpoint this often (and at every epoch end); 0 = epochs only
    log_every: int = 10
    num_workers: int = 0
    cache_mb: int = 0
    resume: bool = False
    eval_label_set: str | None = None
    eval_where: str | None = None
    eval_template: str = PROMPT_TEMPLATE
    stop_after: int | None = None  # end after this step without a final save (a simulated kill)
    # validation and early stopping (trainer.train.validation), every objective
    val_set: str | None = None
    val_fraction: float = 0.0
    val_every: int = 0  # steps between validations; 0 = once per epoch
    patience: int | None = None
    # --loss hybrid (DESIGN 6.8-6.9): the scene classifier's options
    classes: str | None = None
    lam: float = 0.1
    fuse_metadata: bool = False
    context_template: str = DEFAULT_CONTEXT_TEMPLATE
    mixup: bool = False
    mixup_alpha: float = 1.0
    spec_augment: bool = False
    head_hidden: int = 256
    balance_classes: bool = False

    @property
    def hybrid(self) -> bool:
        return self.loss == "hybrid"

    def hparams(self) -> dict:
        """What checkpoint.json records: the options that shape this run (not the other objective's)."""
        unused = CONTRASTIVE_ONLY if self.hybrid else tuple(HYBRID_DEFAULTS)
        return {k: v for k, v in asdict(self).items() if k not in NOT_HPARAMS and k not in unused}

    def validate(self) -> None:
        if self.loss not in LOSSES:
            raise ParameterError(f"--loss must be one of {', '.join(LOSSES)}, got {self.loss!r}")
        if not self.set_ref:
            raise ParameterError("--set is required (name, name@VERSION or name@TAG)")
        for name in ("epochs", "batch_size", "log_every", "head_hidden"):
            if getattr(self, name) < 1:
                raise ParameterError(f"{flag(name)} must be at least 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ParameterError(f"--lr must be positive, got {self.lr}")
        if self.warmup_steps < 0 or self.checkpoint_every < 0 or self.num_workers < 0 or self.checkpoint_minutes < 0:
            raise ParameterError("--warmup-steps, --checkpoint-every, --checkpoint-minutes and --num-workers "
                                 "must be >= 0")
        if self.replay_ratio and not self.replay_ref:
            raise ParameterError("--replay-ratio needs --replay REF")
        self._validate_validation()
        if self.hybrid:
            self._validate_hybrid()
            return
        given = [k for k, default in HYBRID_DEFAULTS.items() if getattr(self, k) != default]
        if given:
            hint = " (other losses: --student-config '{\"spec_augment\": true}')" if given[0] == "spec_augment" else ""
            raise ParameterError(f"{flag(given[0])} needs --loss hybrid{hint}")
        if self.eval_where and not self.eval_label_set:
            raise ParameterError("--eval-where needs --eval-label-set (the classes to evaluate)")

    def _validate_validation(self) -> None:
        if self.steps is not None and self.steps < 1:
            raise ParameterError(f"--steps must be at least 1, got {self.steps}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ParameterError(f"--val-fraction must be in [0, 1), got {self.val_fraction}")
        if self.val_set and self.val_fraction:
            raise ParameterError("--val-set and --val-fraction are alternatives; give one")
        if self.val_every < 0:
            raise ParameterError(f"--val-every must be >= 0, got {self.val_every}")
        if self.patience is not None and self.patience < 1:
            raise ParameterError(f"--patience must be at least 1, got {self.patience}")
        if (self.patience is not None or self.val_every) and not self.validates:
            raise ParameterError("--patience and --val-every need a validation set: --val-set REF or --val-fraction F")
        if self.val_set and self.hybrid:
            raise ParameterError("--val-set is not supported with --loss hybrid; use --val-fraction")

    @property
    def validates(self) -> bool:
        return bool(self.val_set or self.val_fraction)

    def _validate_hybrid(self) -> None:
        if not self.classes:
            raise ParameterError("--loss hybrid needs --classes (a label set name or a labels file)")
        used = [k for k in ("replay_ref", "replay_ratio") if getattr(self, k)]
        if used:
            raise ParameterError(f"{flag(used[0])} is not supported with --loss hybrid")
        if self.lam < 0:
            raise ParameterError(f"--lambda must be >= 0, got {self.lam}")
        if self.mixup and not self.mixup_alpha > 0:
            raise ParameterError(f"--mixup-alpha must be positive, got {self.mixup_alpha}")
        check_template(self.context_template)
