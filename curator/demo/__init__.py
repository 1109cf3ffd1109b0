"""Deterministic synthetic corpora for demos and tests.

`generate_corpus` writes a captioned / unpaired / ESC-50-style evaluation corpus of synthesised
sound families; `generate_scenes` writes acoustic scenes whose sound and class priors depend on
city and time of day. numpy renders the audio; soundfile writes it.
"""

from curator.demo.corpus import SCALES, CorpusConfig, generate_corpus
from curator.demo.scenes import SCENES, generate_scenes
from curator.demo.sounds import FAMILIES

__all__ = ["SCALES", "SCENES", "FAMILIES", "CorpusConfig", "generate_corpus", "generate_scenes"]
