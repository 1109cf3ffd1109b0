"""Shared test fixtures: real store folders, real audio files, the real CLI."""

from __future__ import annotations

import os

# torch's spinning OpenMP threads slow everything 2-4x when another process holds a core.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import soundfile as sf  # noqa: E402
from click.testing import CliRunner  # noqa: E402


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass


def write_tone(path, seconds: float = 1.0, sr: int = 16000, freq: float = 440.0, channels: int = 1,
               subtype: str | None = None, seed: int = 0):
    """Write a real audio file (format from the suffix) and return its path."""
    path = os.fspath(path)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    t = np.arange(int(seconds * sr)) / sr
    rng = np.random.default_rng(seed)
    wave = 0.5 * np.sin(2 * np.pi * freq * t) + 0.01 * rng.standard_normal(t.shape)
    if channels > 1:
        wave = np.stack([wave] * channels, axis=1)
    sf.write(path, wave.astype(np.float32), sr, subtype=subtype)
    return path


@pytest.fixture
def tone():
    return write_tone


@pytest.fixture
def store_uri(tmp_path):
    return str(tmp_path / "store")


@pytest.fixture
def store(store_uri):
    from curator.store.store import Store

    return Store.open(store_uri)


class Cli:
    """Runs `curator` / `trainer` exactly as a user types it, against one store."""

    def __init__(self, store_uri: str):
        self.store_uri = store_uri
        self.runner = CliRunner()

    def _run(self, group, args):
        from curator.cli.common import run_main

        result = {}

        def call(argv):
            result["code"] = run_main(group, argv)

        # run_main returns a code instead of exiting; invoke through CliRunner for I/O capture.
        import click

        @click.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
        @click.pass_context
        def shim(ctx):
            call(["--store", self.store_uri, *[str(a) for a in args]])

        out = self.runner.invoke(shim, [], catch_exceptions=False)
        out.code = result.get("code", out.exit_code)
        return out

    def curator(self, *args):
        from curator.cli import cli

        return self._run(cli, args)

    def trainer(self, *args):
        from trainer.cli import cli

        return self._run(cli, args)


@pytest.fixture
def cli(store_uri):
    return Cli(store_uri)


def pytest_collection_modifyitems(config, items):
    """Tests marked slow (the end-to-end demo, the kill -9 campaign) first: under the two xdist
    workers of scripts/test.sh their files then start at once instead of ending the run alone
    (the demo test alone is ~5 of the suite's minutes). The order is otherwise unchanged."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
