"""Ridge regression with two penalty groups, its strength chosen by cross-validation.

A learned latency model has *shared* columns (op-kind counts, MAdds, bytes: one coefficient
serves every slot) and *deviation* columns (one per slot and choice: what a slot costs beyond
its share). The deviations are penalised `ratio` times harder than the shared columns, so with
few samples they stay near zero and the shared op costs carry the prediction (a ridge form of
a hierarchical model: per-slot costs shrunk toward the shared cost); with more samples the data
pull them away. `ratio=None` leaves the deviations out.

Columns are standardised on the training rows (a column that does not vary there gets a zero
coefficient), the intercept is not penalised, and every fit is one SVD per (fold, ratio), so a
whole path of penalties costs one decomposition. `lam` is chosen among `LAMBDAS` (times the
number of training rows, so the same grid suits any k) and `ratio` among `RATIOS` by k-fold
cross-validation on the training rows only; the out-of-sample error of the whole procedure,
selection included, comes from `cross_validated_predictions` (nested: each outer fold reruns
the inner selection on its own training rows).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: Penalty per training row on standardised shared columns (the grid is scaled by n).
LAMBDAS = tuple(float(x) for x in np.logspace(-5, 2, 15))
#: Deviation penalty / shared penalty; None: no deviation columns at all.
RATIOS: tuple[float | None, ...] = (None, 1.0, 10.0, 100.0, 1000.0)
DEFAULT_FOLDS = 5
#: Fewer training rows than this cannot be cross-validated (5 folds of 2).
MIN_SAMPLES = 10


@dataclass(frozen=True)
class RidgeFit:
    """`y ~ intercept + X @ coefficients` in the units of the raw columns."""

    coefficients: np.ndarray
    intercept: float
    lam: float            # per training row, on standardised columns
    ratio: float | None   # deviation penalty factor (None: deviations left out)
    cv_rmse: float | None  # inner cross-validated RMSE of the chosen setting (None when fixed)
    at_grid_edge: bool = False  # the chosen lam is the largest tried: the columns explain little

    def predict(self, x: np.ndarray) -> np.ndarray:
        return x @ self.coefficients + self.intercept


#: Scale of a free column: its penalty is divided by FREE_SCALE**2, i.e. it is not penalised.
FREE_SCALE = 1e4


def _scaled(x: np.ndarray, deviation: np.ndarray, ratio: float | None,
            free: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(column weights, mask of columns used): standardisation with the deviation group's
    columns divided by sqrt(ratio), so one ridge penalty on the weighted columns is `lam` on
    shared and `lam * ratio` on deviation columns; `free` columns are left unpenalised."""
    std = x.std(axis=0)
    used = std > 1e-12 * (1 + np.abs(x).max(axis=0))
    if ratio is None:
        used &= ~deviation
    weights = np.zeros(x.shape[1])
    weights[used] = 1.0 / std[used]
    if ratio is not None:
        weights[deviation & used] /= math.sqrt(ratio)
    if free is not None:
        weights[free & used] *= FREE_SCALE
    return weights, used


def _path(x: np.ndarray, y: np.ndarray, weights: np.ndarray, used: np.ndarray,
          lams: Sequence[float]) -> list[tuple[np.ndarray, float]]:
    """Raw-unit (coefficients, intercept) for each penalty in `lams` (absolute, not per row)."""
    columns = np.flatnonzero(used)
    x_mean, y_mean = x.mean(axis=0), float(y.mean())
    z = (x[:, columns] - x_mean[columns]) * weights[columns]
    out = []
    if len(columns) == 0:
        return [(np.zeros(x.shape[1]), y_mean) for _ in lams]
    u, s, vt = np.linalg.svd(z, full_matrices=False)
    uy = u.T @ (y - y_mean)
    kept = s > s[0] * 1e-10  # exactly collinear columns (e.g. counts that sum to a constant): minimum norm
    for lam in lams:
        w = np.zeros(x.shape[1])
        shrink = np.where(kept, s / np.where(kept, s * s + lam, 1.0), 0.0)
        w[columns] = (vt.T @ (shrink * uy)) * weights[columns]
        out.append((w, y_mean - float(x_mean @ w)))
    return out


def fold_indices(n: int, folds: int, seed: int = 0) -> list[np.ndarray]:
    """`folds` disjoint test-index arrays covering 0..n-1 (a fixed shuffle: reproducible)."""
    order = np.random.default_rng(seed).permutation(n)
    return [part for part in np.array_split(order, min(folds, n)) if len(part)]


def fit_ridge(x: np.ndarray, y: np.ndarray, deviation: np.ndarray | None = None, *, lam: float | None = None,
              ratio: float | None = None, folds: int = DEFAULT_FOLDS, seed: int = 0,
              lams: Sequence[float] = LAMBDAS, ratios: Sequence[float | None] = RATIOS,
              free: np.ndarray | None = None) -> RidgeFit:
    """Fit with a fixed `lam` (and `ratio`), or choose them by `folds`-fold cross-validation
    when `lam` is None. `deviation` marks the deviation columns (default: none), `free` the
    unpenalised ones (a base model's prediction used as a feature: only its scale is learned)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    n = len(y)
    if x.ndim != 2 or x.shape[0] != n:
        raise ValueError(f"design has shape {x.shape} for {n} targets")
    deviation = np.zeros(x.shape[1], dtype=bool) if deviation is None else np.asarray(deviation, dtype=bool)
    if lam is not None:
        if not (math.isfinite(lam) and lam >= 0):
            raise ValueError(f"ridge penalty must be a finite number >= 0, got {lam}")
        weights, used = _scaled(x, deviation, ratio if deviation.any() else None, free)
        (w, b), = _path(x, y, weights, used, [lam * n])
        return RidgeFit(w, b, lam, ratio, None)
    if n < MIN_SAMPLES:
        raise ValueError(f"choosing the ridge penalty by cross-validation needs at least {MIN_SAMPLES} samples, "
                         f"got {n}")
    tried = [r for r in ratios if r is None or deviation.any()] or [None]
    parts = fold_indices(n, folds, seed)
    best: tuple[float, float, float | None] | None = None
    for r in tried:
        sse = np.zeros(len(lams))
        for test in parts:
            train = np.setdiff1d(np.arange(n), test)
            weights, used = _scaled(x[train], deviation, r, free)
            for i, (w, b) in enumerate(_path(x[train], y[train], weights, used, [lam_ * len(train) for lam_ in lams])):
                sse[i] += float(((x[test] @ w + b - y[test]) ** 2).sum())
        i = int(np.argmin(sse))
        if best is None or sse[i] < best[0]:
            best = (float(sse[i]), lams[i], r)
    assert best is not None
    sse, chosen, r = best
    weights, used = _scaled(x, deviation, r, free)
    (w, b), = _path(x, y, weights, used, [chosen * n])
    return RidgeFit(w, b, chosen, r, math.sqrt(sse / n), at_grid_edge=chosen == max(lams))


def cross_validated_predictions(x: np.ndarray, y: np.ndarray, deviation: np.ndarray | None = None, *,
                                lam: float | None = None, ratio: float | None = None,
                                folds: int = DEFAULT_FOLDS, seed: int = 0, offset: np.ndarray | None = None,
                                free: np.ndarray | None = None) -> np.ndarray:
    """Out-of-fold predictions of the whole fitting procedure (penalty selection included):
    each sample is predicted by a model that never saw it. `offset` is added to the targets'
    prediction (a base predictor the model is a residual on)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    offset = np.zeros(len(y)) if offset is None else np.asarray(offset, dtype=float)
    predicted = np.empty(len(y))
    for test in fold_indices(len(y), folds, seed + 1):
        train = np.setdiff1d(np.arange(len(y)), test)
        fitted = fit_ridge(x[train], y[train] - offset[train], deviation, lam=lam, ratio=ratio, folds=folds,
                           seed=seed, free=free)
        predicted[test] = fitted.predict(x[test]) + offset[test]
    return predicted


__all__ = ["DEFAULT_FOLDS", "FREE_SCALE", "LAMBDAS", "MIN_SAMPLES", "RATIOS", "RidgeFit", "cross_validated_predictions",
           "fit_ridge", "fold_indices"]
