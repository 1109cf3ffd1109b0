"""The demo corpus: captioned `paired` clips, an unpaired `wild` pool, and an ESC-50-style `eval` set.

Layout written under OUT (all paths in files are relative to OUT, so two runs in different folders
are byte-identical):

    paired/audio/paired_00000.wav   paired/captions.csv   (Clotho: file_name,caption_1..caption_k)
    wild/audio/wild_000000.wav                            (no captions, no labels)
    eval/audio/<fold>-<id>-A-<target>.wav   eval/meta.csv (ESC-50 columns)   eval/labels.txt
    ground_truth.csv   every clip's split, family label(s) and mixture SNR, for analysis only
    manifest.json      counts per split and family, the rare classes, the settings

The rare classes are few in `paired` and plentiful in `wild`: what a teacher trained on the paired
part is weak at, and what curation from the wild pool can recover.

Determinism: every clip draws from its own generator seeded by (seed, split, index), so a clip
does not depend on how many came before it, and the same seed gives byte-identical files.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import soundfile as sf

from curator.demo import captions, dsp, sounds
from schemas.errors import ParameterError
from schemas.tables import PROMPT_TEMPLATE

KIND = "curator-demo-corpus"
SPLITS = ("paired", "wild", "eval")
DEFAULT_RARE = ("dog bark", "bird chirp", "water stream")
ESC50_COLUMNS = ["filename", "fold", "target", "category", "esc10", "src_file", "take"]
SCALES = {
    "tiny": dict(paired=60, wild=100, eval=40, min_seconds=1.0, max_seconds=2.0, captions_per_clip=2),
    "small": dict(paired=600, wild=1500, eval=300, min_seconds=2.0, max_seconds=4.0, captions_per_clip=5),
    "default": dict(paired=2000, wild=8000, eval=500, min_seconds=2.0, max_seconds=5.0, captions_per_clip=5),
}


@dataclass(frozen=True)
class CorpusConfig:
    paired: int = 60
    wild: int = 100
    eval: int = 40
    seed: int = 0
    sample_rate: int = 16000
    min_seconds: float = 1.0
    max_seconds: float = 2.0
    captions_per_clip: int = 2
    rare: tuple[str, ...] = DEFAULT_RARE
    rare_share_paired: float = 0.1   # a rare family's weight in `paired` relative to a common one
    rare_share_wild: float = 1.5     # ... and in `wild`, where curation should find them
    mix_fraction: float = 0.15       # share of paired / wild clips that mix two families
    snr_db: tuple[float, float] = (0.0, 10.0)  # primary over secondary, so the label is the louder one
    level_dbfs: tuple[float, float] = (-34.0, -14.0)
    folds: int = 5
    speech: str = "auto"             # auto: only if espeak-ng is installed; on: require it; off
    families: tuple[str, ...] = field(default_factory=tuple)  # empty = all available

    @classmethod
    def for_scale(cls, scale: str, **overrides) -> "CorpusConfig":
        if scale not in SCALES:
            raise ParameterError(f"scale {scale!r}: choose one of {', '.join(SCALES)}")
        given = {k: v for k, v in overrides.items() if v is not None}
        return cls(**{**SCALES[scale], **given})


def resolve_families(cfg: CorpusConfig) -> tuple[list[str], dict[str, str]]:
    """Families to generate and those skipped (with the reason)."""
    wanted = list(cfg.families) or list(sounds.FAMILIES)
    unknown = [f for f in wanted if f not in sounds.FAMILIES]
    if unknown:
        raise ParameterError(f"family {unknown[0]!r} unknown; choose from {', '.join(sounds.FAMILIES)}")
    if cfg.speech not in ("auto", "on", "off"):
        raise ParameterError(f"speech {cfg.speech!r}: choose auto, on or off")
    skipped = {}
    if "speech" in wanted:
        if cfg.speech == "off":
            skipped["speech"] = "disabled (--speech off)"
        elif not sounds.speech_available():
            if cfg.speech == "on":
                raise ParameterError("speech on: the espeak-ng binary is not installed (apt install espeak-ng)")
            skipped["speech"] = "espeak-ng is not installed"
    fams = [f for f in wanted if f not in skipped]
    return fams, skipped


def validate(cfg: CorpusConfig, families: list[str]) -> None:
    for name in SPLITS:
        if getattr(cfg, name) < 0:
            raise ParameterError(f"{name} count {getattr(cfg, name)}: must be >= 0")
    if not 0 < cfg.min_seconds <= cfg.max_seconds:
        raise ParameterError(f"clip length {cfg.min_seconds}-{cfg.max_seconds} s: need 0 < min <= max")
    if cfg.sample_rate < 8000:
        raise ParameterError(f"sample rate {cfg.sample_rate}: must be >= 8000 Hz")
    if cfg.captions_per_clip < 1:
        raise ParameterError(f"captions per clip {cfg.captions_per_clip}: must be >= 1")
    if not 0 <= cfg.mix_fraction <= 1:
        raise ParameterError(f"mix fraction {cfg.mix_fraction}: must be in [0, 1]")
    bad = [r for r in cfg.rare if r not in sounds.FAMILIES]
    if bad:
        raise ParameterError(f"rare class {bad[0]!r} is not a family; choose from {', '.join(sounds.FAMILIES)}")
    if len(families) < 2:
        raise ParameterError(f"need at least 2 families, have {len(families)}")


def allocate(total: int, weights: dict[str, float], minimum: int = 0) -> dict[str, int]:
    """Split `total` over keys proportionally to weights (largest remainder), each at least `minimum`
    when the total allows it. Deterministic: ties break in key order."""
    keys = list(weights)
    w = np.array([weights[k] for k in keys], dtype=np.float64)
    exact = total * w / w.sum()
    counts = np.floor(exact).astype(int)
    order = np.argsort(-(exact - counts), kind="stable")
    counts[order[: total - counts.sum()]] += 1
    if minimum and total >= minimum * len(keys):
        for i in np.flatnonzero(counts < minimum):
            while counts[i] < minimum:
                counts[int(np.argmax(counts))] -= 1
                counts[i] += 1
    return {k: int(c) for k, c in zip(keys, counts)}


def split_weights(cfg: CorpusConfig, families: list[str], split: str) -> dict[str, float]:
    share = {"paired": cfg.rare_share_paired, "wild": cfg.rare_share_wild, "eval": 1.0}[split]
    return {f: (share if f in cfg.rare else 1.0) for f in families}


def plan_split(cfg: CorpusConfig, families: list[str], split: str) -> list[tuple[str, ...]]:
    """The clip recipes of one split in file order: (family,) or (primary, secondary) for mixtures."""
    total = getattr(cfg, split)
    weights = split_weights(cfg, families, split)
    rng = np.random.default_rng([cfg.seed, SPLITS.index(split), 10**6])
    n_mix = 0 if split == "eval" else int(round(total * cfg.mix_fraction))
    singles = allocate(total - n_mix, weights, minimum=1 if split != "eval" else 0)
    recipes: list[tuple[str, ...]] = [(f,) for f in families for _ in range(singles[f])]
    p = np.array([weights[f] for f in families]) / sum(weights.values())
    for _ in range(n_mix):
        a, b = rng.choice(len(families), size=2, replace=False, p=p)
        recipes.append((families[a], families[b]))
    if split == "eval":
        return recipes  # eval is ordered by class; folds are assigned round-robin within a class
    return [recipes[i] for i in rng.permutation(len(recipes))]


@dataclass
class Clip:
    split: str
    index: int
    recipe: tuple[str, ...]
    wave: np.ndarray
    captions: list[str]
    snr_db: float | None
    level_dbfs: float


def render(cfg: CorpusConfig, split: str, index: int, recipe: tuple[str, ...]) -> Clip:
    """Synthesise one clip (and its captions) from its own seeded generator."""
    rng = np.random.default_rng([cfg.seed, SPLITS.index(split), index])
    sr = cfg.sample_rate
    n = int(round(rng.uniform(cfg.min_seconds, cfg.max_seconds) * sr))
    level = float(rng.uniform(*cfg.level_dbfs))
    wave, attrs = sounds.synthesise(recipe[0], rng, n, sr)
    wave = dsp.unit_rms(wave)
    snr = None
    if len(recipe) == 2:
        other, attrs_b = sounds.synthesise(recipe[1], rng, n, sr)
        snr = round(float(rng.uniform(*cfg.snr_db)), 2)
        wave = wave + dsp.unit_rms(other) * dsp.db(-snr)
    floor = rng.standard_normal(n) * dsp.db(-rng.uniform(35, 55))
    wave, level = dsp.to_level(dsp.unit_rms(wave) + floor, level)
    texts: list[str] = []
    if split == "paired":
        if snr is None:
            make = lambda r: captions.caption(r, recipe[0], attrs, level)  # noqa: E731
        else:
            make = lambda r: captions.mix_caption(r, recipe[0], attrs, recipe[1], attrs_b, level, level - snr)  # noqa: E731
        texts = captions.distinct(make, cfg.captions_per_clip, rng)
    return Clip(split, index, recipe, wave.astype(np.float32), texts, snr, level)


def clip_name(clip: Clip, labels: list[str], fold: int) -> str:
    if clip.split == "paired":
        return f"paired_{clip.index:05d}.wav"
    if clip.split == "wild":
        return f"wild_{clip.index:06d}.wav"
    return f"{fold}-{100000 + clip.index}-A-{labels.index(clip.recipe[0])}.wav"


def write_wav(path: Path, wave: np.ndarray, sr: int) -> None:
    """16-bit PCM WAV (no timestamp chunks, so files are byte-reproducible). Encoding in memory
    avoids libsndfile's fsync on close, which cost more than synthesising the clip."""
    buf = io.BytesIO()
    sf.write(buf, wave, sr, format="WAV", subtype="PCM_16")
    path.write_bytes(buf.getvalue())


def _write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(header)
        w.writerows(rows)


def _eval_folds(recipes: list[tuple[str, ...]], folds: int) -> list[int]:
    seen: dict[str, int] = {}
    out = []
    for r in recipes:
        out.append(seen.get(r[0], 0) % folds + 1)
        seen[r[0]] = seen.get(r[0], 0) + 1
    return out


CORPUS_OUTPUTS = ("paired", "wild", "eval", "ground_truth.csv", "manifest.json")


def prepare_output(out: str | os.PathLike, kind: str, outputs: tuple[str, ...], force: bool) -> Path:
    """Make sure `out` can take a fresh corpus: empty, or (with force) a previous corpus of the same
    kind, whose generated files are removed so no stale clip of a bigger earlier run survives.
    Never deletes a folder that this generator did not write."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ParameterError(f"{out}: exists and is not a folder")
    if not out.exists() or not any(out.iterdir()):
        return out
    manifest = out / "manifest.json"
    try:
        previous = json.loads(manifest.read_text(encoding="utf-8")).get("kind")
    except (OSError, ValueError, AttributeError):
        previous = None
    if previous != kind:
        raise ParameterError(f"{out}: folder is not empty and holds no {kind} (no manifest.json of that kind); "
                             "choose an empty or new folder")
    if not force:
        raise ParameterError(f"{out}: already holds a {kind}; pass --force to replace it")
    for name in outputs:
        target = out / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
    return out


def generate_corpus(out: str | os.PathLike, cfg: CorpusConfig, progress=None, force: bool = False) -> dict:
    """Write the corpus under `out` and return the manifest (also written to out/manifest.json).

    `progress(n)` is called after each clip if given (the CLI draws a bar with it).
    """
    families, skipped = resolve_families(cfg)
    validate(cfg, families)
    out = prepare_output(out, KIND, CORPUS_OUTPUTS, force)
    labels = list(families)
    truth: list[list] = []
    caption_rows: list[list] = []
    meta_rows: list[list] = []
    counts: dict[str, dict] = {}
    for split in SPLITS:
        recipes = plan_split(cfg, families, split)
        folds = _eval_folds(recipes, cfg.folds) if split == "eval" else [0] * len(recipes)
        folder = out / split / "audio"
        folder.mkdir(parents=True, exist_ok=True)
        per_family = {f: 0 for f in families}
        for i, recipe in enumerate(recipes):
            clip = render(cfg, split, i, recipe)
            name = clip_name(clip, labels, folds[i])
            write_wav(folder / name, clip.wave, cfg.sample_rate)
            for f in recipe:
                per_family[f] += 1
            truth.append([split, name, f"{split}/audio/{name}", recipe[0], ";".join(recipe),
                          "" if clip.snr_db is None else clip.snr_db, round(len(clip.wave) / cfg.sample_rate, 4)])
            if split == "paired":
                caption_rows.append([name, *clip.captions])
            if split == "eval":
                meta_rows.append([name, folds[i], labels.index(recipe[0]), recipe[0], "False", 100000 + i, "A"])
            if progress:
                progress(1)
        counts[split] = {"clips": len(recipes), "mixtures": sum(len(r) == 2 for r in recipes),
                         "families": per_family}
    _write_csv(out / "paired" / "captions.csv",
               ["file_name", *[f"caption_{j + 1}" for j in range(cfg.captions_per_clip)]], caption_rows)
    _write_csv(out / "eval" / "meta.csv", ESC50_COLUMNS, meta_rows)
    (out / "eval" / "labels.txt").write_text("".join(f"{lab}\n" for lab in labels), encoding="utf-8")
    _write_csv(out / "ground_truth.csv",
               ["split", "file_name", "path", "label", "labels", "snr_db", "duration_s"], truth)
    manifest = _manifest(cfg, families, skipped, counts)
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return manifest


def _manifest(cfg: CorpusConfig, families, skipped, counts) -> dict:
    settings = asdict(replace(cfg, families=tuple(families)))
    return {
        "kind": KIND, "format": 1, "seed": cfg.seed, "sample_rate": cfg.sample_rate,
        "labels": list(families), "rare_classes": [r for r in cfg.rare if r in families],
        "skipped_families": skipped, "splits": counts,
        "captions": {"file": "paired/captions.csv", "per_clip": cfg.captions_per_clip,
                     "total": counts["paired"]["clips"] * cfg.captions_per_clip},
        "label_prompt": PROMPT_TEMPLATE,
        "files": {"paired_audio": "paired/audio", "wild_audio": "wild/audio", "eval_audio": "eval/audio",
                  "eval_meta": "eval/meta.csv", "eval_labels": "eval/labels.txt",
                  "ground_truth": "ground_truth.csv"},
        "settings": {k: (list(v) if isinstance(v, tuple) else v) for k, v in settings.items()},
    }


def total_clips(cfg: CorpusConfig) -> int:
    return cfg.paired + cfg.wild + cfg.eval
