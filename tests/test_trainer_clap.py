"""A clap-hf student: `fit --init <ClapModel folder>` trains the teacher's own architecture, and
`trainer eval` takes the teacher folder and the student checkpoint alike."""

from __future__ import annotations

import json

from tiny_models import make_tiny_clap
from trainer_fixtures import CLASSES, make_clips, write_audio_texts, write_set

from trainer.train.checkpoint import read_checkpoint


def test_clap_hf_student_from_its_teacher(tmp_path, tone, store_uri, cli):
    clips = make_clips(tmp_path / "wav", tone, per_class=2, classes=CLASSES[:4])
    write_set(store_uri, "pairs", clips, dim=32)
    write_audio_texts(store_uri, clips, label_set="tones")
    teacher = make_tiny_clap(tmp_path / "teacher")
    out = tmp_path / "student"
    r = cli.trainer("fit", "--set", "pairs", "--init", teacher, "--batch-size", "4", "--epochs", "2",
                    "--lr", "1e-4", "--log-every", "1", "--out", out)
    assert r.code == 0, r.output
    meta = read_checkpoint(out)
    assert meta["student"]["kind"] == "clap-hf" and meta["step"] == 4
    assert json.loads((out / "student.json").read_text())["kind"] == "clap-hf"
    hf_dirs = [p for p in out.iterdir() if p.is_dir() and (p / "config.json").exists()]
    assert hf_dirs, "clap-hf save should also write a plain ClapModel folder"
    r = cli.trainer("fit", "--set", "pairs", "--init", teacher, "--student", "compact", "--out", tmp_path / "x")
    assert r.code == 2 and "makes a clap-hf student" in r.output
    for model in (teacher, out, hf_dirs[0]):
        r = cli.trainer("eval", "--model", model, "--label-set", "tones", "--json")
        assert r.code == 0, r.output
        res = json.loads(r.output.strip().splitlines()[-1])["zero_shot"]
        assert res["n"] == 8 and len(res["labels"]) == 4
