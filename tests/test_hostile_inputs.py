"""A hostile but fair user, through the public CLI (issue "Safe with anyone's files").

Every case ends in one `error:` line naming the item and the reason, a non-zero exit, no Python
traceback, and the store's table versions unchanged. Code a model folder ships (`auto_map`) never
runs: its module would create a marker file, and the marker must not exist, with stdin closed
(a prompt would wait for an answer that never comes and time out the test).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from curation_data import build_world, write_model
from trainer_fixtures import TINY_STUDENT, make_clips, write_set

from schemas import reading

POOL = "source = 'wild'"
CLI = "import sys; from {pkg}.cli import main; main(sys.argv[1:])"
EVIL_MODULE = "import pathlib\npathlib.Path({marker!r}).write_text('ran')\nclass Evil:\n    pass\n"


# -- helpers ---------------------------------------------------------------------------------------
def run(pkg: str, *args, store: str | None = None, env: dict | None = None, prefix: tuple = (), timeout: int = 240):
    """The CLI in a fresh process, stdin closed; returns (exit code, stdout + stderr)."""
    argv = [*prefix, sys.executable, "-c", CLI.format(pkg=pkg)] + (["--store", store] if store else [])
    full_env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), **(env or {})}
    p = subprocess.run(argv + [str(a) for a in args], stdin=subprocess.DEVNULL, capture_output=True, text=True,
                       timeout=timeout, env=full_env)
    return p.returncode, p.stdout + p.stderr


def versions(uri: str) -> dict:
    return {n: [v["version"] for v in reading.versions(uri, n)] for n in reading.table_names(uri)}


def refused(code: int, output: str, *needles: str) -> str:
    """Non-zero exit, no traceback, exactly one non-empty line: `error: ...` containing `needles`."""
    assert code != 0, output
    assert "Traceback" not in output, output
    lines = [ln for ln in output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), output
    for needle in needles:
        assert needle in lines[0], output
    return lines[0]


def refused_in_process(result, *needles: str) -> str:
    return refused(result.code, result.output, *needles)


# -- code from a model folder never runs -------------------------------------------------------------
def _poison(folder: Path, config: Path, marker: Path) -> None:
    """Name custom code in `config` (auto_map) and ship the module that would run."""
    data = json.loads(config.read_text())
    data["auto_map"] = {"AutoConfig": "evil.Evil", "AutoModel": "evil.Evil", "AutoTokenizer": ["evil.Evil", None]}
    config.write_text(json.dumps(data))
    (config.parent / "evil.py").write_text(EVIL_MODULE.format(marker=str(marker)))


def _minilm_copy(dest: Path) -> Path:
    from tiny_models import minilm_path

    dest.mkdir(parents=True)
    for item in Path(minilm_path()).iterdir():
        if item.name == "config.json":
            shutil.copy(item, dest / item.name)
        else:
            (dest / item.name).symlink_to(item)
    return dest


@pytest.fixture(scope="module")
def poisoned(tmp_path_factory):
    """Model folders of each kind whose (text tower) config names custom code."""
    from tiny_models import make_tiny_clap

    from trainer.students.loading import build_student

    root = tmp_path_factory.mktemp("poisoned")
    marker = root / "MARKER"
    clap = Path(make_tiny_clap(root / "clap"))
    _poison(clap, clap / "config.json", marker)
    sentence = _minilm_copy(root / "sentence")
    _poison(sentence, sentence / "config.json", marker)
    ckpt = root / "ckpt"
    build_student("compact", **TINY_STUDENT).save(ckpt)
    _poison(ckpt, ckpt / "text" / "config.json", marker)
    return {"marker": marker, "clap": clap, "sentence": sentence, "checkpoint": ckpt}


@pytest.mark.parametrize("kind", ["clap-hf", "sentence", "checkpoint"])
def test_models_add_refuses_custom_code(poisoned, tmp_path, kind):
    folder = poisoned[{"clap-hf": "clap", "sentence": "sentence", "checkpoint": "checkpoint"}[kind]]
    store = str(tmp_path / "store")
    code, out = run("curator", "models", "add", "evil", str(folder), "--kind", kind, store=store)
    refused(code, out, "auto_map", "config.json")
    assert not poisoned["marker"].exists()
    assert "models" not in reading.table_names(store)


def test_trainer_init_eval_and_text_model_refuse_custom_code(poisoned, tmp_path, tone):
    from schemas.fingerprint import folder_sha256

    store = str(tmp_path / "store")
    write_set(store, "s", make_clips(tmp_path / "clips", tone, per_class=1))
    before = versions(store)
    code, out = run("trainer", "fit", "--set", "s", "--init", poisoned["sentence"], "--student", "compact",
                    "--out", tmp_path / "run", store=store)
    refused(code, out, "auto_map")
    code, out = run("trainer", "eval", "--model", poisoned["checkpoint"], "--labels", "dog,rain", store=store)
    refused(code, out, "auto_map")
    assert versions(store) == before
    # a text model (`build ds --text-model` reads its vectors, made by `embed`): a registered
    # sentence model whose folder names custom code (registered behind the registry's back, with a
    # matching fingerprint, so only the loader stands in the way)
    from curator.store.store import Store

    s = Store.open(store)
    build_world(s)
    write_model(s, "snt", dim=384, kind="sentence", modalities=("text",))
    import pyarrow as pa

    models = s.read("models").to_pylist()
    for row in models:
        if row["model_id"] == "snt":
            row.update(path=str(poisoned["sentence"]), sha256=folder_sha256(poisoned["sentence"]))
    s.overwrite("models", pa.Table.from_pylist(models, schema=s.schema_of("models")), s.schema_of("models"))
    before = versions(store)
    code, out = run("curator", "embed", "--model", "snt", "--texts", store=store)
    refused(code, out, "auto_map")
    assert versions(store) == before
    assert not poisoned["marker"].exists()


# -- WHERE options are one expression ----------------------------------------------------------------
@pytest.fixture
def world(store):
    return build_world(store)


STACKED = "1=1; copy (select 1) to '{path}'"
ESCAPE = "1=1) union select audio_id from audio where (1"


def where_cases(path):
    stacked = STACKED.format(path=path)
    return [
        (["build", "du", "--model", "teach", "--name", "x", "--threshold", "0.5", "--pool-where", stacked], "--pool-where"),
        (["build", "ads", "--model", "teach", "--name", "x", "--threshold", "0.5", "--label-set", "esc",
          "--ds-threshold", "0.5", "--pool-where", stacked], "--pool-where"),
        (["build", "du", "--model", "teach", "--name", "x", "--threshold", "0.5", "--pool-where",
          POOL + "; select audio_id from audio"], "--pool-where"),
        (["build", "du", "--model", "teach", "--name", "x", "--threshold", "0.5", "--pool-where", ESCAPE], "--pool-where"),
        (["build", "pairs", "--name", "x", "--pairs-where", stacked], "--pairs-where"),
        (["build", "labelled", "--name", "x", "--audio-where", stacked], "--audio-where"),
        (["pseudo-label", "--model", "teach", "--label-set", "esc", "--name", "x", "--audio-where", stacked],
         "--audio-where"),
        (["embed", "--model", "teach", "--audio", "--where", stacked], "--where"),
        (["match", "--model", "teach", "--threshold", "0.5", "--run", "r", "--texts-where", stacked], "--texts-where"),
        (["sweep", "--model", "teach", "--thresholds", "0.2:0.8:0.2", "--audio-where", stacked], "--audio-where"),
        (["guard", "--model", "teach", "--pool-where", POOL, "--eval-where", stacked], "--eval-where"),
        (["build", "du", "--model", "teach", "--name", "x", "--threshold", "0.5", "--pool-where", "nosuchcol = 1"],
         "--pool-where 'nosuchcol = 1'"),
    ]


def test_where_options_are_one_expression(cli, store, world, tmp_path):
    target = tmp_path / "x.csv"
    before = versions(store.uri)
    for args, option in where_cases(target):
        refused_in_process(cli.curator(*args), option)
        assert not target.exists(), args
    assert versions(store.uri) == before


def test_trainer_where_options_are_one_expression(cli, tmp_path):
    target = tmp_path / "x.csv"
    r = cli.trainer("fit", "--set", "s", "--eval-label-set", "esc", "--eval-where", STACKED.format(path=target),
                    "--out", tmp_path / "run")
    refused_in_process(r, "--eval-where")
    assert not target.exists()


# -- curator query reads ------------------------------------------------------------------------------
def test_query_is_read_only(cli, store, world, tmp_path):
    csv = tmp_path / "mine.csv"
    csv.write_text("audio_id,note\n" + f"{world.ids('wild')[0]},hello\n")
    before = versions(store.uri)
    statements = [
        (f"copy (select 1) to '{tmp_path / 'x.csv'}'", "COPY"),
        (f"copy audio to '{store.uri}/audio.lance/_versions/1.manifest'", "COPY"),
        (f"attach '{tmp_path / 'x.db'}' as x", "ATTACH"),
        ("install httpfs", "INSTALL"),
        ("load httpfs", "LOAD"),
        ("set threads = 1", "SET"),
        ("pragma version", "PRAGMA"),
        ("create table t as select 1", "CREATE"),
        ("insert into audio select * from audio", "INSERT"),
        ("select 1; select 2", "2 statements"),
        (f"explain analyze copy (select 1) to '{tmp_path / 'x.csv'}'", "COPY"),
    ]
    for sql, word in statements:
        refused_in_process(cli.curator("query", sql), "query", word)
    assert not (tmp_path / "x.csv").exists() and not (tmp_path / "x.db").exists()
    assert versions(store.uri) == before
    ok = cli.curator("query", f"select a.audio_id, m.note from audio a join '{csv}' m using (audio_id)",
                     "--format", "csv")
    assert ok.code == 0 and "hello" in ok.output, ok.output
    # a list column as CSV (JSON text) and --out into a missing folder
    ok = cli.curator("query", "select audio_id, [1, 2] as l from audio limit 1", "--format", "csv")
    assert ok.code == 0 and '"[1, 2]"' in ok.output, ok.output
    refused_in_process(cli.curator("query", "select 1", "--out", tmp_path / "nope" / "x.csv"), "--out", "nope")


# -- identity ----------------------------------------------------------------------------------------
def test_dot_folders_and_outside_root_and_duplicate_rows(cli, store_uri, tmp_path, tone):
    clips = tmp_path / "clips"
    tone(clips / "cache" / "x.wav", freq=300)
    tone(clips / ".cache" / "x.wav", freq=500)
    r = cli.curator("ingest", "audio", clips, "--source", "c")
    assert r.code == 0 and "2 added" in r.output, r.output
    tone(tmp_path / "a.wav")
    root = tmp_path / "root"
    tone(root / "b.wav")
    manifest = tmp_path / "m.csv"
    manifest.write_text("filename,category\n../a.wav,dog\nb.wav,cat\n")
    dup = tmp_path / "dup.csv"
    dup.write_text("filename,category\nb.wav,cat\nother.wav,dog\nb.wav,dog\n")

    def ingest(csv, *more):
        return cli.curator("ingest", "audio", csv, "--audio-root", root, "--path-column", "{filename}",
                           "--label-column", "category", *more)

    for csv, needles in ((manifest, ("m.csv:2", "outside the audio root")), (dup, ("rows 2 and 4", "b.wav"))):
        before = versions(store_uri)
        refused_in_process(ingest(csv), *needles)
        assert versions(store_uri) == before
    r = ingest(manifest, "--allow-outside-root")
    assert r.code == 0 and "2 added" in r.output, r.output


def test_captions_link_by_relative_path(cli, store_uri, tmp_path, tone):
    tone(tmp_path / "clips" / "a" / "x.wav", freq=300)
    tone(tmp_path / "clips" / "b" / "x.wav", freq=600)
    assert cli.curator("ingest", "audio", tmp_path / "clips", "--source", "c").code == 0
    caps = tmp_path / "caps.csv"
    caps.write_text("file_name,caption\nb/x.wav,a high tone\n")
    r = cli.curator("ingest", "captions", caps, "--source", "cap")
    assert r.code == 0 and "1 clips linked" in r.output, r.output
    linked = cli.curator("query", "select a.uri from texts t join audio a using (audio_id)", "--format", "csv")
    assert "/b/x.wav" in linked.output and "/a/x.wav" not in linked.output
    bare = tmp_path / "bare.csv"
    bare.write_text("file_name,caption\nx.wav,which one\n")
    before = versions(store_uri)
    line = refused_in_process(cli.curator("ingest", "captions", bare, "--source", "cap2"), "bare.csv:2", "2 clips")
    assert "a/x.wav" in line and "b/x.wav" in line
    assert versions(store_uri) == before


def test_a_file_replaced_after_ingest_is_noticed(cli, store, tmp_path, tone):
    clip = tone(tmp_path / "clips" / "x.wav", freq=300)
    assert cli.curator("ingest", "audio", tmp_path / "clips", "--source", "c").code == 0
    write_model(store, "m", dim=16)
    tone(clip, freq=900, seconds=1.5)  # same path, new content
    r = cli.curator("embed", "--model", "m", "--audio")
    assert r.code == 1 and "Traceback" not in r.output, r.output
    assert "x.wav: changed since it was ingested" in r.output  # recorded in `errors`, never embedded
    assert "emb_m_audio" not in store.names()
    r = cli.curator("ingest", "audio", tmp_path / "clips", "--source", "c")
    assert r.code == 0 and "1 changed since last ingest" in r.output, r.output
    sha = cli.curator("query", "select duration_s from audio", "--format", "csv")
    assert "1.5" in sha.output


# -- training ------------------------------------------------------------------------------------------
def test_soft_loss_refuses_a_replay_set_of_another_teacher(cli, store_uri, tmp_path, tone):
    rows = make_clips(tmp_path / "clips", tone, per_class=1)
    write_set(store_uri, "ds", rows, dim=16)
    write_set(store_uri, "other", rows, dim=32)
    before = versions(store_uri)
    r = cli.trainer("fit", "--set", "ds", "--replay", "other", "--replay-ratio", "0.5", "--loss", "soft",
                    "--out", tmp_path / "run")
    refused_in_process(r, "--replay other@", "two teachers")
    assert versions(store_uri) == before


def test_soft_loss_refuses_an_init_that_is_not_the_sets_teacher(cli, store_uri, tmp_path, tone):
    from tiny_models import make_tiny_clap

    from schemas.fingerprint import folder_sha256

    teacher = make_tiny_clap(tmp_path / "teacher")
    other = make_tiny_clap(tmp_path / "other", seed=1)
    rows = make_clips(tmp_path / "clips", tone, per_class=2, seconds=0.5)[:8]
    write_set(store_uri, "ads", rows, dim=32, model_sha256=folder_sha256(teacher))
    before = versions(store_uri)
    r = cli.trainer("fit", "--set", "ads", "--loss", "soft", "--init", other, "--out", tmp_path / "run")
    refused_in_process(r, f"--init {other}", "not the teacher", "ads@")
    assert versions(store_uri) == before
    r = cli.trainer("fit", "--set", "ads", "--loss", "soft", "--init", teacher, "--batch-size", "4", "--epochs", "1",
                    "--out", tmp_path / "ok")
    assert r.code == 0, r.output


def test_corrupt_train_state_on_resume(cli, store_uri, tmp_path, tone):
    import hashlib

    write_set(store_uri, "s", make_clips(tmp_path / "clips", tone, per_class=1))
    out = tmp_path / "run"
    (out / "train_state").mkdir(parents=True)
    (out / "model.safetensors").write_bytes(b"weights")
    (out / "checkpoint.json").write_text(json.dumps({"step": 3, "set": {"ref": "s"}, "hparams": {}}))
    (out / "train_state" / "state.json").write_text(json.dumps(
        {"step": 3, "weights_sha256": hashlib.sha256(b"weights").hexdigest()}))
    (out / "train_state" / "state.pt").write_bytes(b"\x80\x02not a pickle at all")
    refused_in_process(cli.trainer("fit", "--resume", "--out", out), "state.pt", "corrupt")


# -- tracebacks and unclear messages ---------------------------------------------------------------
def test_non_utf8_files_and_templates(cli, store_uri, tmp_path, tone):
    tone(tmp_path / "a.wav")
    bad = b"filename,category\n\xff\xfe.wav,dog\n"
    (tmp_path / "m.csv").write_bytes(bad)
    refused_in_process(cli.curator("ingest", "audio", tmp_path / "m.csv"), "m.csv", "not UTF-8")
    (tmp_path / "caps.csv").write_bytes(b"file_name,caption\na.wav,caf\xe9\n")
    refused_in_process(cli.curator("ingest", "captions", tmp_path / "caps.csv", "--source", "x"), "caps.csv", "UTF-8")
    (tmp_path / "labels.txt").write_bytes(b"dog\ncaf\xe9\n")
    refused_in_process(cli.curator("ingest", "labels", "--label-set", "x", "--labels", tmp_path / "labels.txt"),
                       "labels.txt", "UTF-8")
    refused_in_process(cli.curator("ingest", "labels", "--label-set", "x", "--label", "dog", "--template", "a {0}"),
                       "--template", "{0}")
    assert versions(store_uri) == {}


def test_unclear_cases_are_one_clear_line(cli, store_uri, tmp_path, tone):
    clips = tmp_path / "clips"
    clips.mkdir()
    (clips / "bad.mp3").write_bytes(b"ID3\x03\x00\x00\x00\x00\x00\x00" + bytes(range(256)) * 20)
    (clips / "empty.wav").write_bytes(b"")
    r = cli.curator("ingest", "audio", clips, "--source", "c")
    assert r.code == 1 and "does not exist" not in r.output and "Traceback" not in r.output, r.output
    assert "format not recognised or data corrupt" in r.output and "possibly a pipe" not in r.output
    fifo = tmp_path / "f.wav"
    os.mkfifo(fifo)
    (tmp_path / "fifo.csv").write_text("filename\nf.wav\n")
    r = cli.curator("ingest", "audio", tmp_path / "fifo.csv", "--audio-root", tmp_path, "--path-column", "{filename}")
    assert r.code == 1 and "not a regular file (a FIFO)" in r.output, r.output
    refused_in_process(cli.curator("build", "du", "--model", "m", "--name", "x", "--threshold", "abc",
                                   "--pool-where", POOL), "--threshold", "abc")


def test_corrupt_mp3_prints_no_decoder_noise(tmp_path):
    clips = tmp_path / "clips"
    clips.mkdir()
    (clips / "bad.mp3").write_bytes(b"ID3\x03\x00\x00\x00\x00\x00\x00" + bytes(range(256)) * 20)
    code, out = run("curator", "ingest", "audio", clips, store=str(tmp_path / "store"))
    lines = [ln for ln in out.splitlines() if ln.strip()]
    assert code == 1 and not any("mpg123" in ln or ln.startswith("Note:") for ln in lines), out
    assert any("bad.mp3" in ln and ln.startswith("error:") for ln in lines), out


class NotWeights:  # a pickle that needs code to load
    pass


def test_pickle_weights_are_refused_without_the_advice(tmp_path):
    import torch
    from tiny_models import make_tiny_clap

    folder = Path(make_tiny_clap(tmp_path / "clap"))
    (folder / "model.safetensors").unlink()

    torch.save({"x": NotWeights()}, folder / "pytorch_model.bin")
    code, out = run("curator", "models", "add", "p", folder, "--kind", "clap-hf", store=str(tmp_path / "store"))
    line = refused(code, out, str(folder))
    assert "weights_only=False" not in line


def test_read_only_store_is_refused(tmp_path, tone):
    store = str(tmp_path / "store")
    assert run("curator", "ingest", "labels", "--label-set", "x", "--label", "dog", store=store)[0] == 0
    before = versions(store)
    for p in [Path(store), *Path(store).rglob("*")]:
        p.chmod(p.stat().st_mode & ~0o222)
    prefix = ()
    if os.geteuid() == 0:  # root writes through permissions: drop that capability for the child
        if not shutil.which("setpriv"):
            pytest.skip("running as root without setpriv")
        prefix = ("setpriv", "--inh-caps=-dac_override,-dac_read_search",
                  "--bounding-set=-dac_override,-dac_read_search")
    try:
        code, out = run("curator", "ingest", "labels", "--label-set", "y", "--label", "cat", store=store, prefix=prefix)
        refused(code, out, "read-only")
    finally:
        for p in [Path(store), *Path(store).rglob("*")]:
            p.chmod(p.stat().st_mode | 0o200)
    assert versions(store) == before


def test_a_folder_of_wavs_is_not_a_store(tmp_path, tone):
    clips = tmp_path / "clips"
    tone(clips / "a.wav")
    code, out = run("curator", "ingest", "labels", "--label-set", "x", "--label", "dog",
                    env={"CURATOR_STORE": str(clips)})
    refused(code, out, str(clips))
    assert sorted(p.name for p in clips.iterdir()) == ["a.wav"]


# -- deterministic content ------------------------------------------------------------------------------
def test_three_builds_in_three_processes_give_one_hash(tmp_path):
    from curator.store.store import Store

    hashes = []
    for k, blas in enumerate(("torch", "numpy", "torch")):
        uri = str(tmp_path / f"s{k}")
        build_world(Store.open(uri))
        code, out = run("curator", "build", "du", "--model", "teach", "--name", "du", "--threshold", "0.3",
                        "--pool-where", POOL, store=uri, env={"CURATOR_BLAS": blas})
        assert code == 0, out
        hashes.append(reading.read_table(uri, "sets").column("content_hash")[0].as_py())
    assert len(set(hashes)) == 1, hashes
