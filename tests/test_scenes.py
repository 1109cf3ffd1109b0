"""Scene workflow pieces: hybrid loss, fusion shapes, context captions with unknowns, and the SQL
view's time features against the trainer's."""

from __future__ import annotations

import csv
import math
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from schemas.errors import ParameterError
from trainer.data.context import (
    PARTS_OF_DAY,
    check_template,
    city_index,
    city_vocabulary,
    context_caption,
    part_of_day,
    time_context,
)
from trainer.train.losses import clap_loss, hybrid_loss, multi_positive_loss

TINY = {"dim": 16, "window_s": 0.5, "n_fft": 256, "hop_length": 160, "n_mels": 16, "channels": [4, 8],
        "transformer_layers": 1, "heads": 2, "freeze_layers": 6, "dropout": 0.0}


def _direct_clap(a: np.ndarray, t: np.ndarray, s: float) -> float:
    logits = s * a @ t.T

    def ce_rows(z):
        z = z - z.max(axis=1, keepdims=True)
        logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        return -np.mean(np.diag(logp))

    return 0.5 * (ce_rows(logits) + ce_rows(logits.T))


def test_hybrid_loss_equals_direct_ce_plus_lambda_contrastive():
    rng = np.random.default_rng(0)
    n, c, d, lam = 6, 4, 8, 0.1
    logits = rng.standard_normal((n, c))
    y = rng.integers(0, c, n)
    a = rng.standard_normal((n, d))
    t = rng.standard_normal((n, d))
    a /= np.linalg.norm(a, axis=1, keepdims=True)
    t /= np.linalg.norm(t, axis=1, keepdims=True)
    z = logits - logits.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    ce_hard = -logp[np.arange(n), y].mean()
    expected = ce_hard + lam * _direct_clap(a, t, 10.0)
    con = clap_loss(torch.tensor(a), torch.tensor(t), 10.0)
    got = hybrid_loss(torch.tensor(logits), torch.tensor(y), con, lam)
    assert float(got) == pytest.approx(expected, rel=1e-6)
    # soft (mixup) targets: -sum q log p, averaged over rows
    q = rng.dirichlet(np.ones(c), n)
    got_soft = hybrid_loss(torch.tensor(logits), torch.tensor(q), con, lam)
    assert float(got_soft) == pytest.approx(-(q * logp).sum(1).mean() + lam * _direct_clap(a, t, 10.0), rel=1e-6)
    # one-hot soft targets are the hard loss; classification dominates at lambda 0.1
    onehot = F.one_hot(torch.tensor(y), c).double()
    assert float(hybrid_loss(torch.tensor(logits), onehot, con, lam)) == pytest.approx(float(got), rel=1e-9)
    with pytest.raises(ParameterError):
        hybrid_loss(torch.tensor(logits), torch.tensor(q[:, :2]), con, lam)


def test_shared_captions_are_positives_of_each_other():
    """The contrastive term of the hybrid loop groups rows by caption; with distinct captions it is CLAP."""
    torch.manual_seed(0)
    a = F.normalize(torch.randn(5, 8), dim=1)
    t = F.normalize(torch.randn(5, 8), dim=1)
    distinct = multi_positive_loss(a, t, torch.arange(5), 7.0)
    assert float(distinct) == pytest.approx(float(clap_loss(a, t, 7.0)), rel=1e-6)
    shared = multi_positive_loss(a, t, torch.tensor([0, 0, 1, 1, 2]), 7.0)
    assert float(shared) != pytest.approx(float(distinct))


def test_context_caption_and_unknown_tokens():
    when = datetime(2023, 5, 3, 19, 30, tzinfo=timezone.utc)  # a Wednesday evening
    assert context_caption("{label}, recorded in {city} in the {part_of_day}", "park", "paris", when) == \
        "park, recorded in paris in the evening"
    assert context_caption("{label} in {city} on {weekday} at {hour}", "park", "paris", when) == \
        "park in paris on Wednesday at 19:00"
    unknown = context_caption("{label}, recorded in {city} in the {part_of_day}", "park", None, None)
    assert unknown == "park, recorded in an unknown city in the unknown part of the day"
    assert "an unknown city" in context_caption("{city}", None, "  ", when)
    with pytest.raises(ParameterError, match="unknown field"):
        check_template("{label} at {place}")
    with pytest.raises(ParameterError):
        check_template("{label")
    vocab = city_vocabulary(["paris", None, "london", "paris", ""])
    assert vocab == ["london", "paris"]
    assert city_index(vocab, ["paris", None, "tokyo", "london"]) == [1, -1, -1, 0]


def test_part_of_day_boundaries():
    assert [part_of_day(h) for h in (0, 5, 6, 11, 12, 17, 18, 23)] == \
        ["night", "night", "morning", "morning", "afternoon", "afternoon", "evening", "evening"]
    with pytest.raises(ParameterError):
        part_of_day(24)
    assert time_context(None) == {"hour": None, "part_of_day": None, "weekday": None}


def test_fusion_shapes_and_unknown_city():
    from trainer.students.classifier import ClassifierConfig, SceneClassifier
    from trainer.students.loading import build_student

    torch.manual_seed(0)
    student = build_student("compact", **TINY)
    plain = SceneClassifier(student, ClassifierConfig(classes=["a", "b", "c"]))
    fused = SceneClassifier(student, ClassifierConfig(classes=["a", "b", "c"], cities=["london", "paris"],
                                                      fuse_metadata=True, hidden=32, city_dim=4, time_hidden=8))
    waves = torch.randn(4, 8000)
    times = [datetime(2023, 1, 1, h, tzinfo=timezone.utc) for h in (1, 7, 13, 19)]
    city, tfeat = fused.metadata_tensors(["paris", None, "tokyo", "london"], times)
    assert city.tolist() == [1, -1, -1, 0] and tuple(tfeat.shape) == (4, 6)
    audio, logits = fused(waves, city, tfeat)
    assert tuple(audio.shape) == (4, 16) and tuple(logits.shape) == (4, 3)
    assert fused.head.net[0].in_features == 16 + 4 + 8
    assert plain.head.net[0].in_features == 16 and isinstance(plain.head.net[1], torch.nn.GELU)
    _, plain_logits = plain(waves)
    assert tuple(plain_logits.shape) == (4, 3)
    # metadata changes a fused prediction, not a plain one
    other = fused.logits(audio, torch.tensor([0, 0, 0, 0]), tfeat)
    assert not torch.allclose(other, logits)
    with pytest.raises(ParameterError):
        ClassifierConfig(classes=["a", "b"], fuse_metadata=True).validate()


def _manifest(folder, tone) -> list[str]:
    start = datetime(2023, 3, 6, 0, 17)  # a Monday
    stamps = [(start + timedelta(hours=7 * i)).isoformat() for i in range(10)] + ["", "2023-06-01T23:59:00Z"]
    rows = []
    for i, ts in enumerate(stamps):
        tone(str(folder / "audio" / f"c{i}.wav"), seconds=0.2, sr=8000, freq=300 + 40 * i)
        rows.append([f"audio/c{i}.wav", "park" if i % 3 == 0 else "", "paris" if i % 2 else "", ts,
                     "true" if i % 3 == 0 else "false"])
    with open(folder / "scenes.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["filename", "scene_label", "city", "timestamp", "labelled"])
        w.writerows(rows)
    return stamps


def test_sql_view_time_features_equal_trainer_features(tmp_path, cli, store, tone):
    from curator.store.sql import query

    _manifest(tmp_path, tone)
    r = cli.curator("ingest", "audio", tmp_path / "scenes.csv", "--source", "scenes")
    assert r.code == 0, r.output
    rows = query(store, "select audio_id, recorded_at, labels, hour, part_of_day, weekday from audio_context").to_pylist()
    assert len(rows) == 12
    seen_parts = set()
    for row in rows:
        expected = time_context(row["recorded_at"])
        assert {k: row[k] for k in ("hour", "part_of_day", "weekday")} == expected
        seen_parts.add(row["part_of_day"])
    assert seen_parts == set(PARTS_OF_DAY) | {None}
    assert sum(1 for row in rows if row["labels"]) == 4  # unlabelled rows keep labels = []
    assert math.isclose(query(store, "select count(*) as n from audio_context where weekday = 0").column(0)[0].as_py(),
                        sum(1 for row in rows if row["weekday"] == 0))


def test_balance_classes_oversamples_to_the_largest_class():
    import pyarrow as pa

    from trainer.train.hybrid import SceneRows, balance

    rows = SceneRows(pa.table({"audio_id": list("abcdef")}), np.array([0, 0, 0, 0, 1, 2]), list("ABCDEF"),
                     np.arange(6), [None] * 6, [None] * 6, 0)
    out = balance(rows)
    assert np.bincount(out.y).tolist() == [4, 4, 4]
    assert out.table.column("audio_id").to_pylist() == list("abcd") + ["e"] * 4 + ["f"] * 4
    assert out.captions[4:8] == ["E"] * 4 and out.groups.tolist()[-4:] == [5] * 4
