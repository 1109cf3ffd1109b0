"""Acoustic scenes whose sound and whose class priors depend on city and time of day.

Built so that context visibly helps (the city/time workflow of seeds 000 and 003):
- priors p(scene | city, part of day) are strongly skewed: malls and metros close at night,
  parks empty after dark, some cities' recordings are mostly airport, others mostly mall;
- "shopping mall" and "airport" are rendered by the same indoor recipe (reverberant babble, the
  same announcement chime), told apart only by weak optional cues (mall music, jet rumble), so audio
  alone confuses them while city + hour disambiguates;
- activity follows the hour (a street at 3 am has a car or two and a quiet floor, at 6 pm a stream
  of traffic), and each city has its own hum and spectral tilt.

Files under OUT: audio/scene_00000.wav, scenes.csv (filename,scene_label,city,timestamp,labelled;
filename is relative to OUT as in TAU's meta.csv; scene_label empty where unlabelled), ground_truth.csv (every clip's true scene and part of day),
labels.txt, manifest.json.
"""

from __future__ import annotations

import csv
import json
import os
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np

from curator.demo import dsp, sounds
from curator.demo.corpus import prepare_output, write_wav
from schemas.errors import ParameterError

SCENES = ["park", "street traffic", "metro station", "shopping mall", "airport"]
PARTS = ["morning", "afternoon", "evening", "night"]
# city -> (scene weights in SCENES order, mains-like hum Hz, spectral tilt dB/oct)
CITIES = {
    "barcelona": ([1.0, 1.2, 1.5, 0.3, 0.2], 100.0, -1.0),
    "helsinki": ([0.6, 1.0, 0.4, 1.6, 0.1], 50.0, -4.0),
    "london": ([1.0, 1.0, 1.5, 0.1, 1.6], 100.0, -2.5),
    "paris": ([1.2, 1.0, 1.0, 1.4, 0.1], 50.0, -2.0),
    "vienna": ([0.8, 1.2, 0.6, 0.1, 1.6], 150.0, -3.0),
}
# scene -> multiplier per part of day (malls/metros closed at night, airports busiest at night)
PART_FACTORS = {
    "park": [1.5, 1.5, 0.6, 0.05], "street traffic": [1.0, 1.0, 1.0, 1.0],
    "metro station": [1.3, 1.0, 1.0, 0.03], "shopping mall": [0.3, 1.6, 1.3, 0.02],
    "airport": [0.8, 0.6, 0.8, 2.5],
}
CONFUSABLE = ("shopping mall", "airport")
KIND = "curator-demo-scenes"
SCENE_OUTPUTS = ("audio", "scenes.csv", "ground_truth.csv", "labels.txt", "manifest.json")


def part_of_day(hour: int) -> str:
    return "morning" if 6 <= hour < 12 else "afternoon" if 12 <= hour < 18 else "evening" if 18 <= hour < 22 else "night"


def priors(city: str, part: str) -> np.ndarray:
    """p(scene | city, part of day) in SCENES order."""
    w = np.array(CITIES[city][0]) * np.array([PART_FACTORS[s][PARTS.index(part)] for s in SCENES])
    return w / w.sum()


def activity(hour: float) -> float:
    """How busy places are at this hour: ~0.1 at 4 am, ~1 around midday and the evening rush."""
    return float(0.1 + 0.9 * np.clip(np.sin(np.pi * (hour - 5.0) / 18.0), 0.0, 1.0) ** 0.7) if 5 <= hour <= 23 else 0.1


def _babble(rng, n, sr, density):
    """Crowd: speech-band noise whose syllable-rate envelopes average out as the crowd grows."""
    voices = max(1, int(round(2 + 10 * density)))
    ctl = max(2, int(n / sr * 100))  # envelopes at a 100 Hz control rate, one interpolation at the end
    env = np.mean([np.maximum(dsp.slow_random(rng, ctl, 100, rng.uniform(3, 6)), 0) for _ in range(voices)], axis=0)
    env = np.interp(np.linspace(0, ctl - 1, n), np.arange(ctl), env)
    low, high = dsp.noise(rng, n, sr, 200, 1200), dsp.noise(rng, n, sr, 1200, 3500)
    return (low + 0.4 * high) * env


def _chime(rng, n, sr):
    """Two-note announcement chime (shared by every indoor public place, hence confusing)."""
    out = np.zeros(n)
    start = int(rng.uniform(0, max(0.1, n / sr - 1.2)) * sr)
    for i, f in enumerate(rng.choice([[660, 520], [784, 622], [880, 698]])):
        m = int(0.6 * sr)
        t = np.arange(m) / sr
        note = np.sin(2 * np.pi * f * t) * np.exp(-t / 0.25) * np.minimum(t / 0.01, 1)
        dsp.place(out, [start + i * int(0.45 * sr)], note)
    return out


def _cars(rng, n, sr, act):
    t = dsp.times(n, sr)
    out = dsp.noise(rng, n, sr, 30, 800, -6) * (0.2 + 0.8 * act)  # distant traffic bed
    tyres = dsp.noise(rng, n, sr, 300, 5000, -2)  # one tyre-noise buffer, offset per car
    for _ in range(rng.poisson(0.3 + 2.5 * act * n / sr / 3)):
        c, w = rng.uniform(-0.5, n / sr + 0.5), rng.uniform(0.5, 1.5)
        bump = np.exp(-0.5 * ((t - c) / w) ** 2)
        f0 = rng.uniform(25, 70) * (1 - 0.05 * np.tanh((t - c) / w))
        eng = dsp.harmonic(dsp.phase(f0, sr), f0, [1, 0.6, 0.4, 0.3, 0.2, 0.1], sr)
        out += bump * (0.6 * eng + 1.2 * np.roll(tyres, int(rng.integers(n))))
    if rng.random() < 0.3 * act:
        beep_ = sounds.beep(rng, int(0.5 * sr), sr)[0]
        dsp.place(out, [int(rng.integers(0, max(1, n - sr // 2)))], 0.8 * dsp.unit_rms(beep_))
    return out


def _park(rng, n, sr, hour, act):
    wind = dsp.noise(rng, n, sr, 40, 600, -3) * (1 + 0.5 * dsp.slow_random(rng, n, sr, 0.5))
    out = 0.5 * wind + 0.3 * dsp.noise(rng, n, sr, 30, 500, -6) * act
    if part_of_day(hour) == "night":  # crickets instead of birds
        crick = np.sin(2 * np.pi * rng.uniform(4000, min(5500, 0.4 * sr)) * dsp.times(n, sr))
        out += 0.4 * crick * dsp.gate(n, sr, rng.uniform(0.04, 0.08), 0.5) * dsp.gate(n, sr, 0.8, 0.6)
    else:
        birds = 1.2 if part_of_day(hour) == "morning" else 0.5
        out += birds * dsp.unit_rms(sounds.chirp(rng, n, sr)[0])
        out += 0.2 * act * _babble(rng, n, sr, 0.1)
    if rng.random() < 0.2:
        out += 0.5 * dsp.unit_rms(sounds.bark(rng, n, sr)[0])
    return out


def _metro(rng, n, sr, act):
    t = dsp.times(n, sr)
    c = rng.uniform(0, n / sr)
    swell = np.exp(-0.5 * ((t - c) / rng.uniform(0.8, 2.0)) ** 2)
    f0 = rng.uniform(30, 50) * (1 + 0.3 * np.tanh(t - c))
    train = dsp.harmonic(dsp.phase(f0, sr), f0, [1, 0.8, 0.6, 0.5, 0.4, 0.3, 0.2], sr)
    train = dsp.unit_rms(train) + 0.8 * dsp.noise(rng, n, sr, 60, 1500, -4)
    squeal_f = rng.uniform(2500, min(4000, 0.4 * sr)) * (1 + 0.02 * np.sin(2 * np.pi * 3 * t))
    squeal = np.sin(dsp.phase(squeal_f, sr)) * swell * (rng.random() < 0.6)
    out = swell * train + 0.25 * squeal + 0.6 * act * _babble(rng, n, sr, act)
    if rng.random() < 0.4:
        out += 0.5 * dsp.unit_rms(_chime(rng, n, sr))
    return dsp.reverb(out, sr, rng, rng.uniform(1.5, 2.5), 0.5)


def _indoor_public(rng, n, sr, act, scene):
    """Mall and airport: one recipe (babble, footfall hum, chime, big room) plus a weak cue each."""
    out = _babble(rng, n, sr, 0.2 + 0.8 * act) + 0.3 * dsp.noise(rng, n, sr, 40, 300, -6)
    if rng.random() < 0.35:
        out += 0.4 * dsp.unit_rms(_chime(rng, n, sr))
    if scene == "shopping mall" and rng.random() < 0.4:  # soft background music
        t = dsp.times(n, sr)
        root = rng.uniform(200, 330)
        chord = sum(np.sin(2 * np.pi * root * r * t) for r in (1.0, 1.26, 1.5))
        out += 0.12 * chord * (1 + 0.3 * np.sin(2 * np.pi * rng.uniform(0.5, 2) * t))
    if scene == "airport" and rng.random() < 0.35:  # faint jet rumble through the windows
        out += 0.25 * dsp.noise(rng, n, sr, 50, 900, -5) * (1 + dsp.slow_random(rng, n, sr, 0.3))
    return dsp.reverb(out, sr, rng, rng.uniform(0.9, 1.8), 0.45)


def render_scene(rng, scene: str, city: str, hour: float, n: int, sr: int) -> np.ndarray:
    act = activity(hour)
    if scene == "park":
        wave = _park(rng, n, sr, hour, act)
    elif scene == "street traffic":
        wave = _cars(rng, n, sr, act)
    elif scene == "metro station":
        wave = _metro(rng, n, sr, act)
    else:
        wave = _indoor_public(rng, n, sr, act, scene)
    _, hum_f, tilt = CITIES[city]
    hum = dsp.harmonic(dsp.phase(np.full(n, hum_f), sr), hum_f, [1, 0.5, 0.25], sr)
    wave = dsp.unit_rms(dsp.filtered(wave, sr, 20, 0.45 * sr, tilt + 2.0)) + 0.05 * hum
    level = -36 + 16 * act + rng.uniform(-3, 3)  # quieter when the city sleeps
    return dsp.to_level(wave + rng.standard_normal(n) * 10 ** (-2.5), level)[0].astype(np.float32)


def _write_csv(path: Path, header, rows) -> None:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(header)
        w.writerows(rows)


def plan_scenes(n_clips: int, labelled_fraction: float, seed: int) -> list[dict]:
    """City, time, scene and labelled flag per clip (the scene drawn from the context prior)."""
    if n_clips < 1:
        raise ParameterError(f"clips {n_clips}: must be >= 1")
    if not 0.0 <= labelled_fraction <= 1.0:
        raise ParameterError(f"labelled fraction {labelled_fraction}: must be in [0, 1]")
    rng = np.random.default_rng([seed, 7, 10**6])
    cities = list(CITIES)
    n_lab = int(round(n_clips * labelled_fraction))
    labelled = np.zeros(n_clips, dtype=bool)
    labelled[rng.permutation(n_clips)[:n_lab]] = True
    start = datetime(2023, 1, 1)
    plan = []
    for i in range(n_clips):
        city = cities[int(rng.integers(len(cities)))]
        when = start + timedelta(seconds=int(rng.integers(0, 365 * 86400)))
        part = part_of_day(when.hour)
        scene = SCENES[int(rng.choice(len(SCENES), p=priors(city, part)))]
        plan.append({"index": i, "city": city, "timestamp": when.isoformat(), "hour": when.hour + when.minute / 60,
                     "part_of_day": part, "scene": scene, "labelled": bool(labelled[i])})
    return plan


def generate_scenes(out: str | os.PathLike, n_clips: int, labelled_fraction: float = 0.1, seed: int = 0,
                    sample_rate: int = 16000, seconds: float = 3.0, progress=None, force: bool = False) -> dict:
    """Write the scene corpus under `out` and return its manifest (also out/manifest.json)."""
    if seconds <= 0 or sample_rate < 8000:
        raise ParameterError(f"scene clips: need seconds > 0 and sample rate >= 8000 (got {seconds}, {sample_rate})")
    plan = plan_scenes(n_clips, labelled_fraction, seed)
    out = prepare_output(out, KIND, SCENE_OUTPUTS, force)
    (out / "audio").mkdir(parents=True, exist_ok=True)
    n = int(round(seconds * sample_rate))
    rows, truth = [], []
    for p in plan:
        rng = np.random.default_rng([seed, 7, p["index"]])
        name = f"audio/scene_{p['index']:05d}.wav"  # TAU-style: paths relative to the CSV's folder
        write_wav(out / name, render_scene(rng, p["scene"], p["city"], p["hour"], n, sample_rate),
                  sample_rate)
        lab = "true" if p["labelled"] else "false"
        rows.append([name, p["scene"] if p["labelled"] else "", p["city"], p["timestamp"], lab])
        truth.append([name, p["scene"], p["city"], p["timestamp"], p["part_of_day"], lab])
        if progress:
            progress(1)
    _write_csv(out / "scenes.csv", ["filename", "scene_label", "city", "timestamp", "labelled"], rows)
    _write_csv(out / "ground_truth.csv",
               ["filename", "scene_label", "city", "timestamp", "part_of_day", "labelled"], truth)
    (out / "labels.txt").write_text("".join(f"{s}\n" for s in SCENES), encoding="utf-8")
    manifest = _manifest(plan, seed, sample_rate, seconds, labelled_fraction)
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return manifest


def _manifest(plan, seed, sr, seconds, fraction) -> dict:
    count = lambda key: {k: sum(p[key] == k for p in plan) for k in sorted({p[key] for p in plan})}  # noqa: E731
    return {
        "kind": KIND, "format": 1, "seed": seed, "sample_rate": sr, "seconds": seconds,
        "clips": len(plan), "labelled": sum(p["labelled"] for p in plan), "labelled_fraction": fraction,
        "labels": SCENES, "cities": list(CITIES), "parts_of_day": PARTS, "confusable": list(CONFUSABLE),
        "scenes": count("scene"), "per_city": count("city"), "per_part_of_day": count("part_of_day"),
        "priors": {c: {p: [round(float(x), 4) for x in priors(c, p)] for p in PARTS} for c in CITIES},
        "files": {"scenes": "scenes.csv", "ground_truth": "ground_truth.csv", "audio": "audio",
                  "labels": "labels.txt"},
    }
