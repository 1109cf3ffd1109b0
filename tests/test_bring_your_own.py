"""Bring your own: an external model's vectors from a folder of shards, models by folder or name,
and outputs a script can parse (csv without a blank last line, json, --store after the command)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from curation_data import DIM, brute_match, build_world

from curator.models.registry import get_model
from schemas.errors import ModelError


@pytest.fixture
def world(store):
    return build_world(store)


def _shards(world, folder, n_shards=3):
    """The clip-retrieval / embedding-reader layout for the audio vectors (audio_emb/audio_emb_K.npy +
    metadata/metadata_K.parquet), parquet shards with id + vector for the captions."""
    ids = sorted(world.avec)
    (folder / "audio" / "audio_emb").mkdir(parents=True)
    (folder / "audio" / "metadata").mkdir()
    for k, part in enumerate(np.array_split(np.arange(len(ids)), n_shards)):
        # scaled: the import must L2-normalise them back to the teacher's unit vectors
        np.save(folder / "audio" / "audio_emb" / f"audio_emb_{k}.npy", world.A([ids[i] for i in part]) * 3.0)
        pq.write_table(pa.table({"audio_id": [ids[i] for i in part]}),
                       folder / "audio" / "metadata" / f"metadata_{k}.parquet")
    tids = sorted(world.tvec)
    (folder / "text").mkdir()
    for k, part in enumerate(np.array_split(np.arange(len(tids)), 2)):
        pq.write_table(pa.table({"id": [tids[i] for i in part], "vector": list(world.T([tids[i] for i in part]))}),
                       folder / "text" / f"part-{k}.parquet")


def test_external_model_from_three_npy_shards_matches_and_builds(cli, store, world, tmp_path):
    r = cli.curator("models", "add", "ext", "--kind", "external", "--dim", str(DIM), "--logit-scale", "20")
    assert r.code == 0 and "external" in r.output, r.output
    _shards(world, tmp_path / "vecs")
    r = cli.curator("import-embeddings", "--model", "ext", "--modality", "audio", tmp_path / "vecs" / "audio")
    assert r.code == 0 and f"imported {len(world.avec)} audio" in r.output and "0 of 3 shard(s) skipped" in r.output
    r = cli.curator("import-embeddings", "--model", "ext", "--modality", "text", tmp_path / "vecs" / "text")
    assert r.code == 0 and f"imported {len(world.tvec)} text" in r.output, r.output
    # a rerun reads no shard again and adds nothing
    r = cli.curator("import-embeddings", "--model", "ext", "--modality", "audio", tmp_path / "vecs" / "audio")
    assert r.code == 0 and "imported 0" in r.output and "3 of 3 shard(s) skipped" in r.output, r.output
    assert store.read("emb_ext_audio").num_rows == len(world.avec)
    assert store.read("imports").num_rows == 3 + 2
    stored = store.read("emb_ext_audio")
    got = dict(zip(stored.column("audio_id").to_pylist(), np.asarray(stored.column("vector").to_pylist())))
    np.testing.assert_allclose(np.stack([got[a] for a in sorted(got)]), world.A(sorted(got)), atol=1e-6)

    # match and build DU on the external vectors: the same pairs as brute force on the teacher's
    wild, caps = world.ids("wild"), world.captions()
    r = cli.curator("match", "--model", "ext", "--threshold", "0.5", "--run", "ext1", "--format", "json",
                    "--texts-where", "kind = 'caption'", "--audio-where", "source = 'wild'")
    assert r.code == 0, r.output
    assert json.loads(r.output)[0]["pairs"] == len(brute_match(world.T(caps), world.A(wild), 0.5))
    r = cli.curator("build", "du", "--model", "ext", "--name", "du_ext", "--threshold", "0.5",
                    "--pool-where", "source = 'wild'", "--allow-contaminated", "--format", "json")
    assert r.code == 0, r.output
    built = json.loads(r.output)
    assert built["set"] == "du_ext@1" and built["rows"] == len(brute_match(world.T(caps), world.A(wild), 0.5)) > 0
    shown = json.loads(cli.curator("sets", "show", "du_ext", "--format", "json").output)
    assert shown["ref"] == "du_ext@1" and shown["model_id"] == "ext"

    # embed is refused in one line that says why
    r = cli.curator("embed", "--model", "ext", "--audio")
    assert r.code == 2 and len(r.output.strip().splitlines()) == 1 and "external" in r.output
    assert "no weights here" in r.output
    r = cli.curator("models", "list", "--format", "json")
    row = next(m for m in json.loads(r.output) if m["model_id"] == "ext")
    assert row["kind"] == "external" and row["dim"] == DIM and row["logit_scale"] == 20.0 and row["path"] == ""


def test_external_registration_rules_and_shard_checks(cli, store, world, tmp_path):
    assert cli.curator("models", "add", "ext", "--kind", "external", "--dim", str(DIM)).code == 0
    assert cli.curator("models", "add", "ext", "--kind", "external", "--dim", str(DIM)).code == 0  # same: no-op
    r = cli.curator("models", "add", "ext", "--kind", "external", "--dim", "8")
    assert r.code == 2 and "already registered" in r.output
    r = cli.curator("models", "add", "ext2", "--kind", "external")
    assert r.code == 2 and "--dim" in r.output
    r = cli.curator("models", "add", "ext3", "--kind", "external", "--dim", "4", "--modalities", "video")
    assert r.code == 2 and "audio and/or text" in r.output
    # a shard with an unknown id is refused whole, and nothing of it is recorded as imported
    folder = tmp_path / "bad"
    folder.mkdir()
    ids = world.ids("wild")[:3]
    np.save(folder / "a.npy", world.A(ids))
    pq.write_table(pa.table({"audio_id": [*ids[:2], "wild:nope"]}), folder / "a.parquet")
    r = cli.curator("import-embeddings", "--model", "ext", "--modality", "audio", folder)
    assert r.code == 2 and "not in table audio" in r.output and "wild:nope" in r.output
    assert not store.has("imports") or store.read("imports").num_rows == 0
    assert not store.has("emb_ext_audio") or store.read("emb_ext_audio").num_rows == 0
    (folder / "a.parquet").unlink()
    r = cli.curator("import-embeddings", "--model", "ext", "--modality", "audio", folder)
    assert r.code == 2 and "no parquet of ids" in r.output


def test_a_registered_folder_is_taken_where_a_name_is(store, tmp_path):
    from curation_data import write_model

    folder = tmp_path / "m"
    folder.mkdir()
    write_model(store, "byfolder")
    store.upsert("models", store.read("models").set_column(2, "path", pa.array([str(folder)])), update=True)
    assert get_model(store, str(folder)).model_id == "byfolder"
    other = tmp_path / "other"
    other.mkdir()
    with pytest.raises(ModelError, match="not a registered model; register it first"):
        get_model(store, str(other))


def _curator(*args):
    code = "import sys; from curator.cli import main; main(sys.argv[1:])"
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True)


def test_csv_tail_json_and_store_after_the_command(store, store_uri, world):
    # the shell habit: the last line of csv is the last row, not a blank line
    tail = subprocess.run(f"{sys.executable} -c 'import sys; from curator.cli import main; main(sys.argv[1:])' "
                          f"query \"select 1 as n\" --format csv --store {store_uri} | tail -n 1",
                          shell=True, capture_output=True, text=True)
    assert tail.stdout == "1\n", (tail.stdout, tail.stderr)
    r = _curator("tables", "--store", store_uri, "--format", "json")
    assert r.returncode == 0, r.stderr
    assert {t["table"] for t in json.loads(r.stdout)} >= {"audio", "texts", "models"}
    r = _curator("versions", "audio", "--format", "csv", "--store", store_uri)
    assert r.returncode == 0 and r.stdout.splitlines()[0].startswith("version") and not r.stdout.endswith("\n\n")
    r = _curator("models", "list", "--store", store_uri, "--format", "json")
    assert json.loads(r.stdout)[0]["model_id"] == "teach"
    r = _curator("sets", "list", "--store", store_uri, "--format", "json")
    assert r.returncode == 0 and json.loads(r.stdout) == []
    r = _curator("guard", "--pool-where", "source = 'wild'", "--eval-where", "source = 'esc50'", "--format", "json",
                 "--store", store_uri)
    assert r.returncode == 0, r.stderr
    found = json.loads(r.stdout)
    assert found["found"] == len(found["rows"]) >= 1
    # exit codes are in --help; a bad store after the command is bad input (2)
    assert "Exit codes: 0 ok" in _curator("tables", "--help").stdout
    assert "Exit codes: 0 ok" in _curator("--help").stdout
    r = _curator("tables", "--store", str(world and store_uri) + "_missing")
    assert r.returncode == 2 and r.stderr.startswith("error:")
