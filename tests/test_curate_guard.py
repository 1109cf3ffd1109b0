"""Contamination guard: duplicates of evaluation clips by sha1 and by vector, excluded from builds."""

from __future__ import annotations

import pytest
from curation_data import build_world, versions

from curator.curate.guard import contaminated_ids, find_contamination, record_contamination
from curator.curate.strategies import MatchOptions, build_du
from curator.models.registry import get_model
from schemas.errors import ParameterError

POOL, EVAL = "source = 'wild'", "source = 'esc50'"


@pytest.fixture
def world(store):
    return build_world(store)


def test_guard_finds_sha1_and_vector_duplicates(store, world):
    wild, ev = world.ids("wild"), world.ids("esc50")
    rows = find_contamination(store, POOL, EVAL, get_model(store, "teach"), threshold=0.98)
    found = {(r["audio_id"], r["eval_audio_id"]): r for r in rows.to_pylist()}
    assert set(found) == {(wild[0], ev[0]), (wild[1], ev[1])}
    assert found[(wild[0], ev[0])]["reason"] == "sha1"
    sim = found[(wild[1], ev[1])]
    assert sim["reason"] == "similarity" and sim["model_id"] == "teach"
    assert sim["similarity"] == pytest.approx(float(world.avec[wild[1]] @ world.avec[ev[1]]), abs=1e-5)
    sha_only = find_contamination(store, POOL, EVAL, None)
    assert [(r["audio_id"], r["reason"]) for r in sha_only.to_pylist()] == [(wild[0], "sha1")]


def test_recorded_contamination_is_excluded_from_builds(store, world):
    wild = world.ids("wild")
    rows = find_contamination(store, POOL, EVAL, get_model(store, "teach"))
    assert record_contamination(store, rows) == 2
    assert record_contamination(store, rows) == 0  # idempotent
    assert contaminated_ids(store) == {wild[0], wild[1]}
    clean = build_du(store, "teach", MatchOptions(-1.0), POOL)
    assert not {wild[0], wild[1]} & set(clean.rows.column("audio_id").to_pylist())
    assert clean.stats["contaminated_excluded"] == 2 and any(i.startswith("contamination@") for i in clean.inputs)
    dirty = build_du(store, "teach", MatchOptions(-1.0), POOL, allow_contaminated=True)
    assert {wild[0], wild[1]} <= set(dirty.rows.column("audio_id").to_pylist())


def test_guard_errors(store, world):
    with pytest.raises(ParameterError, match="selects no clips"):
        find_contamination(store, "source = 'none'", EVAL)
    with pytest.raises(ParameterError, match="outside"):
        find_contamination(store, POOL, EVAL, threshold=2.0)


def test_cli_guard(cli, store, world):
    r = cli.curator("guard", "--model", "teach", "--pool-where", POOL, "--eval-where", EVAL)
    assert r.code == 0, r.output
    assert "2 contaminated pair(s) found, 2 new" in r.output and "sha1" in r.output and "similarity" in r.output
    n = versions(store, "contamination")
    r = cli.curator("guard", "--model", "nope", "--pool-where", POOL, "--eval-where", EVAL)
    assert r.code == 2 and r.output.startswith("error: unknown model 'nope'")
    assert versions(store, "contamination") == n
