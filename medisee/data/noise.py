"""Surface noise of typed text: what a radiologist's request looks like before tidying.

Training applies it to a share of queries (a data source's ``noise``), so the model meets
lower case, shouting, missing or doubled punctuation, fillers and typos.
"""

from __future__ import annotations

import random
import re

TYPO_RATE = 0.3  # share of perturbed queries with one typo
_KEYBOARD = dict(zip("qwertyuiopasdfghjklzxcvbnm", ("wa", "qes", "wrd", "etf", "ryg", "tuh", "yij", "uok", "ipl", "ol",
                                                    "qsz", "awdx", "sefc", "drgv", "fthb", "gyjn", "hukm", "jil", "kop",
                                                    "asx", "zdc", "xfv", "cgb", "vhn", "bjm", "nk")))


def perturb(text: str, rng: random.Random) -> str:
    """Typed-text noise: a typo (a third of the time), a filler word, changed case and end
    punctuation. The words stay recognisable: one edit in one word of four or more letters."""
    if rng.random() < TYPO_RATE:
        text = typo(text, rng)
    roll = rng.random()
    if roll < 0.1:
        text = rng.choice(("please ", "pls ", "hi, ", "ok ", "hey, ")) + text
    elif roll < 0.2:
        text = text.rstrip(" .?!") + rng.choice((", thanks", " thank you", " please", " asap", ", cheers"))
    roll = rng.random()
    if roll < 0.3:
        text = text.lower()
    elif roll < 0.4:
        text = text.upper()
    elif roll < 0.55:
        text = text[:1].upper() + text[1:]
    roll = rng.random()
    if roll < 0.3:
        text = text.rstrip(" .?!")
    elif roll < 0.5:
        text = text.rstrip(" .?!") + rng.choice((".", "?", "!", "...", " ?"))
    return text


def typo(text: str, rng: random.Random) -> str:
    """One edit (swap, drop, double or neighbouring key) in one word of four or more letters."""
    words = [m for m in re.finditer(r"[A-Za-z]{4,}", text)]
    if not words:
        return text
    word = rng.choice(words)
    w = word.group(0)
    i = rng.randrange(1, len(w) - 1)
    kind = rng.randrange(4)
    if kind == 0:
        w = w[:i] + w[i + 1] + w[i] + w[i + 2:]
    elif kind == 1:
        w = w[:i] + w[i + 1:]
    elif kind == 2:
        w = w[:i] + w[i] + w[i:]
    else:
        near = _KEYBOARD.get(w[i].lower(), w[i])
        w = w[:i] + rng.choice(near) + w[i + 1:]
    return text[: word.start()] + w + text[word.end():]
