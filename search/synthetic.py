"""A synthetic fitness with known structure: for testing and benchmarking the search itself.

A real fitness (supernet + BN recalibration + COCO AP) costs minutes per architecture, so the
search algorithms are checked on a landscape whose optimum is known: every choice of every
slot has a weight, and neighbouring slots interact a little (epistasis), like accuracy
contributions of layers that are mostly, but not entirely, independent. Deterministic in
`seed`; picklable, so it also serves as a Ray factory (`SyntheticFitness(...)` is both the
function and, via `factory()`, the zero-argument builder).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from tdbnas.spaces import ArchSpec, SearchSpace


@dataclass
class SyntheticFitness:
    space: SearchSpace
    seed: int = 0
    interaction: float = 0.3
    metric: str = "mAP"
    _weights: list[list[float]] = field(init=False, repr=False)
    _pairs: list[list[list[float]]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        rng = random.Random(f"synthetic-fitness:{self.seed}")
        sizes = [len(slot) for slot in self.space.slots]
        self._weights = [[rng.gauss(0.0, 1.0) for _ in range(n)] for n in sizes]
        self._pairs = [[[rng.gauss(0.0, self.interaction) for _ in range(m)] for _ in range(n)]
                       for n, m in zip(sizes, sizes[1:])]

    def score_genome(self, genome: Sequence[int]) -> float:
        total = sum(w[g] for w, g in zip(self._weights, genome))
        total += sum(p[a][b] for p, a, b in zip(self._pairs, genome, genome[1:]))
        # Squash into (0, 1) like an AP, without changing the order.
        return 1.0 / (1.0 + math.exp(-total / math.sqrt(max(1, len(genome)))))

    def __call__(self, arch: ArchSpec) -> dict[str, Any]:
        genome = self.space.encode(arch)
        return {self.metric: self.score_genome(genome), "synthetic": True}

    def factory(self) -> SyntheticFitness:
        return self
