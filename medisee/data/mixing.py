"""Drawing training samples from several datasets in fixed proportions.

The paper samples SA-Med2D-20M and MLMR-SD at 7 : 3. Each draw first picks a source by the
ratios, then takes that source's next item in a shuffled epoch (reshuffled whenever the
source is used up), so every item of a source is seen once before any repeats. The same
seed gives the same sequence, which is what lets a resumed run replay its draws.
"""

from __future__ import annotations

import bisect
import math
import random
from collections.abc import Iterator, Mapping, Sequence
from itertools import accumulate
from typing import Generic, TypeVar

T = TypeVar("T")


class MixedSampler(Generic[T]):
    """An endless iterator over ``sources`` mixed by ``ratios`` (any positive weights, e.g.
    ``{"samed2d": 7, "mlmr": 3}``). ``counts`` holds the draws made from each source."""

    def __init__(self, sources: Mapping[str, Sequence[T]], ratios: Mapping[str, float], seed: int = 0) -> None:
        if not sources:
            raise ValueError("no sources to sample from")
        if set(ratios) != set(sources):
            raise ValueError(f"ratio names {sorted(ratios)} do not match source names {sorted(sources)}")
        for name, ratio in ratios.items():
            if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not math.isfinite(ratio) or ratio <= 0:
                raise ValueError(f"ratio of source {name!r} must be a positive number, got {ratio!r}")
        for name, items in sources.items():
            if len(items) == 0:
                raise ValueError(f"source {name!r} is empty")
        self._names = list(sources)
        self._sources = {name: sources[name] for name in self._names}
        total = sum(ratios[name] for name in self._names)
        self._cumulative = list(accumulate(ratios[name] / total for name in self._names))
        self._rng = random.Random(seed)
        # one rng per source (string seeds are stable across runs), so epochs don't depend on the mix
        self._epoch_rngs = {name: random.Random(f"{seed}:{name}") for name in self._names}
        self._orders: dict[str, list[int]] = {name: [] for name in self._names}
        self.counts: dict[str, int] = {name: 0 for name in self._names}

    def __iter__(self) -> Iterator[T]:
        return self

    def _pick(self) -> str:
        index = bisect.bisect_right(self._cumulative, self._rng.random())
        return self._names[min(index, len(self._names) - 1)]  # guard against rounding at 1.0

    def __next__(self) -> T:
        name = self._pick()
        order = self._orders[name]
        if not order:
            order.extend(range(len(self._sources[name])))
            self._epoch_rngs[name].shuffle(order)
        self.counts[name] += 1
        return self._sources[name][order.pop()]

    def take(self, n: int) -> list[T]:
        return [next(self) for _ in range(n)]
