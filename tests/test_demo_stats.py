"""`curator demo report --aggregate`: Student-t intervals per row and paired differences per claim,
against a direct computation (printed t table values; scipy too where it is installed)."""

from __future__ import annotations

import json
import math
import statistics

import pytest

from curator.demo.aggregate import aggregate, claims_table
from curator.demo.stats import mean_interval, t_quantile

# t_{0.975, ν} from any printed table (e.g. NIST/SEMATECH e-Handbook, table 1.3.6.7.2)
T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 9: 2.262, 10: 2.228, 20: 2.086, 30: 2.042}


def test_t_quantile_matches_the_printed_table():
    for df, t in T975.items():
        assert t_quantile(0.975, df) == pytest.approx(t, abs=6e-4)
    assert t_quantile(0.5, 7) == pytest.approx(0.0, abs=1e-9)


def test_t_quantile_matches_scipy():
    # scipy is not ours to need, but the locked stack has it (constraints.txt): a second opinion
    from scipy import stats

    for df in (1, 2, 3, 4, 7, 9, 15, 29, 60, 200):
        for p in (0.9, 0.95, 0.975, 0.995):
            assert t_quantile(p, df) == pytest.approx(float(stats.t.ppf(p, df)), rel=1e-9, abs=1e-9)


def _report(seed, accs):
    models = [{"name": n, "label": lab, "accuracy": a, "mean_class_accuracy": a, "per_class": {"x": a}}
              for (n, lab), a in zip([("teacher", "Teacher"), ("sl", "SL"), ("ads_sl", "ADS+SL")], accs)]
    return {"seed": seed, "models": models, "claims": []}


def test_aggregate_interval_equals_a_direct_t_interval():
    runs = [(0.60, 0.62, 0.66), (0.55, 0.58, 0.57), (0.58, 0.57, 0.65), (0.61, 0.60, 0.70), (0.52, 0.56, 0.58)]
    agg = aggregate([_report(s, r) for s, r in enumerate(runs)])
    assert agg["seeds"] == [0, 1, 2, 3, 4]
    by = {m["label"]: m for m in agg["models"]}
    for j, label in enumerate(["Teacher", "SL", "ADS+SL"]):
        xs = [r[j] for r in runs]
        mean, sd = statistics.mean(xs), statistics.stdev(xs)
        half = 2.7764451052 * sd / math.sqrt(5)  # t_{0.975, 4}
        m = by[label]
        assert m["accuracy_mean"] == pytest.approx(mean, abs=1e-12)
        assert m["accuracy_ci"] == pytest.approx([mean - half, mean + half], abs=1e-9)
    claims = {c["claim"]: c for c in agg["claims"]}
    assert set(claims) == {"ADS+SL > Teacher", "ADS+SL > SL", "SL > Teacher"}
    d = [r[2] - r[1] for r in runs]  # ADS+SL − SL, paired by seed
    half = 2.7764451052 * statistics.stdev(d) / math.sqrt(5)
    c = claims["ADS+SL > SL"]
    assert c["diffs"] == pytest.approx(d) and c["held"] == 4 and c["of"] == 5
    assert c["diff_ci"] == pytest.approx([statistics.mean(d) - half, statistics.mean(d) + half], abs=1e-9)
    assert "| ADS+SL > SL |" in claims_table(agg) and "4/5 seeds" in claims_table(agg)
    json.dumps(agg)  # aggregate.json is plain JSON


def test_one_seed_has_no_interval():
    assert mean_interval([0.5])["half"] is None
    agg = aggregate([_report(0, (0.5, 0.6, 0.7))])
    assert agg["models"][0]["accuracy_ci"] == [None, None]


def test_aggregate_sets_average_rows_purity_and_counts_with_missing_classes_as_zero():
    runs = []
    for seed, (rows, purity, counts) in enumerate([(10, 0.9, {"a": 6, "b": 4}), (20, 0.7, {"a": 20})]):
        rep = _report(seed, (0.5, 0.6, 0.7))
        rep["sets"] = [{"name": "ads", "strategy": "ads", "rows": rows, "pair_purity": purity,
                        "label_counts": counts, "true_family_counts": counts},
                       {"name": f"only_in_{seed}", "strategy": "du", "rows": 1}]
        runs.append(rep)
    sets = aggregate(runs)["sets"]
    assert [s["name"] for s in sets] == ["ads"]  # only sets every seed has
    ads = sets[0]
    assert ads["rows_mean"] == 15 and ads["pair_purity_mean"] == pytest.approx(0.8)
    assert ads["label_counts_mean"] == {"a": 13.0, "b": 2.0} and ads["label_precision_mean"] is None
