"""Which paths a supernet trains at each step: uniform (SPOS), strict fairness (FairNAS), sandwich.

* `uniform` — Single Path One-Shot / DetNAS: one path drawn uniformly per step.
* `fair` — FairNAS (Chu et al., ICCV 2021), strict fairness: per step, every slot draws a random
  permutation of its choices and the i-th path takes the i-th entry of every slot, so each
  choice of each slot is trained exactly once per step; gradients of the m paths are summed
  before one update. Slots with fewer than m choices (m = the most choices of any slot) fill the
  rest of their column with uniform draws, so their choices are trained at least once per step.
* `sandwich` — BigNAS / OFA (Yu et al., ECCV 2020): the largest path, the smallest path and
  `random` uniform paths per step, gradients summed; the other paths also learn from the
  largest one's predictions (in-place distillation, `supernet_train.SupernetTrainer`). Largest
  and smallest are by detector MAdds, found exactly (`search.minimum`).

Every list of paths is a pure function of (space, strategy, step, seed), so a resumed or
distributed run trains exactly the same paths.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Sequence

from tdbnas.search.supernet import sample_path
from tdbnas.spaces import ArchSpec, BlockSpace, SSDLiteHead

SAMPLING = ("uniform", "fair", "sandwich")
SANDWICH_RANDOM = 2  # BigNAS: 2 random children between the largest and the smallest


def step_paths(space: BlockSpace, strategy: str, step: int, seed: int = 0, *, resolution: int | Sequence[int] = 320,
               head: SSDLiteHead | None = None) -> list[ArchSpec]:
    """The paths trained at `step` (for `sandwich`, the largest first: it is the teacher)."""
    if strategy == "uniform":
        return [sample_path(space, step, seed)]
    if strategy == "fair":
        return fair_paths(space, step, seed)
    if strategy == "sandwich":
        largest, smallest = extremes(space, tuple(_hw(resolution)), head or SSDLiteHead())
        return [largest, smallest] + [sample_path(space, step * SANDWICH_RANDOM + i, seed + 1)
                                      for i in range(SANDWICH_RANDOM)]
    raise ValueError(f"unknown supernet sampling {strategy!r}; one of: {', '.join(SAMPLING)}")


def paths_per_step(space: BlockSpace, strategy: str) -> int:
    """How many paths one update trains (the compute of a step, in single-path steps)."""
    if strategy == "uniform":
        return 1
    if strategy == "fair":
        return max(len(slot) for slot in space.slots)
    return 2 + SANDWICH_RANDOM


def fair_paths(space: BlockSpace, step: int, seed: int = 0) -> list[ArchSpec]:
    rng = random.Random(f"tdbnas.fairnas:{seed}:{step}")
    width = max(len(slot) for slot in space.slots)
    columns = []
    for slot in space.slots:
        order = list(range(len(slot)))
        rng.shuffle(order)
        columns.append(order + [rng.randrange(len(slot)) for _ in range(width - len(slot))])
    return [space.decode(tuple(column[i] for column in columns)) for i in range(width)]


@functools.lru_cache(maxsize=16)
def extremes(space: BlockSpace, resolution: tuple[int, int], head: SSDLiteHead) -> tuple[ArchSpec, ArchSpec]:
    """(largest, smallest) member by detector MAdds."""
    from tdbnas.search.minimum import max_cost, min_cost

    return (max_cost(space, "madds", resolution, head=head).arch, min_cost(space, "madds", resolution, head=head).arch)


def _hw(resolution: int | Sequence[int]) -> tuple[int, int]:
    from tdbnas.spaces import as_hw

    return as_hw(resolution)
