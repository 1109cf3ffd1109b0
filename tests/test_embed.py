"""`curator embed` / `import-embeddings` end to end: real audio files, a real tiny ClapModel, real
LanceDB tables, real subprocesses killed with SIGKILL and run side by side as shards."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time

import lancedb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from tiny_models import PROJECTION_DIM, make_tiny_clap, minilm_path

from curator.embed.pending import parse_shard, shard_mask
from curator.models.registry import add_model, get_model
from curator.models.teachers import load_teacher
from schemas import reading
from schemas.errors import MixedModelsError, ParameterError
from trainer.data.audio import fit_window, load_audio


@pytest.fixture(scope="module")
def tiny_clap(tmp_path_factory):
    return make_tiny_clap(tmp_path_factory.mktemp("embed") / "tiny_clap", seed=0)


def _clips(tone, folder, n, long_every=0):
    """n real files of mixed format, rate, channels and length (some longer than the 1 s window)."""
    paths = []
    for i in range(n):
        suffix = (".wav", ".flac", ".ogg")[i % 3]
        seconds = 2.6 if long_every and i % long_every == 0 else 0.3 + 0.05 * (i % 7)
        paths.append(tone(folder / f"c{i:03d}{suffix}", seconds=seconds, sr=(16000, 22050, 48000)[i % 3],
                          freq=150.0 + 37 * i, channels=1 + i % 2, seed=i))
    return paths


def _setup(cli, store, tiny_clap, tone, tmp_path, n, long_every=0):
    paths = _clips(tone, tmp_path / "clips", n, long_every)
    assert cli.curator("ingest", "audio", tmp_path / "clips", "--source", "t").code == 0
    assert cli.curator("models", "add", "tiny", "--kind", "clap-hf", tiny_clap).code == 0
    return paths


def _emb(store_uri, modality="audio"):
    name = f"emb_tiny_{modality}"
    # only committed tables: while another process creates the table its folder exists without a version
    return reading.read_table(store_uri, name) if name in reading.table_names(store_uri) else None


def _curator_proc(store_uri, *args, env=None):
    code = "import sys; from curator.cli import main; main(sys.argv[1:])"
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE", **(env or {})}
    return subprocess.Popen([sys.executable, "-c", code, "--store", store_uri, *args], env=full_env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_embed_audio_and_texts(cli, store, store_uri, tiny_clap, tone, tmp_path):
    paths = _setup(cli, store, tiny_clap, tone, tmp_path, 7, long_every=3)
    assert cli.curator("ingest", "labels", "--label-set", "demo", "--label", "siren", "--label", "dog bark").code == 0
    first = cli.curator("embed", "--model", "tiny", "--audio", "--where", "uri like '%.flac'")
    assert first.code == 0 and "embedded 2 clips" in first.output, first.output
    result = cli.curator("embed", "--model", "tiny", "--batch-size", "3")
    assert result.code == 0, result.output
    assert "embedded 5 clips" in result.output and "2 already done" in result.output
    assert "embedded 2 texts" in result.output
    # Two runs, each buffered into one append (batches of 3 would otherwise be 2 more commits).
    versions = [v["version"] for v in lancedb.connect(store_uri).open_table("emb_tiny_audio").list_versions()]
    assert len(versions) <= 3, versions  # at most: empty create + one append per run
    audio = _emb(store_uri)
    vecs = np.asarray(audio.column("vector").to_pylist(), np.float32)
    assert vecs.shape == (7, PROJECTION_DIM) and audio.schema.field("vector").type.list_size == PROJECTION_DIM
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-6)
    assert audio.schema.metadata[b"model_id"] == b"tiny"
    # a freshly loaded model gives the same vectors; long clips are the mean of their windows
    teacher = load_teacher(get_model(store, "tiny"), "cpu")
    uris = dict(zip(store.read("audio").column("audio_id").to_pylist(), store.read("audio").column("uri").to_pylist()))
    for audio_id, vec in zip(audio.column("audio_id").to_pylist(), vecs):
        windows = fit_window(load_audio(uris[audio_id], 16000), 16000, "average")
        again = teacher.embed_audio(windows).mean(axis=0)
        np.testing.assert_allclose(vec, again / np.linalg.norm(again), atol=1e-6)
    assert max(len(fit_window(load_audio(p, 16000), 16000, "average")) for p in paths) == 3
    texts = _emb(store_uri, "text")
    prompts = dict(zip(store.read("texts").column("text_id").to_pylist(), store.read("texts").column("text").to_pylist()))
    tvecs = np.asarray(texts.column("vector").to_pylist(), np.float32)
    np.testing.assert_allclose(tvecs, teacher.embed_texts([prompts[i] for i in texts.column("text_id").to_pylist()]),
                               atol=1e-6)
    # nothing left to do: a rerun writes nothing
    version = store.version("emb_tiny_audio")
    again = cli.curator("embed", "--model", "tiny", "--audio")
    assert again.code == 0 and "nothing to embed" in again.output and store.version("emb_tiny_audio") == version


def test_decode_failure_is_recorded_and_the_rest_embedded(cli, store, store_uri, tiny_clap, tone, tmp_path):
    paths = _setup(cli, store, tiny_clap, tone, tmp_path, 5)
    with open(paths[2], "wb") as fh:  # corrupted after ingest, as a flaky disk would
        fh.write(b"this is not audio" * 100)
    result = cli.curator("embed", "--model", "tiny", "--audio", "--batch-size", "2")
    assert result.code == 1
    # the file changed after ingest: it is refused before decoding (its bytes are not the clip's)
    assert "embedded 4 clips" in result.output and "1 failed" in result.output
    assert "changed since it was ingested" in result.output
    assert _emb(store_uri).num_rows == 4
    errors = store.read("errors").to_pylist()
    embed_errors = [e for e in errors if e["stage"] == "embed"]
    assert len(embed_errors) == 1
    assert embed_errors[0]["uri"].endswith(os.path.basename(paths[2]))
    assert "changed since it was ingested" in embed_errors[0]["message"]
    assert embed_errors[0]["item_id"] not in set(_emb(store_uri).column("audio_id").to_pylist())


def _shard_rows(store_uri, all_ids, shard):
    table = _emb(store_uri)
    ids = [] if table is None else table.column("audio_id").to_pylist()
    mine = set(np.asarray(all_ids)[shard_mask(all_ids, shard)])
    return [i for i in ids if i in mine]


def test_two_shards_at_once_and_kill_9_then_resume(cli, store, store_uri, tiny_clap, tone, tmp_path):
    """Two shard processes write one table at the same time; one is SIGKILLed at a random point
    mid-run. The other finishes its shard; rerunning the killed shard completes it; every clip ends
    up embedded exactly once."""
    n = 36
    _setup(cli, store, tiny_clap, tone, tmp_path, n)
    all_ids = store.read("audio").column("audio_id").to_pylist()
    victim = _curator_proc(store_uri, "embed", "--model", "tiny", "--audio", "--batch-size", "1", "--workers", "1",
                           "--shard", "0/2", "--flush-rows", "1")  # commit every clip, so a kill lands mid-shard
    other = _curator_proc(store_uri, "embed", "--model", "tiny", "--audio", "--batch-size", "2",
                          env={"RANK": "1", "WORLD_SIZE": "2"})  # torchrun-style default for --shard
    deadline = time.time() + 240
    while time.time() < deadline and victim.poll() is None and len(_shard_rows(store_uri, all_ids, (0, 2))) < 2:
        time.sleep(0.05)
    # Each clip is one commit of a few tens of ms here: a short random delay lands the kill mid-shard
    # rather than after the victim's last write.
    time.sleep(random.uniform(0.0, 0.05))
    was_running = victim.poll() is None
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    out, err = other.communicate(timeout=300)
    assert was_running, "shard 0 finished before it could be killed; the test needs a slower run"
    assert other.returncode == 0, err
    n0, n1 = int(shard_mask(all_ids, (0, 2)).sum()), int(shard_mask(all_ids, (1, 2)).sum())
    assert "shard 1/2" in out and f"embedded {n1} clips" in out and 0 < n0 < n
    shard1 = _shard_rows(store_uri, all_ids, (1, 2))
    assert len(shard1) == len(set(shard1)) == n1
    done = len(_shard_rows(store_uri, all_ids, (0, 2)))
    assert 0 < done < n0
    result = cli.curator("embed", "--model", "tiny", "--audio", "--shard", "0/2")
    assert result.code == 0, result.output
    assert f"{done} already done" in result.output and f"embedded {n0 - done} clips" in result.output
    ids = _emb(store_uri).column("audio_id").to_pylist()
    assert len(ids) == n and set(ids) == set(all_ids)


def test_shards_partition_ids_deterministically(monkeypatch):
    ids = [f"src:{i:016x}" for i in range(1000)]
    masks = [shard_mask(ids, (i, 4)) for i in range(4)]
    assert (np.sum(masks, axis=0) == 1).all() and all(150 < m.sum() < 350 for m in masks)
    np.testing.assert_array_equal(masks[2], shard_mask(ids, (2, 4)))
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "8")
    assert parse_shard(None) == (3, 8) and parse_shard("1/2") == (1, 2)
    for bad in ("2/2", "x", "1/0"):
        with pytest.raises(ParameterError, match="--shard"):
            parse_shard(bad)


def test_sentence_model_is_text_only(cli, store, tiny_clap, tone, tmp_path):
    _setup(cli, store, tiny_clap, tone, tmp_path, 2)
    assert cli.curator("models", "add", "minilm", "--kind", "sentence", minilm_path()).code == 0
    result = cli.curator("embed", "--model", "minilm", "--audio")
    assert result.code == 2 and "text-only" in result.output and len(result.output.strip().splitlines()) == 1


def test_import_embeddings_checks_ids_and_dimension(cli, store, store_uri, tiny_clap, tone, tmp_path):
    _setup(cli, store, tiny_clap, tone, tmp_path, 4)
    ids = store.read("audio").column("audio_id").to_pylist()
    rng = np.random.default_rng(0)
    vecs = rng.standard_normal((4, PROJECTION_DIM)).astype(np.float32) * 3
    pq.write_table(pa.table({"audio_id": ids[:3], "vector": list(vecs[:3])}), tmp_path / "v.parquet")
    result = cli.curator("import-embeddings", "--model", "tiny", "--modality", "audio", tmp_path / "v.parquet")
    assert result.code == 0 and "imported 3" in result.output, result.output
    table = _emb(store_uri)
    stored = np.asarray(table.column("vector").to_pylist(), np.float32)
    np.testing.assert_allclose(stored, vecs[:3] / np.linalg.norm(vecs[:3], axis=1, keepdims=True), atol=1e-6)
    # .npy + ids: the already imported rows are skipped
    np.save(tmp_path / "v.npy", vecs)
    (tmp_path / "ids.txt").write_text("\n".join(ids))
    result = cli.curator("import-embeddings", "--model", "tiny", "--modality", "audio", "--ids", tmp_path / "ids.txt",
                         tmp_path / "v.npy")
    assert result.code == 0 and "imported 1" in result.output and "3 already present" in result.output
    # another model's (64-d) vectors are refused; so are unknown ids
    np.save(tmp_path / "wide.npy", rng.standard_normal((4, 64)).astype(np.float32))
    result = cli.curator("import-embeddings", "--model", "tiny", "--modality", "audio", "--ids", tmp_path / "ids.txt",
                         tmp_path / "wide.npy")
    assert result.code == 2 and "refusing to mix models" in result.output and "64-d" in result.output
    pq.write_table(pa.table({"id": ["t:nope"], "vector": [vecs[0]]}), tmp_path / "u.parquet")
    result = cli.curator("import-embeddings", "--model", "tiny", "--modality", "audio", tmp_path / "u.parquet")
    assert result.code == 2 and "not in table audio" in result.output and "t:nope" in result.output
    assert _emb(store_uri).num_rows == 4


def test_mixing_two_models_vectors_is_refused(cli, store, tiny_clap, tone, tmp_path):
    from curator.store.vectors import check_same_model, read_vectors

    _setup(cli, store, tiny_clap, tone, tmp_path, 2)
    add_model(store, "minilm", "sentence", minilm_path())
    assert cli.curator("ingest", "labels", "--label-set", "demo", "--label", "siren").code == 0
    assert cli.curator("embed", "--model", "tiny", "--audio").code == 0
    assert cli.curator("embed", "--model", "minilm", "--texts").code == 0
    with pytest.raises(MixedModelsError, match="refusing to mix"):
        check_same_model(read_vectors(store, "minilm", "text"), read_vectors(store, "tiny", "audio"))
