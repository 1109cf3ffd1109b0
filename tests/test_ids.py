"""Identity is exact: an id never merges two different files."""

from __future__ import annotations

import pytest

from schemas.errors import SchemaError
from schemas.ids import audio_id, normalise_relative


def test_dot_prefixed_paths_are_different_clips():
    assert audio_id("s", ".cache/x.wav") != audio_id("s", "cache/x.wav")
    assert audio_id("s", "..x.wav") != audio_id("s", "x.wav")


def test_spellings_of_one_path_share_an_id():
    assert audio_id("s", "./a/x.wav") == audio_id("s", "a/x.wav") == audio_id("s", "a\\x.wav") == audio_id("s", "a//x.wav")
    assert normalise_relative("a/./b/../x.wav") == "a/x.wav"


@pytest.mark.parametrize("bad", ["", ".", "/abs/x.wav"])
def test_a_path_that_is_not_relative_is_refused(bad):
    with pytest.raises(SchemaError):
        audio_id("s", bad)


def test_ingest_keeps_dot_cache_and_cache_apart(cli, store, tone, tmp_path):
    tone(tmp_path / "clips" / ".cache" / "x.wav", freq=330.0)
    tone(tmp_path / "clips" / "cache" / "x.wav", freq=440.0)
    result = cli.curator("ingest", "audio", tmp_path / "clips", "--source", "s")
    assert result.code == 0, result.output
    rows = store.read("audio").to_pylist()
    assert sorted(r["uri"].rsplit("clips/", 1)[1] for r in rows) == [".cache/x.wav", "cache/x.wav"]
    assert len({r["audio_id"] for r in rows}) == 2
