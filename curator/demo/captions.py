"""Caption paraphrases per sound family, with modifiers drawn from what the clip actually contains.

A caption names its source with everyday words (so a sentence model puts it near the family's
label prompt "this is a sound of {label}") but is never one fixed string: nouns, verbs, adjectives,
places and sentence shapes vary, and loudness / pitch / rate words come from the synthesis attrs.
"""

from __future__ import annotations

import numpy as np

# Per family: nouns (singular, without article; MASS nouns take none), verbs as (3rd person, -ing)
# and places (each starting with a preposition or empty).
VOCAB = {
    "tone": dict(
        nouns=["tone", "pure tone", "sine tone", "test tone", "electronic tone", "signal tone"],
        verbs=[("plays", "playing"), ("sounds", "sounding"), ("rings out", "ringing out"), ("hums", "humming")],
        places=["from a speaker", "from a signal generator", "in an empty room", ""]),
    "siren": dict(
        nouns=["siren", "ambulance siren", "police siren", "emergency siren", "fire truck siren"],
        verbs=[("wails", "wailing"), ("blares", "blaring"), ("sounds", "sounding"), ("howls", "howling")],
        places=["in the distance", "on a busy street", "in the city", "down the road", ""]),
    "engine": dict(
        nouns=["engine", "car engine", "truck engine", "diesel engine", "motor", "motorcycle engine"],
        verbs=[("runs", "running"), ("rumbles", "rumbling"), ("purrs", "purring"), ("roars", "roaring")],
        places=["in a garage", "on the road", "in a parking lot", "nearby", ""]),
    "rain": dict(
        nouns=["rain", "rainfall", "rain shower"],
        verbs=[("falls", "falling"), ("patters", "pattering"), ("drums", "drumming"), ("comes down", "coming down")],
        places=["on a roof", "on the window", "outside", "on the leaves", "on the pavement", ""]),
    "clock tick": dict(
        nouns=["clock", "wall clock", "ticking clock", "old clock", "pocket watch", "clock mechanism"],
        verbs=[("ticks", "ticking"), ("ticks steadily", "ticking steadily"), ("keeps ticking", "ticking on")],
        places=["in a quiet room", "on the wall", "on a desk", "in the hallway", ""]),
    "bird chirp": dict(
        nouns=["bird", "songbird", "sparrow", "little bird", "bird in a tree"],
        verbs=[("chirps", "chirping"), ("chirps repeatedly", "chirping repeatedly"), ("tweets", "tweeting"),
               ("calls out", "calling out")],
        places=["in the trees", "in a garden", "in the forest", "in the park", "at dawn", ""]),
    "alarm beep": dict(
        nouns=["alarm", "alarm clock", "smoke alarm", "fire alarm", "electronic alarm", "timer alarm"],
        verbs=[("beeps", "beeping"), ("beeps repeatedly", "beeping repeatedly"), ("rings", "ringing"),
               ("goes off", "going off")],
        places=["in the kitchen", "in a building", "in the bedroom", "from a machine", ""]),
    "dog bark": dict(
        nouns=["dog", "guard dog", "neighbour's dog", "dog behind a fence"],
        verbs=[("barks", "barking"), ("barks several times", "barking several times"), ("woofs", "woofing")],
        places=["in the yard", "next door", "in the street", "at a stranger", ""]),
    "water stream": dict(
        nouns=["stream", "brook", "creek", "small river", "water stream", "mountain stream"],
        verbs=[("flows", "flowing"), ("runs", "running"), ("gurgles", "gurgling"), ("splashes", "splashing")],
        places=["through the forest", "over rocks", "nearby", "in the mountains", ""]),
    "speech": dict(
        nouns=["man", "woman", "person", "speaker", "voice"],
        verbs=[("speaks", "speaking"), ("talks", "talking"), ("says a few words", "saying a few words"),
               ("reads a sentence aloud", "reading a sentence aloud")],
        places=["in a quiet room", "into a microphone", "on the radio", ""]),
}
MASS = {"rain", "rainfall", "drizzle", "water"}

_SINGLE = [
    "{NP} {v}{place}", "{NP} {v}{place}", "{NP} {ving}{place}", "the sound of {NP} {ving}{place}",
    "{NP} can be heard{place}", "{NP} {v} {adv}", "you can hear {NP} {ving}{place}",
]
_MIX = [
    "{a} while {b}", "{a} and {b}", "{a} as {b}", "{a}, with {NP_b} in the background",
    "{NP_a} {ving_a} while {NP_b} {v_b}",
]
_ADVERBS = ["again and again", "for a while", "continuously", "clearly", "over and over"]


def loudness_words(level_dbfs: float) -> tuple[list[str], list[str]]:
    """Adjectives and places implied by the clip's level."""
    if level_dbfs > -20:
        return ["loud"], [" close by", " nearby"]
    if level_dbfs < -28:
        return ["faint", "distant", "quiet"], [" in the distance", " far away"]
    return [], []


def _fits(place: str, level_dbfs: float) -> bool:
    """A loud clip is not 'in the distance', a faint one not 'nearby'."""
    far = "distance" in place or "far" in place
    near = "nearby" in place or "close" in place
    return not ((far and level_dbfs > -20) or (near and level_dbfs < -28))


def _article(word: str, noun: str) -> str:
    if noun in MASS:
        return word
    return ("an " if word[0] in "aeiou" else "a ") + word


def _pick(rng, items):
    return items[int(rng.integers(len(items)))]


def _parts(family: str, attrs: dict, level_dbfs: float, rng) -> dict:
    voc = VOCAB[family]
    loud_adjs, loud_places = loudness_words(level_dbfs)
    # a clip may know better than the family (a female voice is not "a man speaking")
    nouns = list(attrs["nouns"]) if attrs.get("exclusive_nouns") else voc["nouns"] + list(attrs.get("nouns", []))
    noun = _pick(rng, nouns)
    adjs = [a for a in list(attrs.get("adjs", [])) + loud_adjs if a not in noun]
    np_ = noun
    if adjs and rng.random() < 0.55:
        np_ = f"{_pick(rng, adjs)} {noun}"
    np_ = _article(np_, noun) if rng.random() < 0.85 or noun in MASS else "the " + np_
    verbs = list(attrs.get("verbs", []))
    verb = _pick(rng, verbs) if verbs and rng.random() < 0.5 else _pick(rng, voc["verbs"])
    places = [(" " + p if p else "") for p in voc["places"] if _fits(p, level_dbfs)] + loud_places
    return {"NP": np_, "v": verb[0], "ving": verb[1], "place": _pick(rng, places), "adv": _pick(rng, _ADVERBS)}


def _sentence(text: str) -> str:
    text = " ".join(text.split())
    return text[0].upper() + text[1:] + "."


def caption(rng, family: str, attrs: dict, level_dbfs: float) -> str:
    return _sentence(_pick(rng, _SINGLE).format(**_parts(family, attrs, level_dbfs, rng)))


def mix_caption(rng, fam_a: str, attrs_a: dict, fam_b: str, attrs_b: dict, level_a: float, level_b: float) -> str:
    """A caption naming both sources of a mixture, the louder (primary) one first."""
    pa, pb = _parts(fam_a, attrs_a, level_a, rng), _parts(fam_b, attrs_b, level_b, rng)
    clause_a = f"{pa['NP']} {pa['v']}{pa['place']}"
    clause_b = f"{pb['NP']} {pb['v']}"
    return _sentence(_pick(rng, _MIX).format(
        a=clause_a, b=clause_b, NP_a=pa["NP"], ving_a=pa["ving"], NP_b=pb["NP"], v_b=pb["v"]))


def distinct(make, k: int, rng: np.random.Generator) -> list[str]:
    """k captions from `make(rng)`, distinct where the templates allow it (Clotho has 5 per clip)."""
    out: list[str] = []
    for _ in range(k * 8):
        c = make(rng)
        if c not in out:
            out.append(c)
        if len(out) == k:
            return out
    while len(out) < k:
        out.append(make(rng))
    return out
