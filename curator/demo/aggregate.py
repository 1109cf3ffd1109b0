"""`curator demo report --aggregate`: the demo's rows over several seeds. Every row's mean with a
Student-t interval, each claim's paired per-seed differences, per-class means and every set's mean
rows, purity and per-class counts, from the seeds' report.json files (`curator.demo.report`)."""

from __future__ import annotations

import json
from pathlib import Path

from curator.demo.report import CLAIMS, LABELS, _pct, per_class_table
from curator.demo.stats import mean_interval
from schemas.errors import ParameterError


def aggregate(reports: list[dict], level: float = 0.95) -> dict:
    """Per row: mean and `level` Student-t interval over seeds; per claim "A > B": the paired
    per-seed differences A − B with their mean and interval, and on how many seeds A > B held."""
    if not reports:
        raise ParameterError("--aggregate needs at least one demo folder")
    names = [m["name"] for m in reports[0]["models"]]
    rows = []
    for name in names:
        found = [m for r in reports for m in r["models"] if m["name"] == name]
        if len(found) != len(reports):
            raise ParameterError(f"model {name!r} is missing from some of the demo folders")
        accs = [m["accuracy"] for m in found]
        mcas = [m["mean_class_accuracy"] for m in found if m.get("mean_class_accuracy") is not None]
        ci = mean_interval(accs, level)
        classes = sorted({c for m in found for c in m.get("per_class", {})})
        per_class = {c: sum(m["per_class"][c] or 0.0 for m in found if c in m.get("per_class", {})) / len(found)
                     for c in classes}
        rows.append({"name": name, "label": LABELS.get(name, name), "accuracy_mean": ci["mean"],
                     "accuracy_std": ci["sd"], "accuracy_ci": [ci["low"], ci["high"]], "accuracy_half": ci["half"],
                     "accuracies": accs, "mean_class_accuracy_mean": mean_interval(mcas)["mean"] if mcas else None,
                     "per_class_mean": per_class})
    by_label = {m["label"]: m["accuracies"] for m in rows}
    found_claims = []
    for a, b in CLAIMS:
        if a in by_label and b in by_label:
            diffs = [x - y for x, y in zip(by_label[a], by_label[b])]
            ci = mean_interval(diffs, level)
            found_claims.append({"claim": f"{a} > {b}", "held": sum(d > 0 for d in diffs), "of": len(diffs),
                                 "diffs": diffs, "diff_mean": ci["mean"], "diff_ci": [ci["low"], ci["high"]],
                                 "diff_half": ci["half"]})
    return {"seeds": [r.get("seed") for r in reports], "level": level, "models": rows, "claims": found_claims,
            "sets": _aggregate_sets(reports)}


def _mean_of(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def _aggregate_sets(reports: list[dict]) -> list[dict]:
    """Per set name found in every report: mean rows, mean pair purity / label precision and the mean
    count of each label and of each true family (a class missing from a seed's set counts 0)."""
    per_report = [{s["name"]: s for s in r.get("sets", [])} for r in reports]
    names = sorted(set.intersection(*(set(p) for p in per_report))) if per_report else []
    out = []
    for name in names:
        found = [p[name] for p in per_report]

        def mean_counts(key):
            classes = sorted({c for s in found for c in (s.get(key) or {})})
            return {c: sum((s.get(key) or {}).get(c, 0) for s in found) / len(found) for c in classes}

        out.append({"name": name, "strategy": found[0].get("strategy"), "rows_mean": _mean_of([s["rows"] for s in found]),
                    "pair_purity_mean": _mean_of([s.get("pair_purity") for s in found]),
                    "label_precision_mean": _mean_of([s.get("label_precision") for s in found]),
                    "label_counts_mean": mean_counts("label_counts"),
                    "true_family_counts_mean": mean_counts("true_family_counts")})
    return out


def _pm(mean: float, half: float | None) -> str:
    return f"{100 * mean:.1f}" + (f" ± {100 * half:.1f}" if half is not None else "")


def aggregate_table(agg: dict) -> str:
    level = int(round(100 * agg.get("level", 0.95)))
    teacher = next((m["accuracy_mean"] for m in agg["models"] if m["name"] == "teacher"), None)
    lines = [f"| model | zero-shot acc (%), mean ± {level} % CI | per seed | Δ vs teacher |", "|---|---|---|---|"]
    for m in agg["models"]:
        seeds = " / ".join(f"{100 * a:.1f}" for a in m["accuracies"])
        delta = "" if teacher is None or m["name"] == "teacher" else f"{100 * (m['accuracy_mean'] - teacher):+.1f}"
        lines.append(f"| {m['label']} | {_pm(m['accuracy_mean'], m['accuracy_half'])} | {seeds} | {delta} |")
    return "\n".join(lines)


def claims_table(agg: dict) -> str:
    level = int(round(100 * agg.get("level", 0.95)))
    lines = [f"| claim | paired difference (points), mean ± {level} % CI | held on |", "|---|---|---|"]
    for c in agg["claims"]:
        lines.append(f"| {c['claim']} | {_pm(c['diff_mean'], c['diff_half'])} | {c['held']}/{c['of']} seeds |")
    return "\n".join(lines)


def per_class_mean_table(agg: dict) -> str:
    """Mean per-class zero-shot accuracy (%) of every row over the seeds."""
    models = [{"label": m["label"], "per_class": m.get("per_class_mean", {})} for m in agg["models"]]
    return per_class_table(models)


def sets_mean_table(agg: dict) -> str:
    lines = ["| set | rows | pair purity / label precision (%) | labels | true families of its clips |",
             "|---|---|---|---|---|"]

    def counts(c: dict) -> str:
        return ", ".join(f"{k} {v:.0f}" for k, v in sorted(c.items(), key=lambda kv: -kv[1])) or "—"

    for s in agg.get("sets", []):
        quality = s["label_precision_mean"] if s["strategy"] == "pseudo" else s["pair_purity_mean"]
        lines.append(f"| {s['name']} | {s['rows_mean']:.0f} | {_pct(quality)} | {counts(s['label_counts_mean'])} | "
                     f"{counts(s['true_family_counts_mean'])} |")
    return "\n".join(lines)


def write_aggregate(agg: dict, out: str | Path) -> Path:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "aggregate.json").write_text(json.dumps(agg, indent=2, sort_keys=True))
    md = [f"# Demo over seeds {', '.join(str(s) for s in agg['seeds'])}", "", aggregate_table(agg), "",
          "Claims: per-seed paired differences (row A − row B), their mean and Student-t interval, and the "
          "number of seeds on which A > B held.", "", claims_table(agg), "",
          "## Per-class zero-shot accuracy (%), mean over the seeds", "", per_class_mean_table(agg), ""]
    if agg.get("sets"):
        md += ["## Improvement sets, mean over the seeds", "",
               "Rows, pair purity (pseudo-labels: precision) and per-class counts: the set's labels and the true "
               "families of its clips (ground truth, analysis only).", "", sets_mean_table(agg), ""]
    (out / "aggregate.md").write_text("\n".join(md) + "\n")
    return out / "aggregate.md"
