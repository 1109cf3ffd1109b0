"""Foundation: store, ingest, query — through the real CLI on a real LanceDB folder."""

from __future__ import annotations

import csv
import json

import pyarrow as pa
import pytest
from conftest import write_tone

from curator.store.sql import query
from curator.store.store import Store
from schemas.errors import CuratorError, RefError, SchemaError
from schemas.refs import parse_ref
from schemas.tables import AUDIO
from schemas.validate import check_threshold, conform


def _count(cli, sql):
    result = cli.curator("query", sql, "--format", "json")
    assert result.code == 0, result.output
    return list(json.loads(result.output.strip().splitlines()[-1])[0].values())[0]


def test_ingesting_1000_clips_twice_leaves_1000_rows(tmp_path, cli):
    folder = tmp_path / "clips"
    for i in range(1000):
        write_tone(folder / f"d{i // 100}" / f"clip{i:04d}.wav", seconds=0.02, sr=8000, freq=200 + i)
    first = cli.curator("ingest", "audio", folder, "--source", "gen")
    assert first.code == 0, first.output
    assert "1000 added" in first.output
    second = cli.curator("ingest", "audio", folder, "--source", "gen")
    assert second.code == 0 and "0 added, 1000 already in store" in second.output
    assert _count(cli, "select count(*) from audio") == 1000
    assert _count(cli, "select count(distinct audio_id) from audio") == 1000
    # A re-ingest that adds nothing writes no new version (audio@1 is the empty table made with the store).
    assert Store.open(cli.store_uri).version("audio") == 2


def test_bad_files_get_one_line_each_and_the_rest_ingests(tmp_path, cli):
    folder = tmp_path / "mixed"
    for i in range(3):
        write_tone(folder / f"good{i}.flac", seconds=0.1)
    (folder / "empty.wav").write_bytes(b"")
    (folder / "notes.wav").write_text("this is a text file, not audio")
    good = (folder / "good0.flac").read_bytes()
    (folder / "corrupt.flac").write_bytes(good[:40] + b"\x00" * 10)  # header destroyed
    result = cli.curator("ingest", "audio", folder, "--source", "mixed")
    assert result.code == 1
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 3
    assert any("empty.wav" in line and "empty file" in line for line in lines)
    assert any("notes.wav" in line and "not a readable audio file" in line for line in lines)
    assert any("corrupt.flac" in line for line in lines)
    assert _count(cli, "select count(*) from audio") == 3
    assert _count(cli, "select count(*) from errors where stage = 'ingest'") == 3
    missing = cli.curator("ingest", "audio", tmp_path / "nope.csv")
    assert missing.code == 2
    assert "nope.csv: manifest not found" in missing.output


def test_header_fields_hash_and_stable_ids(tmp_path, store):
    from curator.ingest.audio import ingest_audio
    from curator.ingest.sources import scan_folder

    write_tone(tmp_path / "a" / "x" / "one.wav", seconds=1.5, sr=22050, channels=2)
    ingest_audio(store, scan_folder(tmp_path / "a", "src", "train", labels_from_dirs=True))
    row = store.read("audio").to_pylist()[0]
    assert row["duration_s"] == pytest.approx(1.5)
    assert row["sample_rate"] == 22050 and row["channels"] == 2
    assert row["labels"] == ["x"] and row["split"] == "train"
    assert len(row["sha1"]) == 40
    # The id depends on source + relative path, not on where the folder is mounted.
    (tmp_path / "b").mkdir()
    (tmp_path / "a").rename(tmp_path / "b" / "a")
    specs = scan_folder(tmp_path / "b" / "a", "src")
    from schemas.ids import audio_id

    assert audio_id("src", specs[0].relative) == row["audio_id"]


def test_query_at_reads_an_old_version(tmp_path, cli):
    write_tone(tmp_path / "v1" / "a.wav")
    write_tone(tmp_path / "v2" / "b.wav")
    write_tone(tmp_path / "v2" / "c.wav")
    assert cli.curator("ingest", "audio", tmp_path / "v1", "--source", "s").code == 0
    assert cli.curator("ingest", "audio", tmp_path / "v2", "--source", "s").code == 0
    # audio@1 is the empty table made with the store (docs/DECISIONS.md); the first ingest is audio@2.
    empty = cli.curator("query", "--at", "audio@1", "select count(*) as n from audio", "--format", "csv")
    assert empty.output.strip().splitlines()[-1] == "0"
    result = cli.curator("query", "--at", "audio@2", "select count(*) as n from audio", "--format", "csv")
    assert result.output.strip().splitlines()[-1] == "1"
    assert _count(cli, "select count(*) from audio") == 3
    assert cli.curator("tag", "audio", "2", "first").code == 0
    tagged = cli.curator("query", "--at", "audio@first", "select count(*) as n from audio", "--format", "csv")
    assert tagged.output.strip().splitlines()[-1] == "1"
    bad = cli.curator("query", "--at", "audio@7", "select 1")
    assert bad.code == 2 and "no version 7" in bad.output
    versions = cli.curator("versions", "audio")
    assert "first" in versions.output
    tables = cli.curator("tables")
    assert "audio" in tables.output and "| 3 " in tables.output


def test_query_formats_and_bad_sql(tmp_path, cli):
    write_tone(tmp_path / "c" / "a.wav")
    cli.curator("ingest", "audio", tmp_path / "c", "--source", "s")
    out = tmp_path / "r.parquet"
    assert cli.curator("query", "select audio_id from audio", "--format", "parquet", "--out", out).code == 0
    import pyarrow.parquet as pq

    assert pq.read_table(out).num_rows == 1
    bad = cli.curator("query", "select nope from audio")
    assert bad.code == 2 and "nope" in bad.output and "Traceback" not in bad.output


def _write_csv(path, header, rows):
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)


def test_esc50_us8k_and_scenes_manifests_ingest_without_editing(tmp_path, cli):
    esc = tmp_path / "ESC-50"
    for name in ["1-100-A-0.wav", "1-200-A-1.wav"]:
        write_tone(esc / "audio" / name)
    (esc / "meta").mkdir()
    _write_csv(esc / "meta" / "esc50.csv", ["filename", "fold", "target", "category", "esc10", "src_file", "take"],
               [["1-100-A-0.wav", 1, 0, "dog", "True", 100, "A"], ["1-200-A-1.wav", 2, 1, "rooster", "False", 200, "A"]])
    assert cli.curator("ingest", "audio", esc / "meta" / "esc50.csv", "--source", "esc50").code == 0
    us = tmp_path / "UrbanSound8K"
    write_tone(us / "audio" / "fold3" / "100-1-0-0.wav")
    (us / "metadata").mkdir()
    _write_csv(us / "metadata" / "UrbanSound8K.csv",
               ["slice_file_name", "fsID", "start", "end", "salience", "fold", "classID", "class"],
               [["100-1-0-0.wav", 100, 0, 1, 1, 3, 1, "car_horn"]])
    assert cli.curator("ingest", "audio", us / "metadata" / "UrbanSound8K.csv", "--source", "us8k").code == 0
    sc = tmp_path / "scenes"
    write_tone(sc / "a.wav")
    write_tone(sc / "b.wav")
    _write_csv(sc / "scenes.csv", ["filename", "scene_label", "city", "timestamp", "labelled"],
               [["a.wav", "park", "helsinki", "2020-05-01T08:30:00", 1], ["b.wav", "metro", "", "", 0]])
    assert cli.curator("ingest", "audio", sc / "scenes.csv", "--source", "scenes").code == 0
    rows = {r["source"] + ":" + r["uri"].rsplit("/", 1)[-1]: r
            for r in query(Store.open(cli.store_uri), "select * from audio").to_pylist()}
    assert rows["esc50:1-200-A-1.wav"]["labels"] == ["rooster"] and rows["esc50:1-200-A-1.wav"]["fold"] == 2
    assert rows["us8k:100-1-0-0.wav"]["labels"] == ["car_horn"] and rows["us8k:100-1-0-0.wav"]["fold"] == 3
    a, b = rows["scenes:a.wav"], rows["scenes:b.wav"]
    assert a["city"] == "helsinki" and a["recorded_at"].hour == 8 and a["labels"] == ["park"]
    assert b["city"] is None and b["recorded_at"] is None and b["labels"] == []  # unlabelled keeps no label
    bad = tmp_path / "bad.csv"
    _write_csv(bad, ["filename"], [["x.wav"]])
    result = cli.curator("ingest", "audio", bad, "--label-column", "category")
    assert result.code == 2 and "column 'category' not found" in result.output


def test_find_clips_decides_folder_or_manifest_source_and_columns(tmp_path):
    """The source inference the CLI used to do itself: folder vs manifest, default source name,
    preset detection, column overrides on top of a preset, and a source with no clips refused."""
    from curator.ingest.sources import PRESETS, find_clips, manifest_columns

    write_tone(tmp_path / "wild" / "dogs" / "a.wav")
    source, specs = find_clips(tmp_path / "wild", labels_from_dirs=True)
    assert source == "wild" and [(s.relative, s.labels) for s in specs] == [("dogs/a.wav", ["dogs"])]
    esc = tmp_path / "ESC-50"
    write_tone(esc / "audio" / "1-100-A-0.wav")
    (esc / "meta").mkdir()
    _write_csv(esc / "meta" / "esc50.csv", ["filename", "fold", "target", "category", "note"],
               [["1-100-A-0.wav", 1, 0, "dog", "barking"]])
    source, specs = find_clips(esc / "meta" / "esc50.csv")  # preset detected from the header
    assert source == "esc50" and specs[0].labels == ["dog"] and specs[0].fold == 1
    assert specs[0].path == (esc / "audio" / "1-100-A-0.wav").resolve()
    assert manifest_columns("esc50") is None  # no override: the header decides
    columns = manifest_columns("esc50", label="note")
    assert columns.label == "note" and columns.path == PRESETS["esc50"][0].path and columns.fold == "fold"
    _, specs = find_clips(esc / "meta" / "esc50.csv", "esc", columns=columns)
    assert specs[0].labels == ["barking"] and specs[0].source == "esc"
    (tmp_path / "empty").mkdir()
    with pytest.raises(CuratorError, match="no audio files found"):
        find_clips(tmp_path / "empty")
    with pytest.raises(CuratorError, match="unknown preset 'nope'"):
        manifest_columns("nope", label="x")


def test_captions_link_to_clips_and_labels_become_prompts(tmp_path, cli):
    write_tone(tmp_path / "clotho" / "rain.wav")
    _write_csv(tmp_path / "captions.csv", ["file_name", "caption_1", "caption_2"],
               [["rain.wav", "rain falls on a roof", "heavy rain"], ["later.wav", "a door slams", ""]])
    cli.curator("ingest", "audio", tmp_path / "clotho", "--source", "clotho")
    result = cli.curator("ingest", "captions", tmp_path / "captions.csv", "--source", "clotho")
    assert result.code == 0 and "3 captions added" in result.output and "1 clips linked" in result.output
    again = cli.curator("ingest", "captions", tmp_path / "captions.csv", "--source", "clotho")
    assert "0 captions added" in again.output
    assert _count(cli, "select count(*) from texts t join audio a using (audio_id) where t.kind='caption'") == 2
    # The unlinked caption links once its clip arrives.
    write_tone(tmp_path / "clotho2" / "later.wav")
    cli.curator("ingest", "audio", tmp_path / "clotho2", "--source", "clotho")
    cli.curator("ingest", "captions", tmp_path / "captions.csv", "--source", "clotho")
    assert _count(cli, "select count(*) from texts where audio_id is null") == 0
    assert _count(cli, "select count(*) from texts") == 3
    (tmp_path / "labels.txt").write_text("dog\nsiren\n\n# comment\n")
    assert cli.curator("ingest", "labels", "--label-set", "demo", "--labels", tmp_path / "labels.txt",
                       "--label", "rain").code == 0
    prompts = query(Store.open(cli.store_uri), "select label, text from texts where kind='prompt' order by label")
    assert prompts.to_pylist() == [{"label": "dog", "text": "this is a sound of dog"},
                                   {"label": "rain", "text": "this is a sound of rain"},
                                   {"label": "siren", "text": "this is a sound of siren"}]
    bad = cli.curator("ingest", "labels", "--label-set", "x", "--label", "a", "--template", "no placeholder")
    assert bad.code == 2 and "{label}" in bad.output


def test_schema_validation_and_refs_name_the_problem():
    with pytest.raises(SchemaError, match="required column 'uri' is missing"):
        conform(pa.table({"audio_id": ["a"], "source": ["s"]}), AUDIO, "audio")
    with pytest.raises(SchemaError, match="unknown column"):
        conform(pa.table({"audio_id": ["a"], "uri": ["u"], "source": ["s"], "colour": ["red"]}), AUDIO, "audio")
    with pytest.raises(SchemaError, match="'sample_rate' has type"):
        conform(pa.table({"audio_id": ["a"], "uri": ["u"], "source": ["s"], "sample_rate": ["fast"]}), AUDIO, "audio")
    assert parse_ref("du") .is_latest
    assert parse_ref("du@7").version == 7
    assert parse_ref("du@best-v1").tag == "best-v1"
    for bad in ["", "7du", "du@", "du@0", "du@a b"]:
        with pytest.raises(RefError):
            parse_ref(bad)
    from schemas.errors import ParameterError

    with pytest.raises(ParameterError, match="outside"):
        check_threshold(1.5)


def test_compressed_formats_ingest_with_their_header_fields(tmp_path, store):
    from curator.ingest.audio import ingest_audio
    from curator.ingest.sources import scan_folder

    write_tone(tmp_path / "f" / "a.ogg", seconds=1.0, sr=48000)
    write_tone(tmp_path / "f" / "b.flac", seconds=2.0, sr=44100)
    write_tone(tmp_path / "f" / "c.mp3", seconds=1.0, sr=44100)
    report = ingest_audio(store, scan_folder(tmp_path / "f", "comp"))
    assert report.failed == [] and report.added == 3
    rows = {r["uri"].rsplit(".", 1)[-1]: r for r in store.read("audio").to_pylist()}
    assert rows["ogg"]["format"] == "OGG" and rows["ogg"]["sample_rate"] == 48000
    assert rows["flac"]["duration_s"] == pytest.approx(2.0)
    assert rows["mp3"]["format"] == "MP3" and rows["mp3"]["duration_s"] == pytest.approx(1.0, abs=0.1)


def test_upsert_inserts_each_new_key_once_keeping_the_first_row(tmp_path):
    """One key column and several: duplicates inside a write keep their first row, keys already in
    the table are skipped, and the count returned is what was inserted."""
    from schemas.tables import CANDIDATES

    store = Store.open(str(tmp_path / "store"))
    cands = lambda rows: pa.Table.from_pylist(  # noqa: E731
        [{"run_id": r, "text_id": t, "audio_id": a, "score": s, "rank": 1} for r, t, a, s in rows], schema=CANDIDATES)
    assert store.upsert("candidates", cands([("r", "t1", "a1", 0.1), ("r", "t1", "a2", 0.2)])) == 2
    second = cands([("r", "t1", "a2", 0.9), ("r", "t2", "a1", 0.3), ("r", "t2", "a1", 0.4), ("s", "t1", "a1", 0.5)])
    assert store.upsert("candidates", second) == 2
    got = {(r["run_id"], r["text_id"], r["audio_id"]): round(r["score"], 3) for r in store.read("candidates").to_pylist()}
    assert got == {("r", "t1", "a1"): 0.1, ("r", "t1", "a2"): 0.2, ("r", "t2", "a1"): 0.3, ("s", "t1", "a1"): 0.5}

    texts = lambda rows: pa.Table.from_pylist(  # noqa: E731
        [{"text_id": i, "text": t, "kind": "caption", "source": "s"} for i, t in rows])
    assert store.upsert("texts", texts([("c3", "caption 3"), ("c1", "caption 1"), ("c3", "later"), ("c2", "caption 2")])) == 3
    assert store.upsert("texts", texts([("c1", "again"), ("c4", "new")])) == 1
    texts = {r["text_id"]: r["text"] for r in store.read("texts").to_pylist()}
    assert texts == {"c1": "caption 1", "c2": "caption 2", "c3": "caption 3", "c4": "new"}
