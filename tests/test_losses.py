"""trainer.train.losses against plain float64 statements of the DESIGN formulas, open_clip, and 2 real ranks."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import math

import numpy as np
import pytest
import torch

from schemas.errors import ParameterError
from trainer.train import losses as L


def _unit(rng, n, d):
    x = rng.standard_normal((n, d))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _t(x):
    return torch.tensor(x, dtype=torch.float64)


def _log_softmax_row(row):
    m = max(row)
    return [v - m - math.log(sum(math.exp(u - m) for u in row)) for v in row]


def _softmax_row(row):
    return [math.exp(v) for v in _log_softmax_row(row)]


def _kl_rows(targets, logits):
    """mean_i Σ_j Y_ij (log Y_ij − log softmax(logits)_ij), written out with loops."""
    total = 0.0
    for y_row, z_row in zip(targets, logits):
        log_p = _log_softmax_row(z_row)
        total += sum(y * (math.log(y) - lp) for y, lp in zip(y_row, log_p) if y > 0)
    return total / len(targets)


def _ref_clap(a, t, s):
    n = len(a)
    a2t = [[s * float(np.dot(a[i], t[j])) for j in range(n)] for i in range(n)]
    t2a = [[s * float(np.dot(t[i], a[j])) for j in range(n)] for i in range(n)]
    ce_a = -sum(_log_softmax_row(a2t[i])[i] for i in range(n)) / n
    ce_t = -sum(_log_softmax_row(t2a[i])[i] for i in range(n)) / n
    return 0.5 * (ce_a + ce_t)


def _ref_soft(a, t, ta, tt, s, alpha, tau, source):
    n = len(a)
    s_a = [[float(np.dot(ta[i], ta[j])) / tau for j in range(n)] for i in range(n)]
    s_t = [[float(np.dot(tt[i], tt[j])) / tau for j in range(n)] for i in range(n)]

    def targets(sim):
        return [[(1 - alpha) * (i == j) + alpha * p for j, p in enumerate(_softmax_row(sim[i]))]
                for i in range(n)]

    y_a2t, y_t2a = (targets(s_t), targets(s_a)) if source == "cross" else (targets(s_a), targets(s_t))
    a2t = [[s * float(np.dot(a[i], t[j])) for j in range(n)] for i in range(n)]
    t2a = [[s * float(np.dot(t[i], a[j])) for j in range(n)] for i in range(n)]
    return 0.5 * (_kl_rows(y_a2t, a2t) + _kl_rows(y_t2a, t2a))


@pytest.fixture
def batch():
    rng = np.random.default_rng(7)
    n, d = 6, 5
    return {"a": _unit(rng, n, d), "t": _unit(rng, n, d), "ta": _unit(rng, n, d), "tt": _unit(rng, n, d)}


def test_clap_loss_matches_formula(batch):
    got = L.clap_loss(_t(batch["a"]), _t(batch["t"]), torch.tensor(14.3, dtype=torch.float64))
    assert got.item() == pytest.approx(_ref_clap(batch["a"], batch["t"], 14.3), rel=1e-12)


def _open_clip_loss_module():
    """open_clip's own loss.py, loaded by path: the package __init__ needs torchvision, loss.py does not."""
    try:
        path = importlib.metadata.distribution("open_clip_torch").locate_file("open_clip/loss.py")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("open_clip_torch is not installed (pip install open_clip_torch --no-deps)")
    spec = importlib.util.spec_from_file_location("_open_clip_loss", str(path))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_clap_loss_equals_open_clip_clip_loss(batch):
    clip_loss = _open_clip_loss_module().ClipLoss()
    a, t = _t(batch["a"]), _t(batch["t"])
    for s in (1.0, 1 / 0.07, 100.0):
        scale = torch.tensor(s, dtype=torch.float64)
        expected = clip_loss(a, t, scale)
        torch.testing.assert_close(L.clap_loss(a, t, scale), expected, rtol=1e-13, atol=0)


@pytest.mark.parametrize("source", ["cross", "same"])
@pytest.mark.parametrize("alpha,tau", [(0.3, 0.1), (0.7, 0.05), (1.0, 0.5)])
def test_soft_label_loss_matches_formula(batch, source, alpha, tau):
    got = L.soft_label_loss(_t(batch["a"]), _t(batch["t"]), _t(batch["ta"]), _t(batch["tt"]),
                            torch.tensor(20.0, dtype=torch.float64), alpha=alpha, tau_s=tau, source=source)
    expected = _ref_soft(batch["a"], batch["t"], batch["ta"], batch["tt"], 20.0, alpha, tau, source)
    assert got.item() == pytest.approx(expected, rel=1e-12)


def test_soft_label_sources_differ_and_default_is_cross(batch):
    args = (_t(batch["a"]), _t(batch["t"]), _t(batch["ta"]), _t(batch["tt"]), 20.0)
    cross = L.soft_label_loss(*args, source="cross")
    assert L.soft_label_loss(*args).item() == cross.item()
    wide = {"alpha": 0.5, "tau_s": 1.0}
    assert abs(L.soft_label_loss(*args, source="cross", **wide).item()
               - L.soft_label_loss(*args, source="same", **wide).item()) > 1e-3
    y_a2t, y_t2a = L.soft_targets(_t(batch["ta"]), _t(batch["tt"]))
    torch.testing.assert_close(y_a2t.sum(1), torch.ones(6, dtype=torch.float64))
    # cross: audio->text targets come from the teacher's text-text similarity
    expected = 0.7 * torch.eye(6, dtype=torch.float64) + 0.3 * torch.softmax(_t(batch["tt"] @ batch["tt"].T) / 0.1, 1)
    torch.testing.assert_close(y_a2t, expected)


def test_alpha_zero_is_exactly_the_hard_loss(batch):
    """α = 0 gives targets that are exactly I, and the loss of clap_loss up to summation order (ulps)."""
    a, t, ta, tt = (_t(batch[k]) for k in ("a", "t", "ta", "tt"))
    for dtype, rtol in ((torch.float64, 4e-16), (torch.float32, 2e-7)):
        args = [x.to(dtype) for x in (a, t, ta, tt)]
        for y in L.soft_targets(args[2], args[3], alpha=0.0):
            assert torch.equal(y, torch.eye(6, dtype=dtype))
        hard = L.clap_loss(args[0], args[1], 30.0)
        soft = L.soft_label_loss(*args, 30.0, alpha=0.0)
        torch.testing.assert_close(soft, hard, rtol=rtol, atol=0)


def test_soft_label_loss_gradcheck():
    rng = np.random.default_rng(3)
    a = _t(_unit(rng, 4, 3)).requires_grad_()
    t = _t(_unit(rng, 4, 3)).requires_grad_()
    ta, tt = _t(_unit(rng, 4, 3)), _t(_unit(rng, 4, 3))
    scale = torch.tensor(5.0, dtype=torch.float64, requires_grad=True)
    for source in ("cross", "same"):
        assert torch.autograd.gradcheck(
            lambda x, y, s: L.soft_label_loss(x, y, ta, tt, s, alpha=0.4, tau_s=0.2, source=source),
            (a, t, scale))


def test_soft_label_loss_gives_no_gradient_to_teacher(batch):
    ta = _t(batch["ta"]).requires_grad_()
    a = _t(batch["a"]).requires_grad_()
    L.soft_label_loss(a, _t(batch["t"]), ta, _t(batch["tt"]), 10.0).backward()
    assert ta.grad is None and a.grad is not None and torch.isfinite(a.grad).all()


def test_multi_positive_loss_matches_formula(batch):
    labels = [2, 0, 2, 1, 0, -1]
    got = L.multi_positive_loss(_t(batch["a"]), _t(batch["t"]), torch.tensor(labels), 12.0)
    n = len(labels)
    y = [[1.0 if (i == j or (labels[i] >= 0 and labels[i] == labels[j])) else 0.0 for j in range(n)]
         for i in range(n)]
    y = [[v / sum(row) for v in row] for row in y]
    a, t = batch["a"], batch["t"]
    a2t = [[12.0 * float(np.dot(a[i], t[j])) for j in range(n)] for i in range(n)]
    t2a = [[12.0 * float(np.dot(t[i], a[j])) for j in range(n)] for i in range(n)]
    assert got.item() == pytest.approx(0.5 * (_kl_rows(y, a2t) + _kl_rows(y, t2a)), rel=1e-12)
    assert y[0] == [0.5, 0.0, 0.5, 0.0, 0.0, 0.0] and y[5][5] == 1.0


def test_multi_positive_with_distinct_labels_is_the_hard_loss(batch):
    a, t = _t(batch["a"]), _t(batch["t"])
    got = L.multi_positive_loss(a, t, torch.arange(6), 12.0)
    assert got.item() == L.clap_loss(a, t, 12.0).item()


def test_hybrid_loss_hard_and_mixup_targets():
    rng = np.random.default_rng(1)
    logits = rng.standard_normal((4, 3))
    y = [2, 0, 1, 2]
    contrastive = torch.tensor(1.7, dtype=torch.float64)
    ce = -sum(_log_softmax_row(list(logits[i]))[y[i]] for i in range(4)) / 4
    got = L.hybrid_loss(_t(logits), torch.tensor(y), contrastive)
    assert got.item() == pytest.approx(ce + 0.1 * 1.7, rel=1e-12)
    mix = np.array([[0.0, 0.3, 0.7], [1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.0, 0.0, 1.0]])
    soft_ce = -sum(mix[i, c] * _log_softmax_row(list(logits[i]))[c] for i in range(4) for c in range(3)) / 4
    got = L.hybrid_loss(_t(logits), _t(mix), contrastive, lam=0.5)
    assert got.item() == pytest.approx(soft_ce + 0.5 * 1.7, rel=1e-12)


def test_bad_parameters_raise_parameter_error(batch):
    a, t = _t(batch["a"]), _t(batch["t"])
    with pytest.raises(ParameterError, match="alpha"):
        L.soft_label_loss(a, t, a, t, 10.0, alpha=1.5)
    with pytest.raises(ParameterError, match="source"):
        L.SoftLabelLoss(source="both")
    with pytest.raises(ParameterError, match="tau_s"):
        L.soft_label_loss(a, t, a, t, 10.0, tau_s=0.0)
    with pytest.raises(ParameterError, match=r"\(batch, dim\)"):
        L.clap_loss(a, t[:3], 10.0)
    with pytest.raises(ParameterError, match="labels"):
        L.multi_positive_loss(a, t, torch.arange(4), 10.0)
    with pytest.raises(ParameterError, match="targets"):
        L.hybrid_loss(a, torch.zeros(6, 2), torch.tensor(0.0))


def test_gather_is_identity_without_process_group(batch):
    a, t = _t(batch["a"]), _t(batch["t"])
    ga, gt = L.gather_features(a, t)
    assert ga is a and gt is t


def _rank_worker(rank, world, init_file, a, t, ta, tt, labels, out):
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        shard = slice(rank * 3, rank * 3 + 3)
        la, lt = a[shard].clone().requires_grad_(), t[shard].clone().requires_grad_()
        total = (L.clap_loss(la, lt, 9.0) + L.soft_label_loss(la, lt, ta[shard], tt[shard], 9.0)
                 + L.multi_positive_loss(la, lt, labels[shard], 9.0))
        total.backward()
        out[rank] = (total.item(), la.grad.numpy().copy(), lt.grad.numpy().copy())
    finally:
        dist.destroy_process_group()


def test_two_ranks_compute_the_global_batch_loss(batch, tmp_path):
    """2 real gloo ranks with 3 rows each give the 6-row loss, and each shard its full-batch gradient."""
    import torch.multiprocessing as mp

    a, t, ta, tt = (_t(batch[k]) for k in ("a", "t", "ta", "tt"))
    labels = torch.tensor([1, 0, 1, 2, 0, 3])
    out = mp.Manager().dict()
    mp.spawn(_rank_worker, args=(2, str(tmp_path / "pg"), a, t, ta, tt, labels, out), nprocs=2, join=True)
    ga, gt = a.clone().requires_grad_(), t.clone().requires_grad_()
    total = (L.clap_loss(ga, gt, 9.0) + L.soft_label_loss(ga, gt, ta, tt, 9.0)
             + L.multi_positive_loss(ga, gt, labels, 9.0))
    total.backward()
    for rank in (0, 1):
        loss, grad_a, grad_t = out[rank]
        assert loss == pytest.approx(total.item(), rel=1e-12)
        np.testing.assert_allclose(grad_a, ga.grad[rank * 3:rank * 3 + 3].numpy(), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(grad_t, gt.grad[rank * 3:rank * 3 + 3].numpy(), rtol=1e-10, atol=1e-12)
