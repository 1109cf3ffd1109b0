"""Contrastive losses of the trainer (DESIGN section 6, items 1, 2, 8 and 10).

Each loss is a small function of plain tensors: L2-normalised features in, a scalar out. As in
open_clip's ``loss.py``, cross-device gathering lives in :func:`gather_features`, which every loss
calls first; on one process it is the identity, so the maths below reads the same on 1 or N GPUs.
Under DDP each rank computes the loss over the *global* batch (gradients flow through its own shard
only, DDP averages them), exactly like open_clip's default ``local_loss=False``.

``logit_scale`` is always the multiplier s itself (already exponentiated: pass
``model.logit_scale.exp()``, never the log-space parameter). Clamping s (CLIP caps it at 100) is
the training loop's business, not the loss's.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from schemas.errors import ParameterError

try:
    import torch.distributed as dist
except ImportError:  # pragma: no cover - torch built without distributed support
    dist = None

SOFT_SOURCES = ("cross", "same")
# Default temperature of the intra-modal teacher similarities that build soft targets; see soft_label_loss.
DEFAULT_TAU_S = 0.1


def _distributed() -> bool:
    return dist is not None and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _gather_one(x: torch.Tensor) -> torch.Tensor:
    """Concatenate x from all ranks (rank order); the local slot keeps x itself so its gradient flows."""
    parts = [torch.zeros_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x.contiguous())
    parts[dist.get_rank()] = x
    return torch.cat(parts, dim=0)


def gather_features(audio: torch.Tensor, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Global-batch (audio, text) features; the identity unless torch.distributed runs with > 1 rank.

    Every rank must pass the same local batch size (the data loader drops the last partial batch).
    """
    if not _distributed():
        return audio, text
    return _gather_one(audio), _gather_one(text)


def gather_labels(labels: torch.Tensor) -> torch.Tensor:
    """Global-batch labels (no gradient), matching the row order of :func:`gather_features`."""
    if not _distributed():
        return labels
    return _gather_one(labels)


def _check_pair(audio: torch.Tensor, text: torch.Tensor, what: str) -> None:
    if audio.dim() != 2 or text.dim() != 2 or audio.shape != text.shape:
        raise ParameterError(f"{what}: audio and text features must both be (batch, dim); "
                             f"got {tuple(audio.shape)} and {tuple(text.shape)}")


def _soft_kl(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean over rows of KL(targets_i || softmax(logits_i)); 0·log 0 counts as 0."""
    log_p = F.log_softmax(logits, dim=1)
    return (torch.xlogy(targets, targets) - targets * log_p).sum(dim=1).mean()


def clap_loss(audio: torch.Tensor, text: torch.Tensor, logit_scale: torch.Tensor | float) -> torch.Tensor:
    """Hard CLAP contrastive loss L = ½[CE(s·A·Tᵀ, I) + CE(s·T·Aᵀ, I)].

    audio, text: (n, d) L2-normalised features of n pairs (row i of each is one pair).
    logit_scale: s, the multiplier (``model.logit_scale.exp()``), not its log.
    """
    _check_pair(audio, text, "clap_loss")
    audio, text = gather_features(audio, text)
    logits = logit_scale * audio @ text.T
    labels = torch.arange(logits.shape[0], device=logits.device)
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))


def soft_targets(teacher_audio: torch.Tensor, teacher_text: torch.Tensor, alpha: float = 0.3,
                 tau_s: float = DEFAULT_TAU_S, source: str = "cross") -> tuple[torch.Tensor, torch.Tensor]:
    """(Y_a2t, Y_t2a): (1−α)·I + α·softmax(S/τ_s) built from the teacher's intra-modal similarities.

    source="cross" (DESIGN default): Y_a2t from S_T = T̂·T̂ᵀ and Y_t2a from S_A = Â·Âᵀ, i.e. each
    direction is softened by the similarity among the items it ranks (texts for audio→text).
    source="same": Y_a2t from S_A and Y_t2a from S_T (the query side's own similarity).
    Targets carry no gradient: the teacher is fixed.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ParameterError(f"soft-label alpha must be in [0, 1]; got {alpha}")
    if tau_s <= 0:
        raise ParameterError(f"soft-label temperature tau_s must be > 0; got {tau_s}")
    if source not in SOFT_SOURCES:
        raise ParameterError(f"soft-label source must be one of {', '.join(SOFT_SOURCES)}; got {source!r}")
    with torch.no_grad():
        s_audio = teacher_audio @ teacher_audio.T
        s_text = teacher_text @ teacher_text.T
        eye = torch.eye(s_audio.shape[0], dtype=s_audio.dtype, device=s_audio.device)
        soft_audio = (1 - alpha) * eye + alpha * F.softmax(s_audio / tau_s, dim=1)
        soft_text = (1 - alpha) * eye + alpha * F.softmax(s_text / tau_s, dim=1)
    return (soft_text, soft_audio) if source == "cross" else (soft_audio, soft_text)


def soft_label_loss(audio: torch.Tensor, text: torch.Tensor, teacher_audio: torch.Tensor,
                    teacher_text: torch.Tensor, logit_scale: torch.Tensor | float, alpha: float = 0.3,
                    tau_s: float = DEFAULT_TAU_S, source: str = "cross") -> torch.Tensor:
    """Soft-label contrastive loss L = ½[KL(Y_a2t ‖ softmax(s·A·Tᵀ)) + KL(Y_t2a ‖ softmax(s·T·Aᵀ))].

    KL is taken per row and averaged over rows; the targets come from :func:`soft_targets` on the
    teacher vectors Â, T̂ of the same rows (stored in the set). With α = 0 the targets are I and the
    loss equals :func:`clap_loss`.

    tau_s defaults to 0.1, a fixed number rather than the teacher's own temperature 1/s_teacher
    (≈ 0.01 for a trained CLAP): that scale is calibrated for cross-modal scores, and intra-modal
    cosines sit much closer together, so at 0.01 a near-duplicate caption (cos 0.95) would get only
    e^-5 of the self weight and the soft part would collapse to I. At 0.1 a near-duplicate keeps
    e^-0.5 ≈ 0.6 of it while an unrelated row (cos ≤ 0.5) gets ≤ e^-5, and being a constant it keeps
    the targets a function of the set alone, independent of any model's learnt scale.
    """
    _check_pair(audio, text, "soft_label_loss")
    _check_pair(teacher_audio, teacher_text, "soft_label_loss (teacher)")
    if teacher_audio.shape[0] != audio.shape[0]:
        raise ParameterError(f"soft_label_loss: {teacher_audio.shape[0]} teacher rows for "
                             f"{audio.shape[0]} student rows")
    audio, text = gather_features(audio, text)
    teacher_audio, teacher_text = gather_features(teacher_audio, teacher_text)
    y_a2t, y_t2a = soft_targets(teacher_audio.to(audio.dtype), teacher_text.to(text.dtype), alpha, tau_s, source)
    logits = logit_scale * audio @ text.T
    return 0.5 * (_soft_kl(logits, y_a2t) + _soft_kl(logits.T, y_t2a))


def multi_positive_targets(labels: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Row-stochastic (n, n) targets: row i spreads its mass evenly over rows sharing its label.

    A negative label means "unlabelled": that row is a positive of its own pair only.
    """
    labels = labels.reshape(-1)
    idx = torch.arange(labels.shape[0], device=labels.device)
    same = (labels[:, None] == labels[None, :]) & (labels[:, None] >= 0)
    same = same | (idx[:, None] == idx[None, :])
    same = same.to(dtype)
    return same / same.sum(dim=1, keepdim=True)


def multi_positive_loss(audio: torch.Tensor, text: torch.Tensor, labels: torch.Tensor,
                        logit_scale: torch.Tensor | float) -> torch.Tensor:
    """Label-aware contrastive loss (DESIGN 6.10): rows sharing a label are all positives.

    labels: (n,) integer class ids (negative = unlabelled). Targets Y = row-normalised
    1[label_i = label_j] (symmetric); L = ½[KL(Y ‖ softmax(s·A·Tᵀ)) + KL(Y ‖ softmax(s·T·Aᵀ))].
    With all labels distinct, Y = I and this equals :func:`clap_loss`.
    """
    _check_pair(audio, text, "multi_positive_loss")
    if labels.reshape(-1).shape[0] != audio.shape[0]:
        raise ParameterError(f"multi_positive_loss: {labels.numel()} labels for {audio.shape[0]} rows")
    audio, text = gather_features(audio, text)
    targets = multi_positive_targets(gather_labels(labels.reshape(-1)), dtype=audio.dtype)
    logits = logit_scale * audio @ text.T
    return 0.5 * (_soft_kl(logits, targets) + _soft_kl(logits.T, targets))


def hybrid_loss(logits: torch.Tensor, targets: torch.Tensor, contrastive: torch.Tensor,
                lam: float = 0.1) -> torch.Tensor:
    """Scene workflow loss (DESIGN 6.8): CE(classifier logits, y) + λ·L_contrastive.

    targets: (n,) class indices, or (n, C) class probabilities (mixup); classification dominates
    with the default λ = 0.1. ``contrastive`` is an already computed loss (e.g. :func:`clap_loss`).
    """
    if lam < 0:
        raise ParameterError(f"hybrid loss weight lambda must be >= 0; got {lam}")
    if targets.dim() == 2:
        if targets.shape != logits.shape:
            raise ParameterError(f"hybrid_loss: soft targets {tuple(targets.shape)} do not match "
                                 f"logits {tuple(logits.shape)}")
        targets = targets.to(logits.dtype)
    elif targets.dim() != 1 or targets.shape[0] != logits.shape[0]:
        raise ParameterError(f"hybrid_loss: targets {tuple(targets.shape)} do not match logits "
                             f"{tuple(logits.shape)}")
    return F.cross_entropy(logits, targets) + lam * contrastive


class SoftLabelLoss(nn.Module):
    """Module form of :func:`soft_label_loss` with its options fixed at construction."""

    def __init__(self, alpha: float = 0.3, tau_s: float = DEFAULT_TAU_S, source: str = "cross"):
        super().__init__()
        soft_targets(torch.zeros(1, 1), torch.zeros(1, 1), alpha, tau_s, source)  # validate early
        self.alpha, self.tau_s, self.source = alpha, tau_s, source

    def forward(self, audio, text, teacher_audio, teacher_text, logit_scale):
        return soft_label_loss(audio, text, teacher_audio, teacher_text, logit_scale,
                               self.alpha, self.tau_s, self.source)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, tau_s={self.tau_s}, source={self.source!r}"

