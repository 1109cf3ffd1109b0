"""A store survives kills, full disks and concurrent writers (docs/RELIABILITY.md).

Every test runs the real CLI in a subprocess against a real store folder; crash points
(`schemas.faults`) end the process with `os._exit` exactly where named, as a kill -9 would.
"""

from __future__ import annotations

import json
import re

import pytest
from conftest import write_tone
from curation_data import build_world
from reliability_helpers import CURATOR, curator, env_with, ids, start

from curator.store.marker import FORMAT_VERSION, MARKER
from curator.store.store import Store
from schemas import reading
from schemas.faults import EXIT_CODE
from schemas.sets import read_set


def _clips(folder, n: int, first: int = 0):
    for i in range(first, first + n):
        write_tone(folder / f"c{i:04d}.wav", seconds=0.01, sr=8000, freq=100 + i)
    return folder


def _exact(store_uri: str, n: int) -> None:
    got = ids(store_uri, "audio", "audio_id")
    assert len(got) == len(set(got)) == n, (len(got), len(set(got)), n)


# -- the marker, the fixed tables ------------------------------------------------------------------
def test_a_new_store_has_its_marker_and_the_readme_queries_work(tmp_path):
    uri = str(tmp_path / "store")
    assert curator(uri, "ingest", "audio", _clips(tmp_path / "c", 2), "--source", "s").returncode == 0
    for sql in ("select * from errors", "select * from runs", "select * from sets"):  # none written yet
        r = curator(uri, "query", sql)
        assert r.returncode == 0, r.stderr
    marker = json.loads((tmp_path / "store" / MARKER).read_text())
    assert marker["format"] == FORMAT_VERSION
    assert {"audio", "texts", "models", "errors", "runs", "sets", "candidates"} <= set(reading.table_names(uri))


def test_a_folder_that_is_not_a_store_is_refused(tmp_path):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("not a store")
    r = curator(str(tmp_path / "notes"), "ingest", "audio", _clips(tmp_path / "c", 2), "--source", "s")
    assert r.returncode == 2 and "not a curator store (no curator-store.json)" in r.stderr
    assert sorted(p.name for p in (tmp_path / "notes").iterdir()) == ["todo.txt"]  # nothing written
    uri = str(tmp_path / "future")
    Store.open(uri)
    (tmp_path / "future" / MARKER).write_text(json.dumps({"format": FORMAT_VERSION + 1}))
    r = curator(uri, "tables")
    assert r.returncode == 2 and f"format version {FORMAT_VERSION + 1} is newer" in r.stderr


def test_a_store_made_before_markers_is_adopted_by_doctor_repair(tmp_path):
    uri = str(tmp_path / "old")
    Store.open(uri)
    (tmp_path / "old" / MARKER).unlink()
    r = curator(uri, "tables")
    assert r.returncode == 2 and "doctor --repair` adds the marker" in r.stderr
    r = curator(uri, "doctor", "--repair")
    assert r.returncode == 0 and "wrote curator-store.json" in r.stdout, r.stdout + r.stderr
    assert curator(uri, "tables").returncode == 0


# -- half-created tables ---------------------------------------------------------------------------
@pytest.mark.parametrize("table", ["audio", "set_du"])
def test_a_half_created_table_is_removed_on_open_and_the_rerun_completes(tmp_path, table):
    """The state a kill or a full disk during a table's first write leaves: a folder holding only a
    `.tmp` file. Every command still opens the store, says so in one line, and the rerun works."""
    uri = str(tmp_path / "store")
    store = Store.open(uri)
    if table == "audio":
        store.remove_half_made()
        import shutil

        shutil.rmtree(tmp_path / "store" / "audio.lance")
    else:
        build_world(store)
    folder = tmp_path / "store" / f"{table}.lance"
    (folder / "_versions").mkdir(parents=True)
    (folder / "_versions" / ".tmp-1234").write_bytes(b"\0" * 64)
    if table == "audio":
        r = curator(uri, "ingest", "audio", _clips(tmp_path / "c", 5), "--source", "s")
        assert r.returncode == 0, r.stderr
        _exact(uri, 5)
    else:
        r = curator(uri, "build", "du", "--model", "teach", "--name", "du", "--threshold", "0.5",
                    "--pool-where", "source = 'wild'")
        assert r.returncode == 0, r.stderr
        assert read_set(uri, "du@1")[1].version == 1
    assert f"note: removed {table}.lance: a half-created table" in r.stderr
    assert r.stderr.count("\n") <= 2  # one line, no traceback
    assert curator(uri, "doctor").returncode == 0


# -- crash points ----------------------------------------------------------------------------------
@pytest.mark.parametrize("point", ["creating table", "table created", "writing rows", "rows written"])
def test_ingest_killed_at_each_crash_point_reruns_to_exact_counts(tmp_path, point):
    uri = str(tmp_path / "store")
    clips = _clips(tmp_path / "c", 30)
    (clips / "broken.wav").write_bytes(b"RIFF not audio")
    r = curator(uri, "ingest", "audio", clips, "--source", "s", crash=point)
    assert r.returncode == EXIT_CODE, (point, r.stdout, r.stderr)
    again = curator(uri, "ingest", "audio", clips, "--source", "s")
    assert again.returncode == 1 and "1 file(s) could not be read" in again.stderr, again.stderr  # broken.wav
    assert "Traceback" not in again.stderr
    _exact(uri, 30)
    assert len(ids(uri, "errors", "item_id")) >= 1
    assert curator(uri, "doctor").returncode == 0


def _world_store(tmp_path) -> str:
    uri = str(tmp_path / "store")
    build_world(Store.open(uri))
    return uri


BUILD = ("build", "du", "--model", "teach", "--name", "du", "--threshold", "0.5", "--pool-where", "source = 'wild'")


@pytest.mark.parametrize("point", ["creating table", "table created", "version committed", "catalog written"])
def test_build_killed_at_each_crash_point_keeps_its_number_and_hash(tmp_path, point):
    import shutil

    uri = _world_store(tmp_path)
    shutil.copytree(uri, tmp_path / "ref")  # the same store, built without a crash
    reference = curator(str(tmp_path / "ref"), *BUILD)
    assert reference.returncode == 0, reference.stderr
    _, ref = read_set(str(tmp_path / "ref"), "du")
    r = curator(uri, *BUILD, crash=point)
    assert r.returncode == EXIT_CODE, (point, r.stderr)
    again = curator(uri, *BUILD)
    assert again.returncode == 0, again.stderr
    rows, got = read_set(uri, "du")
    assert (got.version, got.content_hash, got.rows) == (1, ref.content_hash, ref.rows)
    assert read_set(uri, "du@1")[1].content_hash == ref.content_hash
    shown = curator(uri, "sets", "show", "du@1")
    assert shown.returncode == 0 and "set du@1" in shown.stdout
    assert len(reading.read_table(uri, "sets").to_pylist()) == 1  # one catalog row, no du@2
    assert curator(uri, "doctor").returncode == 0


def test_a_killed_match_is_simply_rerun_and_a_complete_one_says_so(tmp_path):
    uri = _world_store(tmp_path)
    args = ("match", "--model", "teach", "--threshold", "0.5", "--run", "m1")
    r = curator(uri, *args, crash="candidates written")
    assert r.returncode == EXIT_CODE
    assert curator(uri, "doctor").returncode == 1  # pairs of a run that never finished
    again = curator(uri, *args)
    assert again.returncode == 0, again.stderr
    pairs = ids(uri, "candidates", "run_id")
    runs = reading.read_table(uri, "runs").to_pylist()
    assert len(runs) == 1 and runs[0]["pairs"] == len(pairs) > 0
    third = curator(uri, *args)
    assert third.returncode == 0 and "already complete with these parameters and inputs" in third.stderr
    assert len(ids(uri, "candidates", "run_id")) == len(pairs)


# -- full disk -------------------------------------------------------------------------------------
@pytest.mark.parametrize("point", ["creating table", "writing rows"])
def test_a_full_disk_ends_with_one_line_and_the_rerun_completes(tmp_path, point):
    uri = str(tmp_path / "store")
    clips = _clips(tmp_path / "c", 12)
    Store.open(uri)
    if point == "creating table":  # the disk fills while `audio` is first created
        import shutil

        shutil.rmtree(tmp_path / "store" / "audio.lance")
    r = curator(uri, "ingest", "audio", clips, "--source", "s", crash=f"{point}:ENOSPC")
    assert r.returncode == 28, (r.stdout, r.stderr)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: disk full while writing"), r.stderr
    again = curator(uri, "ingest", "audio", clips, "--source", "s")
    assert again.returncode == 0, again.stderr
    _exact(uri, 12)


def test_a_full_disk_during_a_build_rolls_back_and_the_rerun_completes(tmp_path):
    uri = _world_store(tmp_path)
    r = curator(uri, *BUILD, crash="writing rows:ENOSPC", skip=1)  # the set's rows commit; the catalog's fails
    assert r.returncode == 28 and r.stderr.count("\n") == 1, r.stderr
    assert "set 'du': catalog write failed, set table rolled back" in r.stderr
    again = curator(uri, *BUILD)
    assert again.returncode == 0, again.stderr
    assert read_set(uri, "du")[1].version == 1


# -- concurrent writers ----------------------------------------------------------------------------
def _added(outputs: list[str]) -> int:
    return sum(int(re.search(r"audio: (\d+) added", out).group(1)) for out in outputs)


def test_ten_overlapping_ingests_into_an_empty_store_and_an_existing_table(tmp_path):
    uri = str(tmp_path / "store")  # does not exist yet: ten processes create it at once
    clips = _clips(tmp_path / "c", 100)
    procs = [start(CURATOR, "--store", uri, "ingest", "audio", clips, "--source", "s", "--workers", "1",
                   env=env_with()) for _ in range(10)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [e for _, e in outs]
    _exact(uri, 100)
    assert _added([o for o, _ in outs]) == 100  # each clip reported added by exactly one process
    _clips(clips, 200, first=100)  # the table exists; 200 new clips, 100 known ones
    procs = [start(CURATOR, "--store", uri, "ingest", "audio", clips, "--source", "s", "--workers", "1",
                   env=env_with()) for _ in range(10)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [e for _, e in outs]
    _exact(uri, 300)
    assert _added([o for o, _ in outs]) == 200
    assert curator(uri, "doctor").returncode == 0


def test_doctor_finds_and_repairs_duplicate_keys(tmp_path):
    import lancedb
    import pyarrow as pa

    uri = str(tmp_path / "store")
    assert curator(uri, "ingest", "audio", _clips(tmp_path / "c", 4), "--source", "s").returncode == 0
    rows = reading.read_table(uri, "audio")
    lancedb.connect(uri).open_table("audio").add(pa.concat_tables([rows, rows.slice(0, 2)]))  # a writer without locks
    r = curator(uri, "doctor")
    assert r.returncode == 1 and "audio: 6 duplicate row(s) by audio_id" in r.stdout
    r = curator(uri, "doctor", "--repair")
    assert r.returncode == 0 and "audio: removed 6 duplicate row(s)" in r.stdout, r.stdout
    _exact(uri, 4)
