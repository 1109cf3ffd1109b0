"""trainer.data.rows: set reading, batch plans (order, replay, ranks), windows, decode failures, loaders."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from trainer_fixtures import CLASSES, make_clips, write_set

from schemas.errors import ParameterError, RefError
from trainer.data.batches import BatchPlan, make_loader
from trainer.data.rows import MAIN, REPLAY, ClipRows, collate, eval_loader, open_set


def test_open_set_resolves_latest_and_records_version(tmp_path, tone, store_uri):
    clips = make_clips(tmp_path / "wav", tone, per_class=1, classes=CLASSES[:3])
    v1 = write_set(store_uri, "pairs", clips)
    v2 = write_set(store_uri, "pairs", clips[:2])
    src = open_set(store_uri, "pairs")
    assert (src.resolved.version, src.table.num_rows, src.ref) == (v2, 2, "pairs")
    old = open_set(store_uri, f"pairs@{v1}")
    assert old.table.num_rows == 3 and old.lineage()["version"] == v1
    assert len(old.lineage()["content_hash"]) == 64
    with pytest.raises(RefError, match="no version 99"):
        open_set(store_uri, "pairs@99")
    with pytest.raises(RefError, match="'nope' does not exist"):
        open_set(store_uri, "nope")


def test_plan_is_seeded_and_covers_each_row_once_per_epoch():
    plan = BatchPlan(n_main=40, n_replay=0, batch_size=8, seed=3)
    e0 = plan.epoch(0)
    assert plan.steps_per_epoch == 5 and len(e0) == 5
    rows = np.concatenate([r for _, r in e0])
    assert sorted(rows.tolist()) == list(range(40))
    assert [r.tolist() for _, r in BatchPlan(40, 0, 8, seed=3).epoch(0)] == [r.tolist() for _, r in e0]
    assert [r.tolist() for _, r in plan.epoch(1)] != [r.tolist() for _, r in e0]
    assert [r.tolist() for _, r in BatchPlan(40, 0, 8, seed=4).epoch(0)] != [r.tolist() for _, r in e0]


def test_replay_replaces_an_exact_fraction_of_whole_batches():
    plan = BatchPlan(n_main=100, n_replay=30, batch_size=10, replay_ratio=0.3, seed=1)
    for epoch in range(3):
        batches = plan.epoch(epoch)
        parts = [p for p, _ in batches]
        assert parts.count(REPLAY) == 3 and parts.count(MAIN) == 7
        for part, rows in batches:
            assert len(set(rows.tolist())) == 10  # no row twice in a batch
            assert rows.max() < (30 if part == REPLAY else 100)
    positions = [[i for i, (p, _) in enumerate(plan.epoch(e)) if p == REPLAY] for e in range(4)]
    assert len({tuple(p) for p in positions}) > 1  # the replaced positions move between epochs


def test_ranks_split_each_global_batch_disjointly():
    plan = BatchPlan(n_main=48, n_replay=0, batch_size=4, world=3, seed=0)
    assert plan.steps_per_epoch == 4
    for step in range(8):
        keys = [plan.rank_keys(step, r) for r in range(3)]
        rows = [k[1] for ks in keys for k in ks]
        assert len(rows) == 12 and len(set(rows)) == 12
        epoch, pos = divmod(step, 4)
        assert sorted(rows) == sorted(plan.epoch(epoch)[pos][1].tolist())


def test_plan_refuses_impossible_settings():
    with pytest.raises(ParameterError, match="fewer than one global batch"):
        BatchPlan(n_main=10, n_replay=0, batch_size=8, world=2)
    with pytest.raises(ParameterError, match="needs a --replay set"):
        BatchPlan(n_main=10, n_replay=0, batch_size=2, replay_ratio=0.5)
    with pytest.raises(ParameterError, match="replay-ratio"):
        BatchPlan(n_main=10, n_replay=10, batch_size=2, replay_ratio=1.0)
    with pytest.raises(ParameterError, match="replay set has 3 rows"):
        BatchPlan(n_main=10, n_replay=3, batch_size=4, replay_ratio=0.5)


def _table(store_uri, tmp_path, tone, seconds=1.5, broken=False):
    clips = make_clips(tmp_path / "wav", tone, per_class=2, classes=CLASSES[:3], seconds=seconds)
    if broken:
        (tmp_path / "bad.wav").write_bytes(b"RIFF not really a wave file")
        clips[1]["uri"] = str(tmp_path / "bad.wav")
    write_set(store_uri, "pairs", clips)
    return open_set(store_uri, "pairs").table


def test_windows_random_in_training_centre_in_eval(tmp_path, tone, store_uri):
    table = _table(store_uri, tmp_path, tone, seconds=1.5)
    train = ClipRows([table], 16000, 8000, train=True, seed=5)
    a, b = train[(MAIN, 0, 0)], train[(MAIN, 0, 0)]
    assert a["wave"].shape == (8000,) and a["wave"].dtype == np.float32
    np.testing.assert_array_equal(a["wave"], b["wave"])  # same (seed, row, epoch) => same crop
    assert not np.array_equal(a["wave"], train[(MAIN, 0, 1)]["wave"])  # another epoch, another crop
    assert a["text"] == "a dog barking" and a["label"] == "dog"
    assert a["teacher_audio"].shape == (16,) and abs(np.linalg.norm(a["teacher_text"]) - 1) < 1e-5
    full = ClipRows([table], 16000, 24000, train=False)[0]["wave"]
    centre = ClipRows([table], 16000, 8000, train=False)[0]["wave"]
    np.testing.assert_allclose(centre, full[8000:16000], atol=1e-6)
    padded = ClipRows([table], 16000, 50000, train=False)[0]["wave"]
    np.testing.assert_allclose(padded[24000:48000], full, atol=1e-6)  # repeat-padded (HF "repeatpad")
    assert not padded[48000:].any()


def test_undecodable_clip_is_skipped_and_reported(tmp_path, tone, store_uri):
    table = _table(store_uri, tmp_path, tone, broken=True)
    rows = ClipRows([table], 16000, 8000, train=True)
    batch = collate([rows[(MAIN, i, 0)] for i in range(4)])
    assert batch["n"] == 3 and batch["wave"].shape == (3, 8000)
    assert batch["rows"] == [0, 2, 3]
    assert len(batch["errors"]) == 1 and batch["errors"][0]["audio_id"] == "a0001"
    assert "bad.wav" in batch["errors"][0]["message"]
    assert batch["teacher_audio"].shape == (3, 16)
    loaded = list(eval_loader(table, 16000, 8000, batch_size=4))
    assert sum(b["n"] for b in loaded) == 5 and sum(len(b["errors"]) for b in loaded) == 1


def test_loader_resumed_mid_run_yields_the_same_batches(tmp_path, tone, store_uri):
    table = _table(store_uri, tmp_path, tone)
    rows = ClipRows([table], 16000, 8000, train=True, seed=2, cache_bytes=1 << 20)
    plan = BatchPlan(table.num_rows, 0, 2, seed=2)
    full = list(make_loader(rows, plan, 0, 6, seed=2))
    tail = list(make_loader(rows, plan, 4, 6, seed=2))
    workers = list(make_loader(rows, plan, 0, 6, num_workers=2, seed=2))
    assert len(full) == 6 and len(tail) == 2
    for a, b in zip(full[4:], tail):
        assert a["audio_id"] == b["audio_id"]
        assert torch.equal(a["wave"], b["wave"])
    for a, b in zip(full, workers):
        assert a["audio_id"] == b["audio_id"] and torch.equal(a["wave"], b["wave"])
    assert rows._cached > 0  # decoded clips kept for the next epoch
