"""Synthesised sound families: each is a function (rng, n_samples, sr) -> (wave, attrs).

Every family has its own spectral/temporal signature (so a small model can tell them apart) and
draws pitch, rate, duration of events and noise from `rng` (so it cannot memorise one waveform).
`attrs` says what a listener would notice (a rising siren, fast ticking, a large dog), so captions
can describe the actual clip rather than only its family: extra "adjs", "verbs" as (3rd person,
-ing) pairs, and "nouns".
"""

from __future__ import annotations

import os
import shutil
import subprocess

import numpy as np

from curator.demo import dsp
from schemas.errors import AudioError


def tone(rng, n, sr):
    t = dsp.times(n, sr)
    f0 = float(np.exp(rng.uniform(np.log(180), np.log(2400))))
    mode = rng.choice(["steady", "steady", "up", "down"])
    attrs = {"adjs": [], "verbs": [], "nouns": []}
    if mode == "steady":
        freq = np.full(n, f0) * (1 + 0.002 * np.sin(2 * np.pi * rng.uniform(0.2, 1) * t))
        attrs["verbs"] += [("hums steadily", "humming steadily"), ("plays continuously", "playing continuously")]
        attrs["adjs"].append("steady")
    else:
        octaves = rng.uniform(0.5, 2.0) * (1 if mode == "up" else -1)
        freq = f0 * 2.0 ** (octaves * t / max(t[-1], 1e-3))
        rising = mode == "up"
        attrs["verbs"].append(("slowly rises in pitch", "slowly rising in pitch") if rising
                              else ("slowly falls in pitch", "slowly falling in pitch"))
        attrs["nouns"].append("tone sweep")
    amps = [1.0] if rng.random() < 0.6 else [1.0, rng.uniform(0.1, 0.4), rng.uniform(0.0, 0.2)]
    wave = dsp.harmonic(dsp.phase(freq, sr), freq, amps, sr)
    wave *= dsp.envelope(n, sr, rng.uniform(0.005, 0.08), rng.uniform(0.01, 0.15))
    attrs["adjs"].append("high-pitched" if f0 > 1200 else "low" if f0 < 350 else "electronic")
    return wave + 0.003 * rng.standard_normal(n), attrs


def siren(rng, n, sr):
    t = dsp.times(n, sr)
    base = rng.uniform(550, 950)
    style = rng.choice(["wail", "wail", "yelp", "hilo"])
    attrs = {"adjs": [], "verbs": [], "nouns": []}
    if style == "wail":
        rate = rng.uniform(0.15, 0.6)
        lfo = np.sin(2 * np.pi * rate * t + rng.uniform(0, 2 * np.pi))
        attrs["verbs"] += [("rises and falls", "rising and falling"), ("wails", "wailing")]
    elif style == "yelp":
        rate = rng.uniform(2.5, 5.0)
        lfo = 2 * np.abs(2 * np.mod(rate * t + rng.random(), 1.0) - 1) - 1  # triangle
        attrs["verbs"] += [("warbles quickly", "warbling quickly"), ("yelps", "yelping")]
    else:
        rate = rng.uniform(0.5, 1.2)
        lfo = np.sign(np.sin(2 * np.pi * rate * t + rng.uniform(0, 2 * np.pi)))
        lfo = dsp.filtered(lfo, sr, hi=40.0) * 1.0
        attrs["nouns"].append("two-tone siren")
        attrs["verbs"].append(("alternates between two notes", "alternating between two notes"))
    freq = base * (1 + rng.uniform(0.25, 0.45) * lfo)
    amp = np.ones(n)
    if rng.random() < 0.35:  # pass-by: Doppler shift down through the closest point, loudness bump
        centre, width = rng.uniform(0.3, 0.7) * t[-1], rng.uniform(0.3, 0.8)
        freq = freq * (1 + 0.06 * -np.tanh((t - centre) / width * 2))
        amp = 0.15 + np.exp(-0.5 * ((t - centre) / width) ** 2)
        attrs["verbs"] += [("passes by", "passing by"), ("approaches and fades away", "approaching and fading")]
    wave = dsp.harmonic(dsp.phase(freq, sr), freq, [1, 0.5, 0.3, 0.2, 0.12, 0.08], sr) * amp
    street = dsp.noise(rng, n, sr, lo=60, hi=2000, slope_db_oct=-3) * rng.uniform(0.02, 0.2)
    return wave + street, attrs


def engine(rng, n, sr):
    t = dsp.times(n, sr)
    f0 = rng.uniform(22, 60)
    revving = rng.random() < 0.3
    drift = 1 + 0.02 * dsp.slow_random(rng, n, sr, 1.5)
    if revving:
        c = rng.uniform(0.3, 0.7) * t[-1]
        drift = drift * (1 + rng.uniform(0.6, 1.4) / (1 + np.exp(-(t - c) * 6)))
    freq = f0 * drift
    k = np.arange(1, 25)
    amps = (k ** -0.7) * rng.uniform(0.5, 1.0, len(k)) * (k * f0 < 1200)
    wave = dsp.harmonic(dsp.phase(freq, sr), freq, amps, sr)
    lope = 1 + rng.uniform(0.1, 0.4) * np.sin(2 * np.pi * rng.uniform(3, 10) * t)
    rumble = dsp.noise(rng, n, sr, lo=30, hi=rng.uniform(250, 700), slope_db_oct=-3)
    wave = wave * lope + rumble * rng.uniform(0.2, 0.6) * dsp.rms(wave)
    attrs = {"adjs": ["deep" if f0 < 35 else "noisy"], "nouns": [], "verbs": []}
    if revving:
        attrs["verbs"] += [("revs up", "revving up"), ("accelerates", "accelerating")]
    else:
        attrs["verbs"] += [("idles", "idling"), ("rumbles steadily", "rumbling steadily")]
    return wave, attrs


def rain(rng, n, sr):
    heavy = rng.random() < 0.5
    hiss = dsp.noise(rng, n, sr, lo=rng.uniform(300, 900), hi=min(9000, 0.45 * sr), slope_db_oct=-1)
    hiss *= 1 + 0.2 * dsp.slow_random(rng, n, sr, 0.7)
    rate = rng.uniform(120, 300) if heavy else rng.uniform(15, 60)
    n_drops = rng.poisson(rate * n / sr)
    drops = dsp.decaying_partials(rng, n_drops, sr, 0.012, 1500, min(6000, 0.4 * sr), 0.0007, 0.003)
    drops *= rng.uniform(0.3, 1.0, (n_drops, 1))
    pops = dsp.place(np.zeros(n), rng.integers(0, n, n_drops), drops)
    wave = hiss * (0.35 if heavy else 0.12) + dsp.unit_rms(pops) * 0.25
    if heavy:
        return wave, {"adjs": ["heavy"], "verbs": [("pours down", "pouring down")], "nouns": ["downpour"]}
    return wave, {"adjs": ["light", "gentle"], "verbs": [("patters softly", "pattering softly")], "nouns": ["drizzle"]}


def clock(rng, n, sr):
    rate = rng.choice([1.0, 1.0, 2.0, rng.uniform(2.5, 4.0)])
    period = sr / rate
    starts = np.arange(rng.integers(0, int(period)), n, period)
    starts = (starts + rng.normal(0, 0.0015 * sr, len(starts))).astype(np.int64)
    clicks = dsp.decaying_partials(rng, len(starts), sr, 0.02, 2200, min(5000, 0.4 * sr), 0.0015, 0.004)
    tock = np.arange(len(starts)) % 2 == 1
    clicks[tock] *= rng.uniform(0.5, 0.9)
    wave = dsp.place(np.zeros(n), starts, clicks)
    wave = dsp.unit_rms(wave) + dsp.noise(rng, n, sr, hi=3000) * rng.uniform(0.005, 0.03)
    verbs = [("ticks quickly", "ticking quickly")] if rate > 2 else [("tick-tocks", "tick-tocking"),
                                                                   ("ticks slowly", "ticking slowly")]
    return wave, {"adjs": ["mechanical"], "verbs": verbs, "nouns": []}


def chirp(rng, n, sr):
    """Bird-like: short, fast frequency-modulated whistles in phrases."""
    out = np.zeros(n)
    pos, busy = int(rng.uniform(0, 0.3) * sr), rng.uniform(0.2, 0.6)
    centre = rng.uniform(2200, min(5000, 0.35 * sr))
    while pos < n:
        dur = rng.uniform(0.03, 0.14)
        m = int(dur * sr)
        tt = np.arange(m) / sr
        f = centre * 2 ** rng.uniform(-0.3, 0.3) * 2 ** (rng.uniform(-1.0, 1.0) * tt / dur)
        f = f + rng.uniform(80, 400) * np.sin(2 * np.pi * rng.uniform(30, 90) * tt)
        f = np.minimum(f, 0.45 * sr)
        env = np.sin(np.pi * tt / dur) ** 2
        dsp.place(out, [pos], env * np.sin(dsp.phase(f, sr)) * rng.uniform(0.4, 1.0))
        gap = rng.uniform(0.02, 0.12) if rng.random() > busy * 0.3 else rng.uniform(0.3, 0.9)
        pos += m + int(gap * sr)
    leaves = dsp.noise(rng, n, sr, lo=200, hi=6000, slope_db_oct=-3) * rng.uniform(0.01, 0.06)
    verbs = [("chirps", "chirping"), ("tweets", "tweeting"), ("sings", "singing")]
    return dsp.unit_rms(out) + leaves, {"adjs": ["small", "cheerful"], "verbs": verbs, "nouns": []}


def beep(rng, n, sr):
    f = rng.uniform(900, min(3600, 0.4 * sr))
    period, duty = rng.uniform(0.15, 1.0), rng.uniform(0.3, 0.6)
    t = dsp.times(n, sr)
    freq = np.full(n, f)
    if rng.random() < 0.3:  # two alternating pitches
        freq = np.where(np.mod(t, 2 * period) < period, f, f * 1.25)
    amps = [1, 0, 1 / 3, 0, 1 / 5, 0, 1 / 7] if rng.random() < 0.6 else [1.0]
    wave = dsp.harmonic(dsp.phase(freq, sr), freq, amps, sr) * dsp.gate(n, sr, period, duty, offset_s=rng.random())
    wave += 0.004 * rng.standard_normal(n)
    verbs = [("beeps rapidly", "beeping rapidly")] if period < 0.4 else [("beeps repeatedly", "beeping repeatedly")]
    verbs.append(("goes off", "going off"))
    return wave, {"adjs": ["shrill" if f > 2000 else "electronic"], "verbs": verbs, "nouns": []}


def bark(rng, n, sr):
    big = rng.random() < 0.5
    out = np.zeros(n)
    pos = int(rng.uniform(0.0, 0.4) * sr)
    k = np.arange(1, 16)
    while pos < n:
        dur = rng.uniform(0.1, 0.28)
        m = int(dur * sr)
        tt = np.arange(m) / sr
        f0 = (rng.uniform(230, 420) if big else rng.uniform(550, 950)) * (1 - 0.35 * tt / dur)
        formant = rng.uniform(900, 1800)
        amps = np.exp(-0.5 * ((k * f0.mean() - formant) / 700.0) ** 2) + 0.15
        voiced = dsp.harmonic(dsp.phase(f0, sr), f0, amps, sr)
        rough = dsp.noise(rng, m, sr, lo=400, hi=4000)
        env = np.minimum(tt / 0.006, 1.0) * np.exp(-tt / (dur * 0.35))
        body = dsp.unit_rms(voiced) + rng.uniform(0.3, 0.7) * rough
        dsp.place(out, [pos], body * env * rng.uniform(0.6, 1.0))
        double = rng.random() < 0.4
        pos += m + int((rng.uniform(0.08, 0.2) if double else rng.uniform(0.3, 1.1)) * sr)
    room = dsp.noise(rng, n, sr, hi=2000, slope_db_oct=-3) * rng.uniform(0.01, 0.05)
    if big:
        return out + room, {"adjs": ["large", "big"], "verbs": [("barks loudly", "barking loudly")], "nouns": []}
    return out + room, {"adjs": ["small", "little"], "verbs": [("yaps", "yapping")], "nouns": ["puppy"]}


def stream(rng, n, sr):
    body = dsp.noise(rng, n, sr, lo=50, hi=rng.uniform(1500, 3000), slope_db_oct=-6)
    body *= 1 + 0.35 * dsp.slow_random(rng, n, sr, rng.uniform(0.5, 3))
    n_bub = rng.poisson(rng.uniform(6, 40) * n / sr)
    bubbles = dsp.decaying_partials(rng, n_bub, sr, 0.03, 300, 1200, 0.004, 0.012, glide=rng.uniform(0.2, 0.8))
    bubbles *= rng.uniform(0.2, 1.0, (n_bub, 1))
    gurgle = dsp.place(np.zeros(n), rng.integers(0, n, n_bub), bubbles)
    verbs = [("flows", "flowing"), ("babbles", "babbling"), ("trickles", "trickling")]
    return body + 0.5 * dsp.unit_rms(gurgle), {"adjs": ["gentle", "rushing"], "verbs": verbs, "nouns": []}


_SENTENCES = [
    "the meeting starts at nine tomorrow morning", "please remember to close the window",
    "the train to the city centre is delayed", "i will call you back in ten minutes",
    "the weather will be cold and windy today", "thank you for listening to this message",
    "turn left at the next corner", "we are going to the market on saturday",
]
_VOICES = ["en", "en-us", "en+f3", "en+m3", "en+f2", "en-gb-x-rp"]


def speech_available() -> bool:
    return shutil.which("espeak-ng") is not None


def speech(rng, n, sr):
    """Speech from the espeak-ng binary (deterministic for a given voice, rate, pitch and text)."""
    import tempfile

    import soundfile as sf

    voice, text = str(rng.choice(_VOICES)), str(rng.choice(_SENTENCES))
    rate, pitch = int(rng.integers(120, 200)), int(rng.integers(20, 80))
    with tempfile.TemporaryDirectory() as tmp:
        # -w writes a proper WAV header; --stdout can only write a placeholder length.
        path = os.path.join(tmp, "speech.wav")
        cmd = ["espeak-ng", "-v", voice, "-s", str(rate), "-p", str(pitch), "-w", path, text]
        try:
            subprocess.run(cmd, capture_output=True, timeout=30, check=True)
            wave, sr_in = sf.read(path, dtype="float64")
        except (OSError, subprocess.SubprocessError, RuntimeError) as exc:
            raise AudioError(f"speech synthesis with espeak-ng voice {voice!r} failed: {exc}") from exc
    wave = dsp.resample_linear(wave if wave.ndim == 1 else wave.mean(axis=1), sr_in, sr)
    wave = dsp.fit_length(wave, n) + dsp.noise(rng, n, sr, hi=4000) * 0.01 * (dsp.rms(wave) + 1e-3)
    female = "+f" in voice
    noun = "woman" if female else rng.choice(["man", "person"])
    nouns = [str(noun), "voice", "speaker"]
    return wave, {"adjs": [], "nouns": nouns, "exclusive_nouns": True, "verbs": [("speaks", "speaking")]}


# label -> synthesis function; the label names are natural words so label prompts
# ("this is a sound of {label}") are meaningful to a sentence model.
FAMILIES = {
    "tone": tone, "siren": siren, "engine": engine, "rain": rain, "clock tick": clock,
    "bird chirp": chirp, "alarm beep": beep, "dog bark": bark, "water stream": stream, "speech": speech,
}


def synthesise(family: str, rng: np.random.Generator, n: int, sr: int):
    wave, attrs = FAMILIES[family](rng, n, sr)
    return dsp.fit_length(np.asarray(wave, dtype=np.float64), n), attrs
