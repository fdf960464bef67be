"""Successive halving over the best candidates of a cheap search: multi-fidelity selection.

A cheap signal (zero-shot scores, MAdds) can score every candidate an evolution proposes; a
costly one (short stand-alone training) only a few. Successive halving (Jamieson & Talwalkar,
AISTATS 2016; the inner loop of Hyperband) spends the costly one where it matters: every
candidate gets the smallest budget, the better half (1/eta) is continued to the next budget,
and so on; the best at the last budget wins.

With `TruncatedTraining` a candidate's budget is epochs of the stand-alone recipe's schedule:
a rung continues the same run (its checkpoint) instead of starting again, so the whole
selection costs sum(survivors x epoch increments), and the runs are resumable after a kill.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Rung:
    budget: float
    scores: dict[str, float] = field(default_factory=dict)

    def ranked(self, order: Sequence[str]) -> list[str]:
        """The rung's candidates best first (ties: earlier in `order`, the cheap ranking)."""
        return sorted(self.scores, key=lambda arch: (-self.scores[arch], order.index(arch)))


def successive_halving(candidates: Sequence[str], evaluate: Callable[[str, float], float],
                       budgets: Sequence[float], eta: int = 2) -> list[Rung]:
    """Rungs of the selection; the winner is `rungs[-1].ranked(candidates)[0]`.

    `candidates` come best first by the cheap signal; `budgets` increase."""
    if not candidates:
        raise ValueError("successive halving needs at least one candidate")
    if not budgets or any(b <= 0 for b in budgets) or list(budgets) != sorted(budgets):
        raise ValueError(f"budgets must be positive and increasing, got {list(budgets)}")
    if eta < 2:
        raise ValueError(f"eta must be at least 2, got {eta}")
    order = list(dict.fromkeys(candidates))
    survivors, rungs = order, []
    for index, budget in enumerate(budgets):
        rung = Rung(float(budget))
        for arch in survivors:
            rung.scores[arch] = float(evaluate(arch, float(budget)))
        rungs.append(rung)
        if index < len(budgets) - 1:
            survivors = rung.ranked(order)[: max(1, math.ceil(len(survivors) / eta))]
    return rungs


class TruncatedTraining:
    """`evaluate(arch, epochs)`: train `arch` stand-alone for the first `epochs` of a
    `schedule_epochs`-long schedule (resuming its own run), on the training split minus the
    search split, and return its mAP on the search split."""

    def __init__(self, out: str | Path, *, data: str | Path, resolution: int, schedule_epochs: float,
                 train_settings: dict[str, Any], seed: int = 0, threads: int | None = None):
        self.out, self.data, self.resolution = Path(out), str(data), resolution
        self.schedule_epochs, self.settings, self.seed, self.threads = schedule_epochs, train_settings, seed, threads
        self._views = None

    def views(self):
        """(train minus search, search) views, built once."""
        if self._views is None:
            from tdbnas.detection.train import TrainConfig, augmentation
            from tdbnas.search.splits import SearchSplit, build_search_split

            config = TrainConfig.from_dict(self._config_values("", None))
            self._views = build_search_split(self.data, SearchSplit(), size=self.resolution,
                                             augmentation=augmentation(config))
        return self._views

    def _config_values(self, arch: str, stop: float | None) -> dict[str, Any]:
        return {**self.settings, "arch": arch, "data": self.data, "resolution": self.resolution,
                "epochs": self.schedule_epochs, "stop_epochs": stop, "seed": self.seed, "threads": self.threads,
                "train_split": "train-minus-search", "val_split": "search", "progress": False}

    def run_dir(self, arch: str) -> Path:
        return self.out / hashlib.sha1(arch.encode()).hexdigest()[:12]

    def __call__(self, arch: str, epochs: float) -> float:
        from tdbnas.detection.train import TrainConfig, Trainer

        train_view, search_view = self.views()
        config = TrainConfig.from_dict(self._config_values(arch, epochs))
        summary = Trainer(config, self.run_dir(arch), train_set=train_view, val_set=search_view).run()
        return float(summary["eval"]["metrics"]["mAP"])
