"""Start-up cost of the `curator` CLI: import time and wall time per command, this tree against a
baseline commit (default: the last commit before the re-layout), measured side by side in one run.

    python scripts/bench_startup.py [--baseline REV] [--repeat 5] [--out docs/bench/startup.md]

For each command it reports the sum of `python -X importtime` top-level imports, the wall time of
the whole process (best of --repeat) and which heavy modules got imported. The baseline is checked
out into a temporary `git worktree` and put first on PYTHONPATH; both run in this .venv.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BASELINE = "918f923"  # "test: land the kill -9 mid-shard": the flat layout, every command imported at start
HEAVY = ("lancedb", "lance", "torch", "transformers", "duckdb", "polars")
COMMANDS = [["--help"], ["query", "--help"], ["build", "ads", "--help"], ["tables"], ["query", "select count(*) from audio"],
            ["sets", "list"]]
PROBE = ("import sys\nfrom curator.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
         "print('HEAVY', ' '.join(m for m in {heavy!r} if m in sys.modules), file=sys.stderr)")


def import_seconds(stderr: str) -> float:
    total = 0
    for line in stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        _, cumulative, name = line.split("|", 2)
        if name.startswith(" ") and not name.startswith("  "):  # top level: one space of indent
            total += int(cumulative)
    return total / 1e6


def measure(tree: Path, args: list[str], store: str, repeat: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree), "CURATOR_STORE": store}
    code = PROBE.format(heavy=HEAVY)
    best_wall, best_import, heavy = float("inf"), float("inf"), ""
    for _ in range(repeat):
        t0 = time.perf_counter()
        p = subprocess.run([sys.executable, "-X", "importtime", "-c", code, *args], cwd=tempfile.gettempdir(), env=env,
                           capture_output=True, text=True)
        best_wall = min(best_wall, time.perf_counter() - t0)
        best_import = min(best_import, import_seconds(p.stderr))
        heavy = next((x[6:] for x in p.stderr.splitlines() if x.startswith("HEAVY")), "")
    return {"wall": best_wall, "imports": best_import, "heavy": heavy.strip() or "none"}


def make_store(path: Path) -> None:
    """A small real store (audio rows and one set) so `tables`, `query` and `sets list` do real work."""
    import numpy as np
    import soundfile as sf

    clips = path.parent / "clips"
    clips.mkdir(parents=True, exist_ok=True)
    for i in range(4):
        sf.write(clips / f"c{i}.wav", (0.1 * np.sin(np.arange(16000) * (i + 1) / 10)).astype(np.float32), 16000)
    (path.parent / "captions.csv").write_text("file_name,caption\n" + "".join(f"c{i}.wav,tone {i}\n" for i in range(4)))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CURATOR_STORE": str(path)}
    curator = [sys.executable, "-c", "import sys; from curator.cli import main; main(sys.argv[1:])"]
    for args in (["ingest", "audio", str(clips), "--source", "c"],
                 ["ingest", "captions", str(path.parent / "captions.csv"), "--source", "c", "--audio-source", "c"],
                 ["build", "pairs", "--name", "p"]):
        subprocess.run(curator + args, env=env, check=True, capture_output=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--baseline", default=BASELINE)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--out", default=str(ROOT / "docs" / "bench" / "startup.md"))
    a = ap.parse_args()
    load = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        old = tmp / "baseline"
        subprocess.run(["git", "worktree", "add", "--detach", "-q", str(old), a.baseline], cwd=ROOT, check=True)
        try:
            store = tmp / "store"
            make_store(store)
            rows = []
            for args in COMMANDS:
                before = measure(old, args, str(store), a.repeat)
                after = measure(ROOT, args, str(store), a.repeat)
                rows.append((" ".join(args), before, after))
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(old)], cwd=ROOT, check=False)
    lines = [
        "## CLI start-up (`scripts/bench_startup.py`)", "",
        f"`python scripts/bench_startup.py` (baseline {a.baseline}, best of {a.repeat}); "
        f"load average at start {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} on {os.cpu_count()} cores.", "",
        "| command | imports before (s) | imports now (s) | wall before (s) | wall now (s) | heavy modules before | heavy modules now |",
        "|---|---|---|---|---|---|---|",
    ]
    notes = [
        "",
        "Imports are the sum of top-level `python -X importtime` entries (cumulative seconds), wall is the whole",
        "process. Before the re-layout every command imported every command module, and with it LanceDB (~1.7-2.8 s",
        "here); now `--help` imports only click and the command table, and the model-free commands read the store",
        "through `lance` alone. The load average is printed because these are small numbers on a shared 2-core box.",
    ]
    for name, b, n in rows:
        lines.append(f"| `curator {name}` | {b['imports']:.2f} | {n['imports']:.2f} | {b['wall']:.2f} | {n['wall']:.2f} "
                     f"| {b['heavy']} | {n['heavy']} |")
    text = "\n".join(lines + notes) + "\n"
    Path(a.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
