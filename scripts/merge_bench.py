"""Gather the sections the bench_*.py scripts write under docs/bench/ into docs/BENCHMARKS.md."""

from pathlib import Path

ORDER = ["startup", "store", "embed", "match", "scale", "scale_notes", "hot_paths", "hot_paths_notes", "gpu", "train", "demo"]
root = Path(__file__).resolve().parents[1] / "docs"
sections = sorted((root / "bench").glob("*.md"), key=lambda p: (ORDER.index(p.stem) if p.stem in ORDER else 99, p.stem))
head = ("# Benchmarks\n\nEvery figure below is written by a `scripts/bench_*.py` run (its section names the "
        "script and the machine); each compares this project with what a user would otherwise use, side by "
        "side in the same run. Regenerate a section by rerunning its script, then `python scripts/merge_bench.py`.\n")
(root / "BENCHMARKS.md").write_text(head + "".join("\n" + p.read_text().strip() + "\n" for p in sections))
print(f"wrote {root / 'BENCHMARKS.md'} from {len(sections)} sections")
