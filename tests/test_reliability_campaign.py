"""Real kill -9s at random moments of ingest, embed, build and fit; each followed by the rerun of the
same command. Checked every time: the store opens, the rerun completes, no row is lost or duplicated,
the set keeps its version number and content hash, the fit ends with the uninterrupted weights.

Two kills per stage by default (a few minutes on the 2-core machine: marked slow, still run by default). `CURATOR_CAMPAIGN_KILLS=N` runs N per stage
and `CURATOR_CAMPAIGN_OUT=file.json` writes what happened (docs/RELIABILITY.md quotes such a run).
"""

from __future__ import annotations

import json
import os
import random
import signal
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import write_tone
from curation_data import build_world
from reliability_helpers import CURATOR, TRAINER, curator, env_with, ids, leftovers, run, start
from safetensors.numpy import load_file
from tiny_models import make_tiny_clap
from trainer_fixtures import TINY_STUDENT, make_clips, write_set

from curator.store.store import Store
from schemas import reading
from schemas.sets import read_set
from trainer.train.checkpoint import read_checkpoint

pytestmark = pytest.mark.slow
KILLS = int(os.environ.get("CURATOR_CAMPAIGN_KILLS", "2"))
N_CLIPS = 120


def _kill_at_random(program: str, args: list, seconds: float, rng: random.Random) -> dict:
    """Start the command, kill -9 it after a random delay in [0, seconds]; say whether it was still running."""
    proc = start(program, *args, env=env_with())
    delay = rng.uniform(0.0, seconds)
    deadline = time.time() + delay
    while time.time() < deadline and proc.poll() is None:
        time.sleep(0.005)
    running = proc.poll() is None
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=120)
    return {"delay_s": round(delay, 3), "killed_mid_run": running}


def _timed(program: str, args: list) -> float:
    t0 = time.time()
    r = run(program, *args, env=env_with(), timeout=600)
    assert r.returncode == 0, r.stderr
    return time.time() - t0


def _store_opens(uri: str) -> bool:
    return curator(uri, "tables").returncode == 0


@pytest.fixture(scope="module")
def campaign(tmp_path_factory):
    root = tmp_path_factory.mktemp("campaign")
    clips = root / "clips"
    for i in range(N_CLIPS):
        write_tone(clips / f"c{i:04d}.wav", seconds=0.05, sr=8000, freq=120 + 3 * i)
    results = {"kills": [], "machine": os.uname().nodename, "cpus": os.cpu_count()}
    yield {"root": root, "clips": clips, "rng": random.Random(int(os.environ.get("CURATOR_CAMPAIGN_SEED", "0"))),
           "results": results}
    results["load_average"] = [round(x, 2) for x in os.getloadavg()]
    out = os.environ.get("CURATOR_CAMPAIGN_OUT")
    if out:
        Path(out).write_text(json.dumps(results, indent=2))


def _record(campaign, stage: str, outcome: dict) -> None:
    campaign["results"]["kills"].append({"stage": stage, **outcome})


def test_kill_9_during_ingest(campaign):
    rng, root = campaign["rng"], campaign["root"]
    args = ["ingest", "audio", campaign["clips"], "--source", "s", "--workers", "1"]
    took = _timed(CURATOR, ["--store", root / "ingest_ref", *args])
    for k in range(KILLS):
        uri = str(root / f"ingest{k}")
        outcome = _kill_at_random(CURATOR, ["--store", uri, *args], took, rng)
        outcome["store_opens"] = not Path(uri).exists() or _store_opens(uri)
        outcome["rows_at_kill"] = len(ids(uri, "audio", "audio_id"))
        r = curator(uri, *args)
        got = ids(uri, "audio", "audio_id")
        outcome |= {"rerun_ok": r.returncode == 0, "rows": len(got), "unique": len(set(got))}
        _record(campaign, "ingest", outcome)
        assert outcome["store_opens"] and outcome["rerun_ok"], r.stderr
        assert len(got) == len(set(got)) == N_CLIPS


def test_kill_9_during_embed(campaign, tmp_path_factory):
    rng, root = campaign["rng"], campaign["root"]
    tiny = make_tiny_clap(tmp_path_factory.mktemp("tiny") / "clap")
    uri = str(root / "embed")
    assert curator(uri, "ingest", "audio", campaign["clips"], "--source", "s").returncode == 0
    assert curator(uri, "models", "add", "tiny", "--kind", "clap-hf", tiny).returncode == 0
    args = ["--store", uri, "embed", "--model", "tiny", "--audio", "--batch-size", "4", "--flush-rows", "8",
            "--workers", "1"]
    took = None
    for k in range(KILLS):
        if took is None:  # the first run's length (killed later) bounds the random delays
            t0 = time.time()
            outcome = _kill_at_random(CURATOR, args, 30.0, rng)
            took = max(3.0, time.time() - t0)
        else:
            outcome = _kill_at_random(CURATOR, args, took, rng)
        outcome["store_opens"] = _store_opens(uri)
        outcome["rows_at_kill"] = len(ids(uri, "emb_tiny_audio", "audio_id"))
        r = run(CURATOR, *args, env=env_with())
        got = ids(uri, "emb_tiny_audio", "audio_id")
        outcome |= {"rerun_ok": r.returncode == 0, "rows": len(got), "unique": len(set(got))}
        _record(campaign, "embed", outcome)
        assert outcome["store_opens"] and outcome["rerun_ok"], r.stderr
        assert len(got) == len(set(got)) == N_CLIPS
        Store.open(uri).delete("emb_tiny_audio", "true")  # the next kill starts from no vectors again


def test_kill_9_during_build(campaign):
    rng, root = campaign["rng"], campaign["root"]
    build = ["build", "du", "--model", "teach", "--name", "du", "--threshold", "0.5", "--pool-where",
             "source = 'wild'"]
    ref_uri = str(root / "build_ref")
    build_world(Store.open(ref_uri))
    took = _timed(CURATOR, ["--store", ref_uri, *build])
    _, ref = read_set(ref_uri, "du")
    for k in range(KILLS):
        uri = str(root / f"build{k}")
        build_world(Store.open(uri))
        outcome = _kill_at_random(CURATOR, ["--store", uri, *build], took, rng)
        outcome["store_opens"] = _store_opens(uri)
        outcome["catalog_rows_at_kill"] = reading.read_table(uri, "sets").num_rows
        r = curator(uri, *build)
        _, got = read_set(uri, "du")
        catalog = reading.read_table(uri, "sets").num_rows
        outcome |= {"rerun_ok": r.returncode == 0, "version": got.version, "catalog_rows": catalog,
                    "same_hash": got.content_hash == ref.content_hash}
        _record(campaign, "build", outcome)
        assert outcome["store_opens"] and outcome["rerun_ok"], r.stderr
        assert (got.version, catalog, got.content_hash) == (1, 1, ref.content_hash)


def test_kill_9_during_fit(campaign):
    rng, root = campaign["rng"], campaign["root"]
    store = str(root / "fit_store")
    write_set(store, "pairs", make_clips(root / "wav", write_tone, per_class=2))
    fit = ["--store", store, "fit", "--set", "pairs", "--student-config", json.dumps(TINY_STUDENT),
           "--batch-size", "4", "--lr", "1e-3", "--log-every", "1", "--seed", "3", "--epochs", "6",
           "--checkpoint-minutes", "0"]
    took = _timed(TRAINER, [*fit, "--out", root / "fit_ref"])
    ref = load_file(root / "fit_ref" / "model.safetensors")
    for k in range(KILLS):
        out = root / f"fit{k}"
        outcome = _kill_at_random(TRAINER, [*fit, "--out", out], took, rng)
        resumable = (out / "checkpoint.json").exists() or (out / ".next").exists()
        outcome["resumed_from"] = read_checkpoint(out)["step"] if resumable else None
        r = run(TRAINER, *(["--store", store, "fit", "--resume", "--out", out] if resumable else [*fit, "--out", out]),
                env=env_with())
        got = load_file(out / "model.safetensors") if r.returncode == 0 else {}
        same = bool(got) and max(float(np.abs(ref[k2] - got[k2]).max()) for k2 in ref) < 1e-6
        outcome |= {"rerun_ok": r.returncode == 0, "same_weights": same, "leftovers": leftovers(out)}
        _record(campaign, "fit", outcome)
        assert outcome["rerun_ok"], r.stderr
        assert same and outcome["leftovers"] == []
