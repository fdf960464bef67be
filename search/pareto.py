"""Non-dominated sorting for accuracy (up) vs latency (down): the Pareto front and NSGA-II ranks.

Pareto mode needs two things: the front of everything evaluated (the answer: one network per
latency level, rather than a single winner under one budget), and a ranking to choose parents
(NSGA-II, Deb et al. 2002: front index first, then crowding distance so that the parents spread
along the front). pymoo would do this, but two objectives and at most a few thousand points
need only a few lines of numpy.

Conventions: `accuracy` is maximised, `latency` minimised; `a` dominates `b` when it is no
worse in both and strictly better in one, so two identical points are both on the front.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _dominance(accuracy: np.ndarray, latency: np.ndarray) -> np.ndarray:
    """`d[i, j]`: point i dominates point j."""
    acc_ge = accuracy[:, None] >= accuracy[None, :]
    lat_le = latency[:, None] <= latency[None, :]
    strict = (accuracy[:, None] > accuracy[None, :]) | (latency[:, None] < latency[None, :])
    return acc_ge & lat_le & strict


def _arrays(accuracy: Sequence[float], latency: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    acc, lat = np.asarray(accuracy, dtype=float), np.asarray(latency, dtype=float)
    if acc.shape != lat.shape or acc.ndim != 1:
        raise ValueError("accuracy and latency must be 1-D sequences of equal length")
    if not (np.all(np.isfinite(acc)) and np.all(np.isfinite(lat))):
        raise ValueError("accuracy and latency must be finite")
    return acc, lat


def pareto_front(accuracy: Sequence[float], latency: Sequence[float]) -> list[int]:
    """Indices of the non-dominated points, by increasing latency (then decreasing accuracy)."""
    acc, lat = _arrays(accuracy, latency)
    if len(acc) == 0:
        return []
    # Sweep by latency (ties: best accuracy first); a point is on the front if no point that is
    # at least as fast has strictly better accuracy, or equal accuracy and is strictly faster.
    order = np.lexsort((-acc, lat))
    front, best_acc, best_lat = [], -np.inf, np.inf
    for i in order:
        if acc[i] > best_acc or (acc[i] == best_acc and lat[i] == best_lat):
            front.append(int(i))
            if acc[i] > best_acc:
                best_acc, best_lat = acc[i], lat[i]
    return front


def nondominated_ranks(accuracy: Sequence[float], latency: Sequence[float]) -> np.ndarray:
    """Front index of every point (0 = the Pareto front), by repeated peeling."""
    acc, lat = _arrays(accuracy, latency)
    n = len(acc)
    ranks = np.full(n, -1, dtype=np.int64)
    if n == 0:
        return ranks
    dominates = _dominance(acc, lat)
    dominated_by = dominates.sum(axis=0)
    rank, current = 0, np.flatnonzero(dominated_by == 0)
    while current.size:
        ranks[current] = rank
        dominated_by = dominated_by - dominates[current].sum(axis=0)
        dominated_by[ranks >= 0] = -1
        current = np.flatnonzero(dominated_by == 0)
        rank += 1
    return ranks


def crowding_distance(accuracy: Sequence[float], latency: Sequence[float]) -> np.ndarray:
    """NSGA-II crowding distance within one set of points (boundary points get infinity)."""
    acc, lat = _arrays(accuracy, latency)
    n = len(acc)
    distance = np.zeros(n)
    if n <= 2:
        return np.full(n, np.inf)
    for values in (acc, lat):
        order = np.argsort(values, kind="stable")
        span = values[order[-1]] - values[order[0]]
        distance[order[0]] = distance[order[-1]] = np.inf
        if span > 0:
            distance[order[1:-1]] += (values[order[2:]] - values[order[:-2]]) / span
    return distance


def nsga2_order(accuracy: Sequence[float], latency: Sequence[float]) -> list[int]:
    """All indices, best first: by front, then by decreasing crowding distance, then by index."""
    acc, lat = _arrays(accuracy, latency)
    ranks = nondominated_ranks(acc, lat)
    crowding = np.zeros(len(acc))
    for rank in np.unique(ranks):
        members = np.flatnonzero(ranks == rank)
        crowding[members] = crowding_distance(acc[members], lat[members])
    return sorted(range(len(acc)), key=lambda i: (int(ranks[i]), -crowding[i], i))


__all__ = ["crowding_distance", "nondominated_ranks", "nsga2_order", "pareto_front"]
