"""The demo's comparison table (the paper's Table 2 in miniature) and its report folder.

A demo folder (written by scripts/demo.sh) holds `evals/<model>.json` (`trainer eval --json`),
`runs/<model>/` (checkpoint.json, metrics.jsonl), `sweep.csv` / `sweep.png`, `store/` and
`corpus/ground_truth.csv`. `collect` reads them into one plain dict (report.json), `write_report`
adds report.md and the plots, `aggregate` folds several seeds' report.json into mean ± std.

Ground truth is used for analysis only: how pure the curated pairs are (does the caption's clip
share a label with the wild clip it was matched to) and how often pseudo-labels are right.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

from curator.curate.counts import label_counts
from curator.demo import report_plots
from curator.store.sql import query
from curator.store.store import Store
from schemas.errors import ParameterError
from schemas.sets import resolve_set

# (folder name, row label, training loss): the paper's Table 2 in its order (SL = the teacher trained
# on with soft labels on its own pairs, the control row), then our class-balanced rows.
MODELS = [("teacher", "Teacher", "clap"), ("sl", "SL", "soft"), ("du", "DU", "clap"), ("du_sl", "DU+SL", "soft"),
          ("ds", "DS", "clap"), ("ds_sl", "DS+SL", "soft"), ("ads", "ADS", "clap"), ("ads_sl", "ADS+SL", "soft"),
          ("ads_bal_sl", "ADS-bal+SL", "soft")]
LABELS = {name: label for name, label, _ in MODELS}
# The paper's claims, as (better, worse) pairs of row labels, then ours (balance).
CLAIMS = [("ADS+SL", "Teacher"), ("ADS+SL", "SL"), ("ADS+SL", "DS+SL"), ("DS+SL", "Teacher"), ("DS+SL", "DS"),
          ("DU+SL", "DU"), ("ADS+SL", "ADS"), ("SL", "Teacher"), ("ADS-bal+SL", "ADS+SL"), ("ADS-bal+SL", "Teacher")]


def _read_json(path: Path, what: str) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ParameterError(f"{path}: missing ({what})") from None
    except json.JSONDecodeError as exc:
        raise ParameterError(f"{path}: not JSON ({what}): {exc.msg} at line {exc.lineno}") from None


def _eval_row(name: str, path: Path, run: Path) -> dict:
    zs = _read_json(path, "a `trainer eval --json` result").get("zero_shot")
    if not isinstance(zs, dict) or "accuracy" not in zs:
        raise ParameterError(f"{path}: no zero_shot.accuracy (is it `trainer eval --json` output?)")
    row = {"name": name, "label": LABELS.get(name, name), "accuracy": zs["accuracy"],
           "mean_class_accuracy": zs.get("mean_class_accuracy"), "n": zs.get("n"),
           "per_class": {c: v["accuracy"] for c, v in sorted(zs.get("per_class", {}).items())},
           "eval_json": str(path)}
    ckpt = run / "checkpoint.json"
    if ckpt.exists():
        meta = _read_json(ckpt, "checkpoint metadata")
        hp = meta.get("hparams", {})
        row.update(loss=hp.get("loss"), epochs=hp.get("epochs"), lr=hp.get("lr"), steps=meta.get("step"),
                   train_set=_lineage_ref(meta.get("set")), replay_set=_lineage_ref(meta.get("replay")))
        val = (meta.get("metrics") or {}).get("validation")
        if val:
            row["validation"] = {k: val.get(k) for k in ("curve", "best_step", "best_loss", "stopped_at",
                                                          "kept_step", "patience", "every", "data")}
    row["curve"] = _curve(run / "metrics.jsonl")
    return row


def _lineage_ref(lineage) -> dict | None:
    if not isinstance(lineage, dict):
        return None
    return {"ref": f"{lineage.get('name')}@{lineage.get('version')}", "rows": lineage.get("rows")}


def _curve(path: Path) -> dict:
    steps, losses, evals = [], [], []
    if not path.exists():
        return {"step": steps, "loss": losses, "eval": evals}
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        rec = json.loads(line)
        if "loss" in rec:
            steps.append(rec["step"])
            losses.append(rec["loss"])
        if isinstance(rec.get("eval"), dict):
            evals.append({"step": rec["step"], "accuracy": rec["eval"].get("accuracy")})
    return {"step": steps, "loss": losses, "eval": evals}


def _truth(demo: Path) -> tuple[dict[str, set[str]], dict[str, str]]:
    """(file name -> every family in the clip (a mixture has two), file name -> its main family)
    from ground_truth.csv."""
    path = demo / "corpus" / "ground_truth.csv"
    if not path.exists():
        return {}, {}
    out, main = {}, {}
    with path.open(newline="") as f:
        for rec in csv.DictReader(f):
            labels = {s.strip() for s in (rec.get("labels") or rec["label"]).split(";") if s.strip()}
            out[rec["file_name"]] = labels | {rec["label"]}
            main[rec["file_name"]] = rec["label"]
    return out, main


def _set_stats(demo: Path, truth: dict[str, set[str]], main: dict[str, str]) -> list[dict]:
    """Each set's latest version: rows, τ, its label counts and (with ground truth) pair purity /
    label precision and the clips' true families."""
    store_dir = demo / "store"
    if not store_dir.exists():
        return []
    store = Store.open(str(store_dir), create=False)
    if not store.has("sets"):
        return []
    cat = query(store, "select name, version, strategy, rows, params from sets "
                       "qualify row_number() over (partition by name order by version desc) = 1 order by name")
    out = []
    for rec in cat.to_pylist():
        params = json.loads(rec["params"] or "{}")
        item = {"name": rec["name"], "version": rec["version"], "strategy": rec["strategy"], "rows": rec["rows"],
                "threshold": params.get("threshold"), "top_k": params.get("top_k")}
        for key in ("balance", "thresholds", "per_class_threshold"):
            if key in params:
                item[key] = params[key]
        if store.has(f"set_{rec['name']}"):
            ref = f"{rec['name']}@{rec['version']}"
            item["label_counts"] = {str(k): v for k, v in (label_counts(store, ref) or {}).items()}
            if truth:
                # A set's catalog version is not its table's Lance version (a new table starts
                # empty at Lance version 1): read the rows at the version the catalog recorded.
                at = resolve_set(store.uri, ref).table_version
                item.update(_purity(store, rec["name"], at, rec["strategy"], truth))
                item["true_family_counts"] = _families(store, rec["name"], at, main)
        out.append(item)
    return out


def _families(store, name: str, table_version: int, main: dict[str, str]) -> dict[str, int]:
    """How many of a set's rows have a clip of each true (main) family: its real class balance."""
    counts: dict[str, int] = {}
    for r in query(store, f"select uri from set_{name}", at={f"set_{name}": table_version}).to_pylist():
        fam = main.get(r["uri"].rsplit("/", 1)[-1] if r["uri"] else None, "?")
        counts[fam] = counts.get(fam, 0) + 1
    return dict(sorted(counts.items()))


def _purity(store, name: str, table_version: int, strategy: str, truth: dict[str, set[str]]) -> dict:
    def base(uri):
        return uri.rsplit("/", 1)[-1] if uri else None

    if strategy == "pseudo":
        rows = query(store, f"select uri, label from set_{name}", at={f"set_{name}": table_version}).to_pylist()
        ok = [r["label"] in truth.get(base(r["uri"]), ()) for r in rows]
        return {"label_precision": sum(ok) / len(ok) if ok else None}
    rows = query(store, f"select s.uri as clip, a.uri as caption_clip from set_{name} s "
                        f"left join texts t using (text_id) left join audio a on a.audio_id = t.audio_id",
                 at={f"set_{name}": table_version}).to_pylist()
    ok = [bool(truth.get(base(r["clip"]), set()) & truth.get(base(r["caption_clip"]), set()))
          for r in rows if r["caption_clip"]]
    return {"pair_purity": sum(ok) / len(ok) if ok else None}


def collect(demo: str | Path) -> dict:
    """Everything the report shows, as plain JSON-able data."""
    demo = Path(demo)
    evals = demo / "evals"
    if not evals.is_dir():
        raise ParameterError(f"{demo}: no evals/ folder (run scripts/demo.sh, or `trainer eval --json` "
                             f"into {evals}/<model>.json)")
    found = {p.stem: p for p in sorted(evals.glob("*.json"))}
    if not found:
        raise ParameterError(f"{evals}: no <model>.json files")
    order = [n for n, _, _ in MODELS if n in found] + sorted(set(found) - set(LABELS))
    models = [_eval_row(n, found[n], demo / "runs" / n) for n in order]
    manifest = demo / "corpus" / "manifest.json"
    meta = _read_json(manifest, "corpus manifest") if manifest.exists() else {}
    truth, main = _truth(demo)
    return {"demo": str(demo), "seed": meta.get("seed"),
            "corpus": {s: i.get("clips") for s, i in meta.get("splits", {}).items()},
            "models": models, "sets": _set_stats(demo, truth, main), "claims": claims(models)}


def claims(models: list[dict]) -> list[dict]:
    acc = {m["label"]: m["accuracy"] for m in models}
    return [{"claim": f"{a} > {b}", "holds": acc[a] > acc[b]} for a, b in CLAIMS if a in acc and b in acc]


def _pct(x) -> str:
    return "—" if x is None else f"{100 * x:.1f}"


def table(models: list[dict]) -> str:
    """Markdown table: one row per model, accuracy in % and the gain over the teacher."""
    teacher = next((m["accuracy"] for m in models if m["name"] == "teacher"), None)
    lines = ["| model | trained on | loss | zero-shot acc (%) | mean class acc (%) | Δ vs teacher |",
             "|---|---|---|---|---|---|"]
    for m in models:
        train = (m.get("train_set") or {}).get("ref", "—")
        if m.get("train_set") and m["train_set"].get("rows") is not None:
            train += f" ({m['train_set']['rows']} rows)"
        if m.get("replay_set"):
            train += f" + replay {m['replay_set']['ref']}"
        delta = "" if teacher is None or m["name"] == "teacher" else f"{100 * (m['accuracy'] - teacher):+.1f}"
        lines.append(f"| {m['label']} | {train} | {m.get('loss') or '—'} | {_pct(m['accuracy'])} | "
                     f"{_pct(m.get('mean_class_accuracy'))} | {delta} |")
    return "\n".join(lines)


def _sets_table(sets: list[dict]) -> str:
    lines = ["| set | strategy | rows | τ | top-k | pair purity | pseudo-label precision |",
             "|---|---|---|---|---|---|---|"]
    for s in sets:
        lines.append(f"| {s['name']}@{s['version']} | {s['strategy']} | {s['rows']} | "
                     f"{'—' if s.get('threshold') is None else s['threshold']} | {s.get('top_k') or '—'} | "
                     f"{_pct(s.get('pair_purity'))} | {_pct(s.get('label_precision'))} |")
    return "\n".join(lines)


def _counts(counts: dict | None) -> str:
    return ", ".join(f"{k} {v}" for k, v in (counts or {}).items()) or "—"


def class_counts_table(sets: list[dict]) -> str:
    """Per-class counts of every set: its `label` column and its clips' true families."""
    lines = ["| set | rows | label counts | true families of its clips |", "|---|---|---|---|"]
    for s in sets:
        lines.append(f"| {s['name']}@{s['version']} | {s['rows']} | {_counts(s.get('label_counts'))} | "
                     f"{_counts(s.get('true_family_counts'))} |")
    return "\n".join(lines)


def per_class_table(models: list[dict]) -> str:
    classes = sorted({c for m in models for c in m.get("per_class", {})})
    lines = ["| model | " + " | ".join(classes) + " |", "|---|" + "---|" * len(classes)]
    for m in models:
        lines.append(f"| {m['label']} | " + " | ".join(_pct(m.get("per_class", {}).get(c)) for c in classes) + " |")
    return "\n".join(lines)


def training_lines(models: list[dict]) -> list[str]:
    """How long each model trained, and the validation curve of those that validated."""
    out = []
    for m in models:
        val = m.get("validation")
        line = f"- {m['label']}: {m.get('steps')} optimiser steps"
        if val and val.get("curve"):
            stop = (f"early-stopped at step {val['stopped_at']} (patience {val.get('patience')})"
                    if val.get("stopped_at") is not None else "ran its whole budget")
            line += (f"; validation on {(val.get('data') or {}).get('rows')} held-out rows every {val.get('every')} "
                     f"steps, {stop}; best validation loss {val['best_loss']:.4f} at step {val['best_step']}, "
                     f"weights of step {val.get('kept_step')} kept. Curve (step: loss): "
                     + ", ".join(f"{p['step']}: {p['val_loss']:.3f}" for p in val["curve"]))
        out.append(line)
    return out


def write_report(data: dict, out: str | Path) -> Path:
    """report.json, report.md and the PNGs into `out`; returns the markdown path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    demo = Path(data["demo"])
    (out / "report.json").write_text(json.dumps(data, indent=2, sort_keys=True))
    sweep = demo / "sweep.png"
    if sweep.exists():
        shutil.copyfile(sweep, out / "sweep.png")
    report_plots.curves(data["models"], out / "curves.png")
    report_plots.per_class(data["models"], out / "per_class.png")
    md = [f"# Demo report (seed {data.get('seed')})", "",
          "Corpus: " + ", ".join(f"{k} {v} clips" for k, v in data.get("corpus", {}).items()), "",
          "## Zero-shot accuracy on the eval split", "", table(data["models"]), "",
          "## The paper's claims on this run", ""]
    md += [f"- {c['claim']}: {'yes' if c['holds'] else 'no'}" for c in data["claims"]]
    md += ["", "## Training budget and the teacher's validation curve", ""] + training_lines(data["models"])
    md += ["", "## Per-class zero-shot accuracy (%)", "", per_class_table(data["models"])]
    md += ["", "## Improvement sets", "",
           "Pair purity: share of a set's pairs whose caption's clip and matched clip share a family "
           "(ground truth, analysis only).", "", _sets_table(data["sets"]), "",
           "Per-class counts: the set's labels (DS / balanced sets / pseudo-labels) and the true families of its "
           "clips (ground truth, analysis only).", "", class_counts_table(data["sets"]), ""]
    if sweep.exists():
        md += ["## Threshold sweep (captions × wild clips)", "", "![sweep](sweep.png)", ""]
    md += ["## Training curves", "", "![curves](curves.png)", "", "## Per-class accuracy", "",
           "![per class](per_class.png)", ""]
    (out / "report.md").write_text("\n".join(md))
    return out / "report.md"
