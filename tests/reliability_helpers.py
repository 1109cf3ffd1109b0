"""Shared by the reliability tests: the real CLIs in a subprocess (so a crash point or a kill -9 ends a
real process), and what a store holds afterwards."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from schemas import reading

ROOT = Path(__file__).resolve().parents[1]
CURATOR = "import sys; from curator.cli import main; main(sys.argv[1:])"
TRAINER = "import sys; from trainer.cli import main; main(sys.argv[1:])"


def env_with(**extra) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE", "PYTHONPATH": str(ROOT)}
    env.pop("CURATOR_CRASH_AT", None)
    env.pop("CURATOR_CRASH_SKIP", None)
    return {**env, **{k: str(v) for k, v in extra.items()}}


def start(program: str, *args, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", program, *map(str, args)], env=env or env_with(), cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def run(program: str, *args, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", program, *map(str, args)], env=env or env_with(), cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


def curator(store_uri: str, *args, crash: str | None = None, skip: int = 0, timeout: float = 300):
    env = env_with(CURATOR_CRASH_AT=crash, CURATOR_CRASH_SKIP=skip) if crash else env_with()
    return run(CURATOR, "--store", store_uri, *args, env=env, timeout=timeout)


def ids(store_uri: str, table: str, column: str) -> list:
    if table not in reading.table_names(store_uri):
        return []
    return reading.read_table(store_uri, table, columns=[column]).column(0).to_pylist()


def leftovers(folder: Path) -> list[str]:
    """Names an interrupted checkpoint save may leave behind (none after a finished start)."""
    return sorted(p.name for p in Path(folder).iterdir()
                  if p.name.startswith((".staging-", ".next")) or p.name.endswith(".old"))
