"""Model registry and teachers: real tiny ClapModel folder, the real MiniLM sentence encoder."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from tiny_models import PROJECTION_DIM, make_tiny_clap, minilm_path

from curator.models.registry import add_model, get_model, list_models
from curator.models.teachers import load_teacher
from schemas.errors import ModelError
from schemas.fingerprint import folder_sha256

TEXTS = ["a dog barks twice", "rain on a tin roof", "this is a sound of siren"]


@pytest.fixture(scope="module")
def tiny_clap(tmp_path_factory):
    return make_tiny_clap(tmp_path_factory.mktemp("models") / "tiny_clap", seed=0)


def test_add_and_list_clap_and_sentence(cli, store, tiny_clap):
    result = cli.curator("models", "add", "tiny", "--kind", "clap-hf", tiny_clap)
    assert result.code == 0, result.output
    assert "32-d" in result.output and "logit scale 14.286" in result.output
    assert cli.curator("models", "add", "minilm", "--kind", "sentence", minilm_path()).code == 0
    tiny = get_model(store, "tiny")
    assert (tiny.dim, tiny.sample_rate, tiny.modalities) == (PROJECTION_DIM, 16000, ("audio", "text"))
    assert tiny.sha256 == folder_sha256(tiny_clap)
    assert tiny.logit_scale == pytest.approx(1 / 0.07, rel=1e-6)
    minilm = get_model(store, "minilm")
    assert (minilm.dim, minilm.modalities, minilm.logit_scale) == (384, ("text",), None)
    assert sorted(list_models(store).column("model_id").to_pylist()) == ["minilm", "tiny"]
    listing = cli.curator("models", "list", "--format", "csv")
    assert listing.code == 0 and "tiny,clap-hf,32" in listing.output
    # the same folder again is a no-op; the same name with other files is refused
    assert add_model(store, "tiny", "clap-hf", tiny_clap)["sha256"] == tiny.sha256
    assert len(list_models(store)) == 2


def test_registry_refuses_bad_input(cli, store, tiny_clap, tmp_path):
    add_model(store, "tiny", "clap-hf", tiny_clap)
    other = make_tiny_clap(tmp_path / "other", seed=1)
    with pytest.raises(ModelError, match="already registered with other files"):
        add_model(store, "tiny", "clap-hf", other)
    with pytest.raises(ModelError, match="share tables emb_tiny_"):
        add_model(store, "TINY", "clap-hf", other)
    with pytest.raises(ModelError, match=r"unknown model 'nope'; registered: tiny"):
        get_model(store, "nope")
    with pytest.raises(ModelError, match="register it with --kind clap-hf"):
        add_model(store, "wrong", "sentence", tiny_clap)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="holds no files"):
        add_model(store, "empty", "clap-hf", tmp_path / "empty")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "config.json").write_text("{not json")
    result = cli.curator("models", "add", "junk", "--kind", "clap-hf", tmp_path / "junk")
    assert result.code == 2 and "error: model 'junk':" in result.output and "not a loadable ClapModel" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_cli_refuses_a_name_whose_tables_clash_with_a_registered_model(cli, store, tiny_clap, tmp_path):
    """`Teacher-A` and `teacher_a` both map to emb_teacher_a_*: the second would read and write the
    first's vectors, so it is refused with one line naming both, and nothing is registered."""
    assert cli.curator("models", "add", "Teacher-A", "--kind", "clap-hf", tiny_clap).code == 0
    other = make_tiny_clap(tmp_path / "other", seed=1)
    for folder in (tiny_clap, other):
        result = cli.curator("models", "add", "teacher_a", "--kind", "clap-hf", folder)
        lines = [ln for ln in result.output.splitlines() if ln.strip()]
        assert result.code == 2 and len(lines) == 1, result.output
        assert "'teacher_a'" in lines[0] and "'Teacher-A'" in lines[0] and "emb_teacher_a_" in lines[0]
    assert list_models(store).column("model_id").to_pylist() == ["Teacher-A"]
    assert get_model(store, "Teacher-A").table("audio") == "emb_teacher_a_audio"


def test_changed_folder_is_refused_at_load(store, tiny_clap, tmp_path):
    folder = shutil.copytree(tiny_clap, tmp_path / "copy")
    add_model(store, "copy", "clap-hf", folder)
    (folder / "config.json").write_text((folder / "config.json").read_text() + "\n")
    with pytest.raises(ModelError, match="changed since registration"):
        load_teacher(get_model(store, "copy"), "cpu")


def test_clap_teacher_matches_plain_hugging_face(store, tiny_clap):
    from transformers import AutoTokenizer, ClapFeatureExtractor, ClapModel

    add_model(store, "tiny", "clap-hf", tiny_clap)
    teacher = load_teacher(get_model(store, "tiny"), "cpu")
    rng = np.random.default_rng(0)
    waves = (0.2 * rng.standard_normal((3, teacher.window_samples))).astype(np.float32)
    model = ClapModel.from_pretrained(tiny_clap, trust_remote_code=False).eval()
    fe = ClapFeatureExtractor.from_pretrained(tiny_clap, trust_remote_code=False)
    tok = AutoTokenizer.from_pretrained(tiny_clap, model_input_names=["input_ids", "attention_mask"], trust_remote_code=False)
    with torch.no_grad():
        feats = fe(list(waves), sampling_rate=16000, return_tensors="pt")["input_features"]
        ref_audio = model.get_audio_features(input_features=feats).pooler_output.numpy()
        ref_text = model.get_text_features(**tok(TEXTS, padding=True, return_tensors="pt")).pooler_output.numpy()
    audio, text = teacher.embed_audio(waves), teacher.embed_texts(TEXTS)
    assert audio.shape == (3, PROJECTION_DIM) and text.shape == (3, PROJECTION_DIM)
    np.testing.assert_allclose(np.linalg.norm(audio, axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(audio, ref_audio, atol=1e-5)
    np.testing.assert_allclose(text, ref_text, atol=1e-6)
    # a list of clips of any length is fitted to the window (repeat-pad / centre crop)
    short = teacher.embed_audio([waves[0][:5000], waves[1]])
    np.testing.assert_allclose(short[1], audio[1], atol=1e-6)


def test_sentence_teacher_matches_sentence_transformers(store):
    from sentence_transformers import SentenceTransformer

    add_model(store, "minilm", "sentence", minilm_path())
    teacher = load_teacher(get_model(store, "minilm"), "cpu")
    ours = teacher.embed_texts(TEXTS)
    ref = SentenceTransformer(minilm_path(), device="cpu").encode(TEXTS, normalize_embeddings=True)
    np.testing.assert_allclose(ours, ref, atol=1e-5)
    assert ours[0] @ ours[1] < ours[2] @ teacher.embed_texts(["a siren wails"])[0]
    with pytest.raises(ModelError, match="text-only"):
        teacher.embed_audio([np.zeros(16000, np.float32)])


def test_checkpoint_kind_loads_a_student(store, tmp_path):
    from trainer.students import loading as models
    student = models.build_student("compact", minilm_path(), channels=(8, 16, 32), transformer_layers=1, dim=16,
                                   window_s=1.0, n_mels=32, n_fft=512, hop_length=160, dropout=0.0).eval()
    folder = tmp_path / "student"
    student.save(folder)
    (folder / "checkpoint.json").write_text('{"trained_on": "ds1@3", "step": 10}')
    row = add_model(store, "s1", "checkpoint", folder)
    assert (row["dim"], row["trained_on"], row["modalities"]) == (16, "ds1@3", ["audio", "text"])
    assert row["logit_scale"] == pytest.approx(float(student.logit_scale.detach().exp()))
    teacher = load_teacher(get_model(store, "s1"), "cpu")
    waves = torch.randn(2, teacher.window_samples, generator=torch.Generator().manual_seed(0)) * 0.1
    with torch.no_grad():
        ref = student.encode_audio(waves).numpy()
        ref_text = student.encode_texts(TEXTS).numpy()
    np.testing.assert_allclose(teacher.embed_audio(waves.numpy()), ref, atol=1e-5)
    np.testing.assert_allclose(teacher.embed_texts(TEXTS), ref_text, atol=1e-5)
    # training metadata is not part of the model's identity
    (folder / "checkpoint.json").write_text('{"trained_on": "ds1@3", "step": 11}')
    load_teacher(get_model(store, "s1"), "cpu")
