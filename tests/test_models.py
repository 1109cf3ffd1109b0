"""Students (trainer.students.compact): real MiniLM text tower, real tiny ClapModel folders, real safetensors files."""

from __future__ import annotations

import copy
import json
import math
from datetime import datetime

import numpy as np
import pytest
import torch
from tiny_models import SAMPLE_RATE, make_tiny_clap

from schemas.errors import ModelError, ParameterError
from trainer.students.heads import ClassifierHead, MetadataFusion, time_features
from trainer.students.loading import build_student, load_student
from trainer.train.losses import clap_loss

TINY = dict(channels=(8, 16, 32), transformer_layers=1, dim=16, window_s=1.0, n_mels=32, n_fft=512,
            hop_length=160, dropout=0.0)
TEXTS = ["a dog barks twice", "rain on a tin roof", "a car passes by", "birds at dawn"]


def _waves(n=4, seconds=1.0, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    waves = [0.3 * np.sin(2 * np.pi * (200 + 300 * i) * t) + 0.05 * rng.standard_normal(t.shape) for i in range(n)]
    return torch.tensor(np.stack(waves), dtype=torch.float32)


@pytest.fixture(scope="module")
def compact():
    torch.manual_seed(0)
    return build_student("compact", **TINY).eval()


def _train_step(student, waves, texts, lr=1e-2):
    student.train()
    params = [p for p in student.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr)
    loss = clap_loss(student.encode_audio(waves), student.encode_texts(texts), student.logit_scale.exp())
    loss.backward()
    opt.step()
    opt.zero_grad()
    return student.eval(), loss.item()


def test_compact_shapes_norms_and_interface(compact):
    assert (compact.dim, compact.sample_rate, compact.window_samples) == (16, 16000, 16000)
    assert isinstance(compact.logit_scale, torch.nn.Parameter)
    assert compact.logit_scale.exp().item() == pytest.approx(1 / 0.07, rel=1e-6)
    with torch.no_grad():
        audio = compact.encode_audio(_waves())
        text = compact.encode_text(compact.tokenize(TEXTS))
        longer = compact.encode_audio(_waves(2, seconds=2.5))
    assert audio.shape == (4, 16) and text.shape == (4, 16) and longer.shape == (2, 16)
    for x in (audio, text, longer):
        torch.testing.assert_close(x.norm(dim=1), torch.ones(x.shape[0]))
    tokens = compact.tokenize(TEXTS)
    assert set(tokens) == {"input_ids", "attention_mask"}  # no token_type_ids
    assert not torch.allclose(audio[0], audio[1]) and not torch.allclose(text[0], text[1])
    torch.testing.assert_close(compact.encode_texts(TEXTS[:1]).detach(), text[:1])


def test_frozen_layers_do_not_train_and_the_rest_does(compact):
    student = copy.deepcopy(compact)
    layers = student.text.encoder.layer
    assert len(layers) == 6
    frozen = [student.text.embeddings, *layers[:4]]
    assert all(not p.requires_grad for m in frozen for p in m.parameters())
    assert all(p.requires_grad for m in layers[4:] for p in m.parameters())
    assert all(p.requires_grad for p in student.audio.parameters())
    before = {k: v.clone() for k, v in student.state_dict().items()}
    student.train()
    assert not any(m.training for m in frozen) and layers[5].training and student.audio.training
    _, loss = _train_step(student, _waves(), TEXTS)
    assert math.isfinite(loss)
    after = student.state_dict()
    for name in ("text.embeddings.word_embeddings.weight", "text.encoder.layer.3.output.dense.weight"):
        assert torch.equal(before[name], after[name]), name
    for name in ("text.encoder.layer.5.output.dense.weight", "audio.proj.weight", "text_proj.weight", "logit_scale"):
        assert not torch.equal(before[name], after[name]), name


def test_compact_save_load_identical_and_self_contained(compact, tmp_path):
    compact.save(tmp_path / "ckpt")
    meta = json.loads((tmp_path / "ckpt" / "student.json").read_text())
    assert meta["kind"] == "compact" and meta["dim"] == 16 and meta["config"]["channels"] == [8, 16, 32]
    assert (tmp_path / "ckpt" / "text" / "tokenizer.json").exists()
    # the checkpoint must not need the folder its text tower came from
    meta["config"]["text_path"] = str(tmp_path / "gone")
    (tmp_path / "ckpt" / "student.json").write_text(json.dumps(meta))
    loaded = load_student(tmp_path / "ckpt")
    assert not loaded.training and sum(not p.requires_grad for p in loaded.parameters()) > 0
    waves = _waves()
    with torch.no_grad():
        assert torch.equal(compact.encode_audio(waves), loaded.encode_audio(waves))
        assert torch.equal(compact.encode_texts(TEXTS), loaded.encode_texts(TEXTS))
    assert torch.equal(compact.logit_scale, loaded.logit_scale)


def test_spec_augment_masks_only_in_training(compact):
    student = build_student("compact", **{**TINY, "spec_augment": True, "freq_mask": 6, "time_mask": 20})
    student.frontend.load_state_dict(compact.frontend.state_dict())
    student.eval()
    waves = _waves()
    with torch.no_grad():
        plain = student.frontend(waves)
        torch.testing.assert_close(student.frontend(waves), plain)
        student.frontend.train()
        student.frontend.norm.eval()  # batch statistics aside, only the masks may differ
        torch.manual_seed(3)
        masked = student.frontend(waves)
    zero_bins = (masked == 0).all(dim=3).sum().item()
    zero_frames = (masked == 0).all(dim=2).sum().item()
    assert zero_bins > 0 and zero_frames > 0
    keep = masked != 0
    torch.testing.assert_close(masked[keep], plain[keep])


def test_bad_build_and_load_inputs(tmp_path, compact):
    with pytest.raises(ParameterError, match="unknown student kind 'cnn'"):
        build_student("cnn")
    with pytest.raises(ParameterError, match="unknown compact student option.*widht"):
        build_student("compact", widht=3)
    with pytest.raises(ParameterError, match="divisible by 4 heads"):
        build_student("compact", channels=(8, 16, 30))
    with pytest.raises(ParameterError, match="freeze_layers=9"):
        build_student("compact", **{**TINY, "freeze_layers": 9})
    with pytest.raises(ParameterError, match="needs init_path"):
        build_student("clap-hf")
    with pytest.raises(ModelError, match="no student.json"):
        load_student(tmp_path)
    compact.save(tmp_path / "torn")
    weights = tmp_path / "torn" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(ModelError, match="cannot load weights"):
        load_student(tmp_path / "torn")


@pytest.fixture(scope="module")
def tiny_clap(tmp_path_factory):
    return make_tiny_clap(tmp_path_factory.mktemp("teacher") / "tiny_clap", seed=0)


def _hf_embeddings(folder, waves, texts):
    """Embeddings the plain Hugging Face way: numpy ClapFeatureExtractor + ClapModel + processor tokenizer."""
    from transformers import AutoTokenizer, ClapFeatureExtractor, ClapModel

    model = ClapModel.from_pretrained(folder, trust_remote_code=False).eval()
    fe = ClapFeatureExtractor.from_pretrained(folder, trust_remote_code=False)
    tok = AutoTokenizer.from_pretrained(folder, trust_remote_code=False)
    feats = fe([w.numpy() for w in waves], sampling_rate=fe.sampling_rate, return_tensors="pt")
    tokens = tok(texts, padding=True, return_tensors="pt")
    assert "token_type_ids" not in tokens  # the saved tokenizer carries model_input_names
    with torch.no_grad():
        audio = model.get_audio_features(input_features=feats["input_features"]).pooler_output
        text = model.get_text_features(**tokens).pooler_output
    return audio, text, model


def test_clap_student_starts_as_its_teacher(tiny_clap):
    student = build_student("clap-hf", tiny_clap).eval()
    assert (student.dim, student.sample_rate, student.window_samples) == (32, 16000, 16000)
    assert student.logit_scale is student.model.logit_scale_a
    waves = _waves()
    audio, text, _ = _hf_embeddings(tiny_clap, waves, TEXTS)
    with torch.no_grad():
        torch.testing.assert_close(student.encode_audio(waves), audio, atol=2e-4, rtol=0)
        torch.testing.assert_close(student.encode_texts(TEXTS), text, atol=1e-6, rtol=0)


def test_clap_student_trains_saves_and_reloads_as_plain_hf(tiny_clap, tmp_path):
    torch.manual_seed(0)
    student = build_student("clap-hf", tiny_clap)
    start = {k: v.clone() for k, v in student.model.state_dict().items()}
    student, loss = _train_step(student, _waves(), TEXTS, lr=1e-3)
    assert math.isfinite(loss)
    assert not torch.equal(start["audio_projection.linear1.weight"], student.model.audio_projection.linear1.weight)
    student.save(tmp_path / "ckpt")
    assert {"student.json", "model.safetensors", "hf"} <= {p.name for p in (tmp_path / "ckpt").iterdir()}
    waves = _waves(seed=1)
    with torch.no_grad():
        mine_audio, mine_text = student.encode_audio(waves), student.encode_texts(TEXTS)
    # plain transformers on ckpt/hf: same weights; audio differs only by numpy-vs-torch features
    audio, text, hf_model = _hf_embeddings(tmp_path / "ckpt" / "hf", waves, TEXTS)
    torch.testing.assert_close(text, mine_text, atol=1e-6, rtol=0)
    torch.testing.assert_close(audio, mine_audio, atol=2e-4, rtol=0)
    assert hf_model.logit_scale_t.item() == hf_model.logit_scale_a.item() == student.logit_scale.item()
    with torch.no_grad():
        feats = student.features(waves)
        torch.testing.assert_close(hf_model.get_audio_features(input_features=feats).pooler_output, mine_audio,
                                   atol=1e-6, rtol=0)
    reloaded = load_student(tmp_path / "ckpt")
    with torch.no_grad():
        assert torch.equal(reloaded.encode_audio(waves), mine_audio)
        assert torch.equal(reloaded.encode_texts(TEXTS), mine_text)


def test_classifier_head_and_metadata_fusion():
    torch.manual_seed(0)
    fusion = MetadataFusion(n_cities=3, city_dim=4, time_hidden=8)
    head = ClassifierHead(fusion.out_dim(16), n_classes=5, hidden=12)
    audio = torch.nn.functional.normalize(torch.randn(4, 16), dim=1)
    when = [datetime(2024, 3, 1, 6, 0), datetime(2024, 3, 1, 18, 0), None, datetime(2024, 12, 31, 23, 30)]
    feats = torch.from_numpy(time_features(when))
    assert feats.shape == (4, 6)
    np.testing.assert_allclose(feats[0, :2].numpy(), [1.0, 0.0], atol=1e-6)   # 06:00 -> a quarter turn
    np.testing.assert_allclose(feats[1, :2].numpy(), [-1.0, 0.0], atol=1e-6)  # 18:00
    assert (feats[2] == 0).all()
    fused = fusion(audio, torch.tensor([0, 2, -1, 1]), feats)
    assert fused.shape == (4, 16 + 4 + 8)
    torch.testing.assert_close(fused[:, :16], audio)
    torch.testing.assert_close(fused[2, 16:20], fusion.city.weight[3])  # unknown city row
    logits = head(fused)
    assert logits.shape == (4, 5)
    torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1, 2, 3])).backward()
    assert fusion.city.weight.grad is not None and head.net[0].weight.grad is not None
    with pytest.raises(ParameterError, match="city index 3"):
        fusion(audio, torch.tensor([0, 1, 2, 3]), feats)
    with pytest.raises(ParameterError, match="at least 2 classes"):
        ClassifierHead(16, 1)
