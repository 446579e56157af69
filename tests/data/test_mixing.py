import math

import pytest

from medisee.data.mixing import MixedSampler


def test_ratio_holds_over_many_draws():
    sampler = MixedSampler({"samed2d": list(range(50)), "mlmr": list("abcdefg")}, {"samed2d": 7, "mlmr": 3}, seed=0)
    draws = sampler.take(10_000)
    assert len(draws) == 10_000 and sum(sampler.counts.values()) == 10_000
    assert abs(sampler.counts["samed2d"] / 10_000 - 0.7) < 0.02
    assert abs(sampler.counts["mlmr"] / 10_000 - 0.3) < 0.02
    assert sum(isinstance(d, str) for d in draws) == sampler.counts["mlmr"]


def test_deterministic_per_seed_and_iterable():
    def make(seed):
        return MixedSampler({"a": [1, 2, 3], "b": [4, 5]}, {"a": 0.5, "b": 0.5}, seed=seed)

    assert make(1).take(50) == make(1).take(50)
    assert make(1).take(50) != make(2).take(50)
    sampler = make(1)
    assert iter(sampler) is sampler
    assert [next(sampler) for _ in range(5)] == make(1).take(5)


def test_each_epoch_visits_every_item_once():
    items = list(range(13))
    sampler = MixedSampler({"only": items}, {"only": 1.0}, seed=4)
    first, second = sampler.take(13), sampler.take(13)
    assert sorted(first) == items and sorted(second) == items and first != second


@pytest.mark.parametrize("sources, ratios, message", [
    ({}, {}, "no sources"),
    ({"a": [1]}, {"b": 1}, "do not match"),
    ({"a": [1], "b": [2]}, {"a": 1}, "do not match"),
    ({"a": [1]}, {"a": 0}, "positive number"),
    ({"a": [1]}, {"a": -2}, "positive number"),
    ({"a": [1]}, {"a": math.nan}, "positive number"),
    ({"a": [1]}, {"a": "7"}, "positive number"),
    ({"a": [1], "b": []}, {"a": 7, "b": 3}, "source 'b' is empty"),
])
def test_validation(sources, ratios, message):
    with pytest.raises(ValueError, match=message):
        MixedSampler(sources, ratios, seed=0)
