"""`curator review`: the page's data, media, escaping, scale, serving and CLI (no browser here)."""

from __future__ import annotations

import json
import threading
import urllib.request
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from curator.review.data import load_run, load_set, summarize
from curator.review.media import log_mel_image
from curator.review.page import build_review, js_literal, make_server, server_url
from schemas.errors import ParameterError, RefError
from schemas.sets import content_hash
from schemas.tables import set_rows, set_table_name
from schemas.validate import conform

EVIL = "<script>window.__pwned=1</script> a cat </script><!-- meows\u2028loudly"
CAPTIONS = ["a dog barks twice", EVIL, "rain on a tin roof", "this is a sound of dog"]


def write_run(store, tone, folder: Path, run_id: str = "r1", n_clips: int = 4, captions=CAPTIONS,
              threshold: float = 0.3) -> list[tuple[str, str, float]]:
    """A run written the way the matcher writes it: audio + texts + candidates + runs rows.

    Every caption is paired with every clip; score = 0.1 + 0.05 * k for the k-th pair, so scores
    are distinct and known. Clip i lasts 1 + i/2 seconds (the browser test checks durations).
    """
    ids = [f"src:{i:016x}" for i in range(n_clips)]
    uris = [tone(folder / f"clip {i}.wav", 1.0 + 0.5 * i, 16000, 220.0 * (i + 1)) for i in range(n_clips)]
    store.upsert("audio", pa.table({"audio_id": ids, "uri": uris, "source": ["src"] * n_clips,
                                    "labels": [[f"label{i}"] for i in range(n_clips)]}))
    tids = [f"c:{i:04d}" for i in range(len(captions))]
    kinds = ["prompt" if c.startswith("this is a sound of") else "caption" for c in captions]
    store.upsert("texts", pa.table({"text_id": tids, "text": captions, "kind": kinds,
                                    "source": ["test"] * len(captions),
                                    "label": [c.rsplit(" ", 1)[-1] if k == "prompt" else None
                                              for c, k in zip(captions, kinds)]}))
    pairs = [(t, a, round(0.1 + 0.05 * (i * n_clips + j), 4)) for i, t in enumerate(tids) for j, a in enumerate(ids)]
    store.append("candidates", pa.table({
        "run_id": [run_id] * len(pairs), "text_id": [p[0] for p in pairs], "audio_id": [p[1] for p in pairs],
        "score": pa.array([p[2] for p in pairs], pa.float32()), "rank": pa.array([1] * len(pairs), pa.int32())}))
    store.upsert("runs", pa.table({"run_id": [run_id], "method": ["exact"], "model_id": ["clap-tiny"],
                                   "threshold": [threshold], "top_k": pa.array([None], pa.int32()),
                                   "inputs": [["emb_clap_tiny_audio@3", "emb_clap_tiny_text@2"]],
                                   "pairs": [len(pairs)]}))
    return pairs


def read_data(out: Path) -> dict:
    text = (Path(out) / "data.js").read_text(encoding="utf-8")
    prefix, suffix = "window.CURATOR_REVIEW = ", ";\n"
    assert text.startswith(prefix) and text.endswith(suffix)
    return json.loads(text[len(prefix):-len(suffix)])


def page_rows(data: dict) -> list[tuple[str, str, str, float]]:
    r = data["rows"]
    return [(data["texts"]["id"][t], data["clips"]["id"][c], data["texts"]["text"][t], s)
            for t, c, s in zip(r["t"], r["c"], r["s"])]


def test_run_page_rows_sorted_summary_and_media(store, tone, tmp_path):
    pairs = write_run(store, tone, tmp_path / "clips")
    page = build_review(load_run(store, "r1"), tmp_path / "page")
    data = read_data(page.out)
    rows = page_rows(data)
    assert page.rows == page.total == len(rows) == 16
    assert [r[3] for r in rows] == sorted((p[2] for p in pairs), reverse=True)
    assert {(r[0], r[1]) for r in rows} == {(p[0], p[1]) for p in pairs}
    for name in ("index.html", "review.js", "review.css"):
        assert (page.out / name).stat().st_size > 500
    meta, summary = data["meta"], data["summary"]
    assert meta["model"] == "clap-tiny" and meta["threshold"] == 0.3 and meta["method"] == "exact"
    assert meta["inputs"] == ["emb_clap_tiny_audio@3", "emb_clap_tiny_text@2"]
    assert summary["pairs"] == 16 and sum(summary["hist"]["counts"]) == 16
    assert summary["per_caption"] == {"distinct": 4, "mean": 4.0, "max": 4}
    assert summary["per_clip"] == {"distinct": 4, "mean": 4.0, "max": 4}
    # The prompt's label and the clip's labels travel with the rows.
    assert data["labels"] == ["dog"]
    assert sorted(map(tuple, data["clips"]["labels"])) == [("label0",), ("label1",), ("label2",), ("label3",)]
    assert page.media_clips == 4
    for src, spec in zip(data["clips"]["src"], data["clips"]["spec"]):
        assert (page.out / src).read_bytes()[:4] == b"RIFF"
        with Image.open(page.out / spec) as im:
            assert im.size == (128, 48)


def test_escaping_keeps_script_out_of_data_js(store, tone, tmp_path):
    write_run(store, tone, tmp_path / "clips")
    page = build_review(load_run(store, "r1"), tmp_path / "page")
    raw = (page.out / "data.js").read_text(encoding="utf-8")
    for bad in ("</script", "<script", "<!--", "\u2028", "\u2029"):
        assert bad not in raw
    assert EVIL in read_data(page.out)["texts"]["text"]  # escaped, not altered
    assert js_literal({"x": "a&b<c>"}) == '{"x":"a\\u0026b\\u003cc\\u003e"}'


def test_around_puts_nearest_pairs_first(store, tone, tmp_path):
    write_run(store, tone, tmp_path / "clips")
    data = read_data(build_review(load_run(store, "r1"), tmp_path / "page", around=0.42, band=0.05).out)
    scores = [r[3] for r in page_rows(data)]
    distances = [abs(s - 0.42) for s in scores]
    assert distances == sorted(distances)
    assert scores[:4] == [0.4, 0.45, 0.35, 0.5]  # 0.40/0.45 tie at 0.02/0.03 away, then 0.35/0.50
    assert data["around"] == {"t": 0.42, "band": 0.05}


def test_media_cap_and_link(store, tone, tmp_path):
    write_run(store, tone, tmp_path / "clips")
    capped = build_review(load_run(store, "r1"), tmp_path / "capped", media=2)
    data = read_data(capped.out)
    assert capped.media_clips == 2 and len(list((capped.out / "audio").iterdir())) == 2
    assert [s is not None for s in data["clips"]["src"]] == [True, True, False, False]
    # The clips with media are those of the best-scored rows (first in page order).
    top_clips = {r[1] for r in page_rows(data)[:2]}
    assert set(data["clips"]["id"][:2]) == top_clips

    linked = build_review(load_run(store, "r1"), tmp_path / "site" / "linked", link=True)
    data = read_data(linked.out)
    assert not list((linked.out / "audio").iterdir())
    for src, uri in zip(data["clips"]["src"], data["clips"]["uri"]):
        assert not src.startswith("/") and "%20" in src  # relative, URL-quoted ("clip 0.wav")
        assert (linked.out / src.replace("%20", " ")).resolve() == Path(uri).resolve()


def test_unreadable_clip_is_reported_not_fatal(store, tone, tmp_path):
    write_run(store, tone, tmp_path / "clips", n_clips=2)
    (tmp_path / "clips" / "clip 1.wav").write_bytes(b"not audio at all")
    page = build_review(load_run(store, "r1"), tmp_path / "page")
    assert page.media_clips == 1 and len(page.skipped) == 1
    assert "clip 1.wav" in page.skipped[0] and "cannot decode" in page.skipped[0]


def test_spectrogram_follows_pitch(tone, tmp_path):
    low = log_mel_image(Path(tone(tmp_path / "low.wav", 1.0, 16000, 300.0)))
    high = log_mel_image(Path(tone(tmp_path / "high.wav", 1.0, 16000, 4000.0)))
    assert low.shape == high.shape == (48, 128)
    assert int(np.argmax(low.mean(axis=1))) < int(np.argmax(high.mean(axis=1))) - 10
    short = log_mel_image(Path(tone(tmp_path / "short.flac", 0.02, 16000, 300.0)))
    assert short.shape == (48, 128) and np.isfinite(short).all()


def write_set(store, name: str = "du") -> pa.Table:
    schema = set_rows(4, 4)
    vec = [[0.5, 0.5, 0.5, 0.5]] * 3
    rows = pa.table({"audio_id": ["src:0000000000000000", "src:0000000000000001", "src:0000000000000001"],
                     "uri": ["/nowhere/a.wav", "/nowhere/b.wav", "/nowhere/b.wav"],
                     "text_id": ["c:0000", "c:0001", None], "text": ["a dog barks", EVIL, None],
                     "score": pa.array([None, None, None], pa.float32()), "label": [None, None, "cat"],
                     "confidence": pa.array([0.9, 0.4, 0.7], pa.float32()),
                     "teacher_audio": vec, "teacher_text": vec})
    rows = conform(rows, schema, "test set")
    version = store.overwrite(set_table_name(name), rows, schema)
    store.append("sets", pa.table({"name": [name], "version": [1], "table_version": [version], "strategy": ["pseudo"],
                                   "params": [json.dumps({"threshold": 0.5})], "inputs": [["audio@1"]],
                                   "model_id": ["clap-tiny"], "rows": [3], "content_hash": [content_hash(rows)]}))
    return rows


def test_set_page_uses_confidence_and_labels(store, tmp_path):
    write_set(store)
    data = read_data(build_review(load_set(store, "du"), tmp_path / "page").out)
    assert data["kind"] == "set" and data["key"] == "set:du@1" and data["score_name"] == "confidence"
    assert data["threshold"] == 0.5 and data["meta"]["strategy"] == "pseudo"
    assert [r[3] for r in page_rows(data)] == [0.9, 0.7, 0.4]
    assert data["labels"] == ["cat"] and data["rows"]["l"] == [-1, 0, -1]
    assert data["media"]["clips"] == 0 and data["clips"]["src"] == [None, None]  # files do not exist


def test_unknown_run_and_bad_parameters(store, tone, tmp_path):
    write_run(store, tone, tmp_path / "clips")
    with pytest.raises(RefError, match=r"run 'nope' does not exist; recent runs: r1"):
        load_run(store, "nope")
    with pytest.raises(ParameterError, match="--band"):
        build_review(load_run(store, "r1"), tmp_path / "page", around=0.3, band=0)
    with pytest.raises(ParameterError, match="--sample"):
        build_review(load_run(store, "r1"), tmp_path / "page", sample=-3)


def write_big_run(store, tone, folder: Path, n_texts: int = 20000, n_clips: int = 5) -> int:
    """100k candidate pairs over a handful of real clips (data volume without the audio volume)."""
    write_run(store, tone, folder, run_id="big", n_clips=n_clips, captions=["seed caption"])
    tids = [f"b:{i:06d}" for i in range(n_texts)]
    store.upsert("texts", pa.table({"text_id": tids, "text": [f"caption number {i}" for i in range(n_texts)],
                                    "kind": ["caption"] * n_texts, "source": ["big"] * n_texts}))
    rng = np.random.default_rng(0)
    n = n_texts * n_clips
    store.append("candidates", pa.table({
        "run_id": ["big"] * n, "text_id": np.repeat(tids, n_clips),
        "audio_id": np.tile([f"src:{i:016x}" for i in range(n_clips)], n_texts),
        "score": rng.uniform(0.2, 0.6, n).astype(np.float32), "rank": np.tile(np.arange(1, n_clips + 1), n_texts).astype(np.int32)}))
    return n + n_clips


def test_hundred_thousand_pairs(store, tone, tmp_path):
    total = write_big_run(store, tone, tmp_path / "clips")
    data = load_run(store, "big")
    page = build_review(data, tmp_path / "page", around=0.3)
    payload = read_data(page.out)
    assert total == 100005 and page.rows == len(payload["rows"]["s"]) == total
    assert page.media_clips == 5 and len(list((page.out / "audio").iterdir())) == 5
    assert payload["summary"]["per_clip"] == {"distinct": 5, "mean": 20001.0, "max": 20001}
    assert payload["summary"]["per_caption"]["distinct"] == 20001
    sampled = build_review(data, tmp_path / "sampled", sample=2000)
    payload = read_data(sampled.out)
    assert sampled.rows == 2000 and sampled.total == total and payload["summary"]["pairs"] == total
    assert payload["summary"]["shown"] == 2000


def test_summary_counts_null_scores_out_of_histogram():
    rows = pa.table({"text_id": ["a", "a", None], "audio_id": ["x", "y", "y"], "text": ["t", "t", "u"],
                     "score": [0.2, None, 0.4]})
    s = summarize(rows, threshold=0.3)
    assert s["pairs"] == 3 and s["scored"] == 2 and sum(s["hist"]["counts"]) == 2
    assert s["per_caption"] == {"distinct": 2, "mean": 1.5, "max": 2}
    assert s["per_clip"] == {"distinct": 2, "mean": 1.5, "max": 2}


def test_serve_binds_loopback_and_serves_the_page(store, tone, tmp_path):
    write_run(store, tone, tmp_path / "clips", n_clips=1)
    page = build_review(load_run(store, "r1"), tmp_path / "page")
    server = make_server(page.out, 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        assert server.server_address[0] == "127.0.0.1"
        url = server_url(server)
        with urllib.request.urlopen(url, timeout=10) as resp:
            assert resp.status == 200 and b'src="data.js"' in resp.read()
        with urllib.request.urlopen(url.replace("index.html", "data.js"), timeout=10) as resp:
            assert resp.read().startswith(b"window.CURATOR_REVIEW = ")
    finally:
        server.shutdown()
        server.server_close()
    with pytest.raises(ParameterError, match="--port"):
        busy = make_server(page.out, 0)
        try:
            make_server(page.out, busy.server_address[1])
        finally:
            busy.server_close()


def test_cli_review(cli, store, tone, tmp_path):
    write_run(store, tone, tmp_path / "clips")
    out = tmp_path / "page"
    result = cli.curator("review", "--run", "r1", "--around", "0.3", "--media", "3", "--out", out)
    assert result.code == 0, result.output
    assert f"wrote {out / 'index.html'} (16 of 16 pairs; audio and spectrograms for 3 clips)" in result.output
    assert read_data(out)["around"] == {"t": 0.3, "band": 0.05}
    both = cli.curator("review", "--run", "r1", "--set", "du", "--out", out)
    assert both.code == 2 and "exactly one of --run RUN or --set REF" in both.output
    missing = cli.curator("review", "--set", "nosuch", "--out", out)
    assert missing.code == 2 and "set 'nosuch' does not exist" in missing.output
    helptext = cli.curator("review", "--help")
    assert helptext.code == 0 and "Example:" in helptext.output and "--media" in helptext.output
