"""The house rules (DESIGN.md section 2) hold, and the checks that enforce them catch a violation.

`scripts/test.sh` runs `lint-imports` and `ruff check` before pytest; these tests show that those
checks would fail on a deliberately broken copy of the tree, and that the CLI's start-up stays light.
"""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _copy_tree(dst: Path) -> None:
    for package in ("schemas", "curator", "trainer"):
        shutil.copytree(ROOT / package, dst / package, ignore=shutil.ignore_patterns("__pycache__", "assets"))
    shutil.copy(ROOT / "pyproject.toml", dst / "pyproject.toml")


def _lint_imports(cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(cwd)}
    return subprocess.run([str(BIN / "lint-imports"), "--no-cache"], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120)


@pytest.mark.parametrize("module, line, broken", [
    ("schemas/ids.py", "import curator.store.store", "schemas imports nothing of ours BROKEN"),
    ("trainer/train/losses.py", "from curator.match import engine", "trainer never imports curator BROKEN"),
    ("curator/store/store.py", "import curator.cli.common", "curator: the CLI on top"),
    ("curator/store/sql.py", "from curator.curate import rows", "curator: the CLI on top"),
])
def test_import_contracts_catch_a_violation(tmp_path, module, line, broken):
    _copy_tree(tmp_path)
    assert _lint_imports(tmp_path).returncode == 0, "the unmodified copy should keep every contract"
    target = tmp_path / module
    target.write_text(target.read_text() + f"\n{line}  # deliberate violation\n")
    result = _lint_imports(tmp_path)
    assert result.returncode != 0
    assert broken in result.stdout


def test_ruff_catches_an_unused_import(tmp_path):
    _copy_tree(tmp_path)
    bad = tmp_path / "curator" / "store" / "sql.py"
    bad.write_text("import os  # deliberate violation\n" + bad.read_text())
    result = subprocess.run([str(BIN / "ruff"), "check", "--no-cache", "."], cwd=tmp_path, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 1 and "F401" in result.stdout and "sql.py" in result.stdout


def _modules_after(args: list[str], cwd: Path) -> set[str]:
    """Run `curator ARGS` in a fresh interpreter and return the top-level modules it imported."""
    code = ("import sys\nfrom curator.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
            "print('MODULES', ' '.join(sorted({m.split('.')[0] for m in sys.modules})))")
    result = subprocess.run([sys.executable, "-c", code, *args], cwd=cwd, capture_output=True, text=True, timeout=120)
    line = next(x for x in result.stdout.splitlines() if x.startswith("MODULES"))
    return set(line.split()[1:])


@pytest.mark.parametrize("args", [["--help"], ["query", "--help"], ["embed", "--help"], ["build", "du", "--help"],
                                  ["match", "--help"], ["pseudo-label", "--help"], ["sets", "list", "--help"]])
def test_help_imports_neither_lancedb_nor_torch(tmp_path, args):
    loaded = _modules_after(args, tmp_path)
    assert "curator" in loaded
    assert not {"lancedb", "torch", "transformers"} & loaded


def test_model_free_commands_import_no_torch(cli, store_uri, tone, tmp_path):
    for name in ("a.wav", "b.wav"):
        tone(tmp_path / "clips" / name)
    (tmp_path / "captions.csv").write_text("file_name,caption\na.wav,a tone\nb.wav,another tone\n")
    assert cli.curator("ingest", "audio", tmp_path / "clips", "--source", "c").code == 0
    assert cli.curator("ingest", "captions", tmp_path / "captions.csv", "--source", "c", "--audio-source", "c").code == 0
    assert cli.curator("build", "pairs", "--name", "p").code == 0
    for args in (["--store", store_uri, "tables"], ["--store", store_uri, "query", "select count(*) n from audio"],
                 ["--store", store_uri, "sets", "list"], ["--store", store_uri, "versions", "audio"]):
        loaded = _modules_after(args, tmp_path)
        assert "duckdb" in loaded or "lance" in loaded, args  # the command really read the store
        assert not {"torch", "transformers", "lancedb"} & loaded, args


def test_lazy_command_table_matches_the_commands():
    """`curator --help` lists commands from a static table; each entry must name a real command
    with the same one-line help, so the fast listing never lies."""
    from curator.cli import COMMANDS, cli

    for name, (module, attr, short) in COMMANDS.items():
        command = getattr(importlib.import_module(f"curator.cli.{module}"), attr)
        assert command.name == name
        assert command.get_short_help_str(limit=200) == short
        assert cli.get_command(None, name) is command
