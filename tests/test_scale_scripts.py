"""The scale rehearsal and the GPU check run end to end at toy sizes, so neither script rots.

Only the shape of what they write is checked (every stage, every ratio): never a timing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STAGES = ["register model", "import audio vectors", "import text vectors", "match, threshold (in memory)", "match, threshold, streamed",
          "query: streamed vs in-memory pairs", "match, top-50 per caption", "sweep (5 thresholds)",
          "build du (top-50)", "build ds", "build ads (top-50)", "pseudo-label", "guard", "query group-by",
          "sets diff", "review (1 run)"]


def _env():
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_WAIT_POLICY": "PASSIVE"}


def test_bench_scale_small_has_every_stage_and_ratio(tmp_path):
    out, raw = tmp_path / "scale.md", tmp_path / "scale.json"
    res = subprocess.run([sys.executable, "scripts/bench_scale.py", "--clips", "2000", "--captions", "200", "--dim",
                          "64", "--in-process", "--peak-seconds", "0.2", "--work", str(tmp_path / "work"),
                          "--out", str(out), "--json", str(raw)], cwd=ROOT, env=_env(), capture_output=True, text=True)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    data = json.loads(raw.read_text())
    assert [r["stage"] for r in data["stages"]] == STAGES
    for r in data["stages"]:
        assert r["wall_s"] > 0 and r["rss_gb"] > 0 and r["inputs"], r
    by = {r["stage"]: r for r in data["stages"]}
    assert by["query: streamed vs in-memory pairs"]["note"] == "pairs differing: 0"
    assert data["probes"]["exact_sub"]["pairs"] > 0
    reads = data["probes"]["read_rounds"]
    for route in ("npy", "ours_vectors", "npy_ids", "ours_read_vectors"):
        assert len(reads[route]["all"]) == reads["rounds"] and 0 < reads[route]["min"] <= reads[route]["median"]
    text = out.read_text()
    for stage in STAGES:
        assert f"| {stage} |" in text
    for ratio in ("vector reads", "fp32 matmul peak", "faiss", "`curator query`", "candidate pairs"):
        assert ratio in text


def test_device_check_cpu_tiny_runs_every_check(tmp_path):
    out, raw = tmp_path / "gpu.md", tmp_path / "gpu.json"
    res = subprocess.run(["bash", "scripts/device_check.sh", "--cpu", "--tiny", "--out", str(out), "--json", str(raw)],
                         cwd=ROOT, env={**_env(), "PYTHON": sys.executable}, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    data = json.loads(raw.read_text())
    assert data["match"]["decisions_differing"] == 0
    assert data["match"]["bf16"]["pairs"] == data["match"]["fp32"]["pairs"] > 0
    assert data["embed"]["ours_clips_per_s"] > 0 and data["embed"]["hf_clips_per_s"] > 0
    assert data["train"]["samples_per_s"] > 0
    text = out.read_text()
    assert "--cpu --tiny` mode" in text and "decisions differing from fp32: **0**" in text
