"""The reduced demo, end to end through the real CLI: `bash scripts/demo.sh --quick`.

Generates a tiny corpus, trains a teacher and six students, evaluates all seven and writes the
report. Checks the exit code, the printed comparison table (one row per model), the report folder,
and that the report's numbers are exactly the ones the `trainer eval --json` files hold.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ROWS = ["Teacher", "SL", "DU", "DU+SL", "DS", "DS+SL", "ADS", "ADS+SL", "ADS-bal+SL"]
NAMES = ["teacher", "sl", "du", "du_sl", "ds", "ds_sl", "ads", "ads_sl", "ads_bal_sl"]
STUDENTS = NAMES[1:]


def _env() -> dict:
    env = dict(os.environ)
    bins = [str(Path(sys.executable).parent), str(ROOT / ".venv" / "bin")]
    env["PATH"] = os.pathsep.join(bins + [env.get("PATH", "")])
    env["CURATOR_DEMO_NO_SETUP"] = "1"  # use this interpreter's environment, never pip install
    env.pop("CURATOR_STORE", None)
    env["OMP_NUM_THREADS"] = "1"
    return env


def _table_rows(stdout: str) -> dict[str, list[str]]:
    rows = {}
    for line in stdout.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| ") and cells[0] in ROWS:
            rows[cells[0]] = cells
    return rows


# ~32 CLI processes, each importing torch / transformers / lancedb: about 4-5 CPU-minutes, over the
# 2-3 minutes a default test may take, so it is marked slow (it still runs unless deselected).
@pytest.mark.slow
def test_quick_demo_end_to_end(tmp_path):
    out = tmp_path / "demo"
    r = subprocess.run(["bash", str(ROOT / "scripts" / "demo.sh"), "--quick", "--seed", "3", "--out", str(out)],
                       capture_output=True, text=True, env=_env(), timeout=1800)
    assert r.returncode == 0, f"demo.sh failed ({r.returncode}):\n{r.stdout[-4000:]}\n{r.stderr[-4000:]}"

    rows = _table_rows(r.stdout)
    assert list(rows) == ROWS, f"table rows {list(rows)} in:\n{r.stdout[-3000:]}"
    report_dir = out / "report"
    assert f"report: {report_dir / 'report.md'}" in r.stdout
    for name in ("report.md", "sweep.png", "curves.png", "per_class.png"):
        path = report_dir / name
        assert path.is_file() and path.stat().st_size > 0, name
        if name.endswith(".png"):
            assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    md = (report_dir / "report.md").read_text()
    assert all(f"| {label} |" in md for label in ROWS)

    data = json.loads((report_dir / "report.json").read_text())
    assert [m["name"] for m in data["models"]] == NAMES
    for m in data["models"]:
        zs = json.loads((out / "evals" / f"{m['name']}.json").read_text())["zero_shot"]
        assert m["accuracy"] == zs["accuracy"] and m["mean_class_accuracy"] == zs["mean_class_accuracy"]
        assert m["per_class"] == {c: v["accuracy"] for c, v in zs["per_class"].items()}
        assert m["n"] == zs["n"] == 27
        # The printed accuracy cell is the eval's number, rounded to one decimal of a percent.
        assert rows[m["label"]][3] == f"{100 * zs['accuracy']:.1f}"
        assert m["curve"]["step"], f"{m['name']}: no training curve"

    # Students start from the teacher and train on the sets the paper names, with its replay.
    by = {m["name"]: m for m in data["models"]}
    assert by["teacher"]["train_set"]["ref"].startswith("teacher_pairs@")
    for name, set_name, replay in (("sl", "replay", None), ("du", "du", "replay"), ("ds_sl", "ds", None),
                                   ("ads_sl", "ads", "ds"), ("ads_bal_sl", "ads_bal", "ds")):
        assert by[name]["train_set"]["ref"].split("@")[0] == set_name
        assert (by[name]["replay_set"] or {}).get("ref", "@").split("@")[0] == (replay or "")
        init = json.loads((out / "runs" / name / "checkpoint.json").read_text())["hparams"]["init"]
        assert Path(init) == out / "runs" / "teacher"
    assert [by[n]["loss"] for n in NAMES] == ["clap", "soft", "clap", "soft", "clap", "soft", "clap", "soft", "soft"]
    # one optimiser-step budget for the SL control and every student
    assert {by[n]["steps"] for n in STUDENTS} == {2}
    # the teacher early-stopped (or ran out of epochs) on a held-out slice of its own pairs
    val = by["teacher"]["validation"]
    assert val["curve"] and val["data"]["source"] == "fraction" and val["kept_step"] == val["best_step"]
    assert by["teacher"]["steps"] == (val["stopped_at"] or by["teacher"]["steps"])
    sets = {s["name"]: s for s in data["sets"]}
    assert {"teacher_pairs", "du", "ds", "ads", "ads_bal", "replay", "pseudo", "pseudo_flex"} <= set(sets)
    assert sets["du"]["threshold"] == sets["ads"]["threshold"]
    bal = sets["ads_bal"]["balance"]
    assert max(bal["counts"].values()) <= bal["quota"] and sets["ads_bal"]["label_counts"]
    assert sets["pseudo_flex"]["per_class_threshold"] == "flexmatch" and sets["pseudo_flex"]["thresholds"]
    # Ground-truth analysis reads every set's rows at the version its catalog row recorded.
    for name, s in sets.items():
        assert sum(s["true_family_counts"].values()) == s["rows"], name
        quality = s["label_precision"] if s["strategy"] == "pseudo" else s["pair_purity"]
        assert quality is None if s["rows"] == 0 else 0.0 <= quality <= 1.0, name
    assert sets["teacher_pairs"]["pair_purity"] == 1.0  # a clip's own captions
    assert re.search(r"tau \(DU, ADS\) = [0-9.]+", r.stdout)
