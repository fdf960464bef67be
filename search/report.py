"""A finished search's outputs, written atomically next to its run database:

    best_arch.txt   the winner's architecture string (what `tdbnas export` and `predict` take)
    result.json     the winner's fitness, predicted latency per profile, MAdds, params, the
                    Pareto front, the settings, the evaluation count and the seeds
    search.png      every evaluated candidate, latency vs fitness, one panel per profile,
                    with the Pareto front and the budget line
    config.json     the resolved configuration (written when the search starts)

Matplotlib is drawn through its object API on an Agg canvas: no pyplot state, no display.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tdbnas.search.constraints import Constraints
from tdbnas.search.evolution import SearchResult
from tdbnas.search.pareto import pareto_front
from tdbnas.spaces.atomic import write_atomic, write_json_atomic, write_text_atomic

PLOT_NAME = "search.png"


def write_outputs(run_dir: str | Path, result: SearchResult, constraints: Constraints, *, space_name: str,
                  config: Mapping[str, Any] | None = None, plot: bool = True) -> dict[str, Path]:
    run_dir = Path(run_dir)
    paths = {"best_arch": run_dir / "best_arch.txt", "result": run_dir / "result.json",
             "plot": run_dir / PLOT_NAME}
    record = result.to_json()
    record.update(space=space_name, constraints=constraints.describe(),
                  files={"db": "search.sqlite", "plot": PLOT_NAME, "best_arch": "best_arch.txt",
                         "config": "config.json"})
    for key in ("evaluator", "signal", "fidelity"):  # what evaluated, what ranked, how far to trust it
        if config is not None and key in config:
            record[key] = config[key]
    write_text_atomic(paths["best_arch"], result.best.arch + "\n")
    write_json_atomic(paths["result"], record)
    if plot and constraints.profiles:
        signal = (config or {}).get("signal")
        plot_search(result, constraints, paths["plot"], title=f"{space_name}: {result.settings.algorithm}, "
                                                                f"{len(result.evaluations)} evaluations",
                    ylabel=f"{result.settings.metric} ({signal})" if signal else None)
    else:
        paths.pop("plot")
    return paths


def plot_search(result: SearchResult, constraints: Constraints, path: str | Path, *, title: str = "",
                ylabel: str | None = None) -> Path:
    """Latency vs fitness of every evaluation, one panel per profile: points coloured by
    generation, the Pareto front on that profile, the budget as a vertical line, the best
    (highest fitness within every constraint) as a star."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    profiles = constraints.profiles
    # A fixed layout: "constrained" would double the drawing time of a small figure.
    figure = Figure(figsize=(5.2 * len(profiles) + 0.8, 4.4))
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, len(profiles), squeeze=False)[0]
    evaluations = result.evaluations
    scores = [e.score for e in evaluations]
    generations = [e.generation for e in evaluations]
    for ax, budget in zip(axes, constraints.budgets):
        profile = budget.profile
        latency = [e.latency_ms[profile] for e in evaluations]
        points = ax.scatter(latency, scores, c=generations, cmap="viridis", s=12, alpha=0.75, linewidths=0)
        front = pareto_front(scores, latency)
        ax.step([latency[i] for i in front], [scores[i] for i in front], where="post", color="tab:orange",
                marker="o", markersize=3, linewidth=1.2, label="Pareto front")
        if budget.budget_ms is not None:
            ax.axvline(budget.budget_ms, color="tab:red", linestyle="--", linewidth=1,
                       label=f"budget {budget.budget_ms:g} ms")
        ax.scatter([result.best.latency_ms[profile]], [result.best.score], marker="*", s=140, color="tab:red",
                   edgecolors="black", linewidths=0.5, zorder=5, label="best")
        ax.set_xlabel(f"predicted latency on {profile} ({budget.predictor.kind}), ms")
        ax.set_ylabel(ylabel or result.settings.metric)
        ax.grid(True, alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
    figure.subplots_adjust(left=0.1 / len(profiles) + 0.03, right=0.9, bottom=0.13, top=0.88, wspace=0.28)
    figure.colorbar(points, ax=list(axes), label="generation", fraction=0.04, pad=0.02)
    if title:
        figure.suptitle(title)
    return write_atomic(path, lambda handle: figure.savefig(handle, format="png", dpi=110))


__all__ = ["PLOT_NAME", "plot_search", "write_outputs"]
