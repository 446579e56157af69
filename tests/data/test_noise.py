"""Typed-text noise on training queries."""

from __future__ import annotations

import random

from medisee.data import noise


def edit_distance(a: str, b: str) -> int:
    row = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, cb in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (ca != cb))
    return row[-1]


def test_a_typo_is_one_edit_in_one_longer_word():
    rng = random.Random(0)
    for _ in range(200):
        changed = noise.typo("Segment the liver", rng)
        assert changed.split()[1] == "the"  # words under four letters are left alone
        assert 1 <= edit_distance("Segment the liver", changed) <= 2  # a swap counts as two
    assert noise.typo("a b c", rng) == "a b c"


def test_perturbed_queries_vary_in_case_punctuation_and_fillers_but_keep_their_words():
    rng = random.Random(0)
    seen = {noise.perturb("Segment the liver.", rng) for _ in range(300)}
    assert "segment the liver" in {s.lower().rstrip(" .?!") for s in seen}
    assert any(s.isupper() for s in seen) and any(s.islower() for s in seen)
    assert any(not s.endswith((".", "?", "!")) for s in seen) and any(s.endswith("?") for s in seen)
    assert any(s.lower().startswith(("please", "pls", "hi", "ok", "hey")) for s in seen)
    assert all("the" in s.lower().split() for s in seen)
