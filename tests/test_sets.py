"""Set versions and the catalog: determinism, new versions on change, diff, rollback, tags,
lineage through trained models, and export round-trips."""

from __future__ import annotations

import csv
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from curation_data import build_world, versions, write_model, write_vectors

from curator.curate.catalog import diff_sets, export_set, list_sets, show_set, tag_set, write_set
from curator.curate.pseudo import PseudoOptions, build_pseudo
from curator.curate.strategies import MatchOptions, build_du
from curator.store.store import Store
from schemas.errors import ParameterError, RefError, StoreError
from schemas.sets import content_hash, read_set

POOL = "source = 'wild'"


@pytest.fixture
def world(store):
    return build_world(store)


def _du(store, tau, name="du"):
    b = build_du(store, "teach", MatchOptions(tau, top_k=5), POOL)
    resolved, written = write_set(store, name, b.rows, b.strategy, b.params, b.inputs, b.model)
    assert written
    return b, resolved


def _keys(rows):
    return set(zip(rows.column("text_id").to_pylist(), rows.column("audio_id").to_pylist()))


def test_same_inputs_same_hash_and_tau_change_gives_new_version_and_exact_diff(store, world):
    b1, v1 = _du(store, 0.5)
    again = build_du(store, "teach", MatchOptions(0.5, top_k=5), POOL)
    assert content_hash(again.rows) == v1.content_hash
    same, written = write_set(store, "du", again.rows, "du", again.params, again.inputs, again.model)
    assert same.version == v1.version and not written  # an identical rebuild writes nothing
    b2, v2 = _du(store, 0.6)
    assert v2.version > v1.version and v2.content_hash != v1.content_hash
    d = diff_sets(store, "du@1", f"du@{v2.version}")
    k1, k2 = _keys(b1.rows), _keys(b2.rows)
    assert _keys(d.added) == k2 - k1 and _keys(d.removed) == k1 - k2 and d.common == len(k1 & k2)
    assert d.removed.num_rows > 0  # raising tau drops pairs
    _, v3 = _du(store, 0.5)  # back to the first threshold: a new version with the first content
    assert v3.version > v2.version and v3.content_hash == v1.content_hash
    rows, resolved = read_set(store.uri, "du")
    assert resolved.version == v3.version and rows.num_rows == v1.rows
    assert rows.column("audio_id").to_pylist() == sorted(rows.column("audio_id").to_pylist())  # stable order


def test_empty_result_is_refused_unless_allowed(store, world):
    b = build_du(store, "teach", MatchOptions(0.999), POOL)
    assert b.rows.num_rows == 0
    with pytest.raises(ParameterError, match="no rows; nothing written"):
        write_set(store, "empty", b.rows, b.strategy, b.params, b.inputs, b.model)
    # nothing written: `sets` is still only the empty table made with the store
    assert not store.has("set_empty") and versions(store, "sets") == 1 and store.read("sets").num_rows == 0
    v, _ = write_set(store, "empty", b.rows, b.strategy, b.params, b.inputs, b.model, allow_empty=True)
    assert v.rows == 0 and read_set(store.uri, "empty")[0].num_rows == 0


def test_catalog_failure_rolls_the_set_table_back(store, world, monkeypatch):
    b1, v1 = _du(store, 0.5)
    b2 = build_du(store, "teach", MatchOptions(0.6, top_k=5), POOL)
    real_append = Store.append

    def failing_append(self, name, data, schema=None):  # fault injection: the catalog write fails
        if name == "sets":
            raise OSError("disk full")
        return real_append(self, name, data, schema)

    monkeypatch.setattr(Store, "append", failing_append)
    with pytest.raises(StoreError, match="catalog write failed, set table rolled back"):
        write_set(store, "du", b2.rows, b2.strategy, b2.params, b2.inputs, b2.model)
    with pytest.raises(StoreError):
        write_set(store, "fresh", b2.rows, b2.strategy, b2.params, b2.inputs, b2.model)
    monkeypatch.undo()
    # a brand-new set's table is back to its empty first version, and no catalog row names it
    assert store.read("set_fresh").num_rows == 0
    with pytest.raises(RefError, match="does not exist"):
        read_set(store.uri, "fresh")
    rows, resolved = read_set(store.uri, "du")  # latest is still version 1, content verified
    assert resolved.version == v1.version and content_hash(rows) == v1.content_hash
    assert store.read("set_du").num_rows == v1.rows  # the table's current data is version 1's again
    v2, _ = write_set(store, "du", b2.rows, b2.strategy, b2.params, b2.inputs, b2.model)
    assert read_set(store.uri, f"du@{v2.version}")[1].content_hash == content_hash(b2.rows)
    assert v2.version == v1.version + 1  # the catalog numbers versions: the failed write used no number


def test_tags_list_and_bad_refs(store, world):
    _, v1 = _du(store, 0.5)
    _, v2 = _du(store, 0.6)
    tag_set(store, "du@1", "baseline")
    assert read_set(store.uri, "du@baseline")[1].version == v1.version
    with pytest.raises(RefError, match="no tag 'nope'"):
        read_set(store.uri, "du@nope")
    with pytest.raises(RefError, match="no version 9"):
        tag_set(store, "du@9", "x")
    with pytest.raises(RefError, match="does not exist"):
        diff_sets(store, "du@1", "ghost")
    listing = list_sets(store).to_pylist()
    assert [(r["name"], r["version"]) for r in listing] == [("du", v1.version), ("du", v2.version)]
    assert listing[0]["tags"] == "baseline" and listing[0]["strategy"] == "du"


def test_show_lineage_walks_pseudo_round_back_to_round_zero(store, world):
    _, du = _du(store, 0.5)
    # A student trained on du@1, registered with its vectors: round 1 of pseudo-labelling.
    write_model(store, "student1", trained_on=du.ref, logit_scale=50.0)
    write_vectors(store, "student1", "audio", world.avec)
    write_vectors(store, "student1", "text", world.tvec)
    b = build_pseudo(store, "student1", PseudoOptions("esc", min_confidence=0.5))
    pl, _ = write_set(store, "pl", b.rows, b.strategy, b.params, b.inputs, b.model)
    tree = show_set(store, pl.ref)
    assert tree.strategy == "pseudo" and tree.model_id == "student1"
    student = tree.parents[-1]
    assert student.model_id == "student1" and student.trained_on == "du@1"
    round0 = student.parents[0]
    assert round0.ref == "du@1" and round0.strategy == "du" and round0.params["threshold"] == 0.5
    teacher = round0.parents[-1]
    assert teacher.model_id == "teach" and teacher.trained_on is None


def test_export_round_trips(store, world, tmp_path):
    _du(store, 0.5)
    rows, resolved = read_set(store.uri, "du")
    pq_path = tmp_path / "out" / "du.parquet"
    export_set(store, "du", str(pq_path))
    back = pq.read_table(pq_path)
    assert back.drop_columns([]).equals(rows.replace_schema_metadata(back.schema.metadata))
    assert back.schema.metadata[b"curator.content_hash"].decode() == resolved.content_hash
    export_set(store, "du@1", str(tmp_path / "du.jsonl"))
    lines = [json.loads(x) for x in (tmp_path / "du.jsonl").read_text().splitlines()]
    export_set(store, "du", str(tmp_path / "du.txt"), fmt="csv")
    with open(tmp_path / "du.txt", newline="") as fh:
        csv_rows = list(csv.DictReader(fh))
    want = rows.to_pylist()
    assert len(lines) == len(csv_rows) == len(want)
    for w, j, c in zip(want, lines, csv_rows):
        assert j["audio_id"] == c["audio_id"] == w["audio_id"] and j["text"] == c["text"] == w["text"]
        assert j["score"] == pytest.approx(w["score"]) and float(c["score"]) == pytest.approx(w["score"])
        assert np.allclose(j["teacher_audio"], w["teacher_audio"])
        assert np.allclose(json.loads(c["teacher_text"]), w["teacher_text"])
        assert j["recorded_at"] == c["recorded_at"] == w["recorded_at"].isoformat()
    with pytest.raises(ParameterError, match="cannot tell the format"):
        export_set(store, "du", str(tmp_path / "du.xlsx"))


def test_cli_sets_commands(cli, store, world, tmp_path):
    _du(store, 0.5)
    _du(store, 0.6)
    r = cli.curator("sets", "list")
    assert r.code == 0 and "du" in r.output and "strategy" in r.output, r.output
    r = cli.curator("sets", "diff", "du@1", "du@2", "--limit", "2")
    assert r.code == 0 and "du@1 -> du@2: +" in r.output and "removed" in r.output, r.output
    r = cli.curator("sets", "tag", "du@1", "good")
    assert r.code == 0 and "tagged du@1 as du@good" in r.output
    r = cli.curator("sets", "show", "du@good")
    assert r.code == 0 and "set du@1: strategy=du" in r.output and "tags=good" in r.output, r.output
    assert "model teach (clap-hf), external teacher" in r.output and "inputs: models@" in r.output
    r = cli.curator("sets", "export", "du@2", str(tmp_path / "x.jsonl"))
    assert r.code == 0 and "as jsonl" in r.output
    before = versions(store, "set_du")
    r = cli.curator("sets", "show", "ghost@3")
    assert r.code == 2 and r.output.strip().startswith("error: set 'ghost' does not exist")
    r = cli.curator("sets", "tag", "du@2", "42")
    assert r.code == 2 and "error:" in r.output
    assert versions(store, "set_du") == before


def test_set_hashes_stay_what_catalogs_recorded():
    """A catalog's content hash must verify in every later release: this value was recorded with the
    whole-column hash that catalogs were written with, before hashing went chunk by chunk. The
    9,000 rows span two chunks; row order does not matter."""
    from schemas.sets import content_hash

    i = np.arange(9000)
    values = ((np.arange(9000 * 4) % 97) / 97).astype(np.float32)
    rows = pa.table({"audio_id": [f"a{k % 4500:05d}" for k in i], "text_id": [f"t{k % 7}" for k in i],
                     "score": (i % 13) / 13, "teacher_audio": pa.FixedSizeListArray.from_arrays(pa.array(values), 4)})
    recorded = "cea8521f8321d228d01b2bb6178580e439a2f39c2032a4809535307bf8b506b2"
    assert content_hash(rows) == recorded
    assert content_hash(rows.take(pa.array(i[::-1]))) == recorded
