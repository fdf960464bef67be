"""Supernet training: the detector training loop with one uniformly sampled path per step.

Single Path One-Shot / DetNAS (reference §2): each step activates `sample_path(space, step,
seed)` and trains it like a stand-alone detector; only that path's weights get gradients, so
SGD (which skips parameters without gradients) moves nothing else, weight decay included.
Everything else is `Trainer`'s: schedule, checkpoints and resume (the path is a pure function
of (seed, step), so a resumed run trains the same paths), progress, DDP.

A run directory holds, besides `Trainer`'s files:

    search_split.json   the held-out search images (settings and image ids), never trained on
    supernet.json       the space description, weight sharing and parameter count

The final val split is never touched: a supernet run has no val split, and candidates are
scored on the search split (`fitness.SupernetEvaluator`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from tdbnas.detection.loss import distillation_loss
from tdbnas.detection.train import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_VERSION,
    TrainConfig,
    Trainer,
    augmentation,
    head_settings,
    resolve_for_data,
)
from tdbnas.search.sampling import SAMPLING, step_paths
from tdbnas.search.splits import SearchSplit, build_search_split, split_record
from tdbnas.search.supernet import WEIGHT_SHARING, Supernet
from tdbnas.spaces import BlockSpace, PyramidSearchSpace
from tdbnas.spaces.atomic import write_json_atomic


@dataclass
class SupernetTrainConfig(TrainConfig):
    """`TrainConfig` plus the space, the weight sharing and the held-out search split.

    `arch` is unused (the supernet holds every member of `space`) and `val_split` must stay
    empty: the val split is kept for the searched network alone.
    """

    arch: str = ""
    val_split: str = ""
    space: str = "tdb"  # a registered space or a description file (.yaml/.yml/.json)
    weight_sharing: str = "none"  # "none" (per-choice, DetNAS), "in" or "width" (sliced; see sharing.py)
    search_fraction: float = 0.1  # share of the training split held out for search
    search_seed: int = 0
    # Paths per step (`tdbnas.search.sampling`): "uniform" (SPOS, DetNAS), "fair" (FairNAS strict
    # fairness) or "sandwich" (largest + smallest + random, BigNAS); `distill_weight` scales the
    # in-place distillation of sandwich paths from the largest one (0: none).
    sampling: str = "uniform"
    distill_weight: float = 1.0

    @property
    def search_split(self) -> SearchSplit:
        return SearchSplit(self.search_fraction, self.search_seed, self.train_split)


def load_space(text: str) -> BlockSpace | PyramidSearchSpace:
    """A registered space, `NAME+pyramid` (with a searchable feature pyramid) or a space
    description file."""
    from tdbnas.spaces.pyramid_space import resolve_space

    space = resolve_space(text)
    if not isinstance(space, (BlockSpace, PyramidSearchSpace)):
        raise ValueError(f"space {text!r} is not a BlockSpace; a supernet needs blocks of layer slots")
    return space


def build_supernet(config: SupernetTrainConfig, num_classes: int, space: BlockSpace | None = None) -> Supernet:
    """The supernet a run's config describes (same head settings as `tdbnas train`)."""
    return Supernet(space or load_space(config.space), num_classes=num_classes,
                    head=head_settings(config, num_classes), width_multiplier=config.width_multiplier,
                    weight_sharing=config.weight_sharing)


class SupernetTrainer(Trainer):
    """`Trainer` on a `Supernet`, training the training split minus the search split."""

    model: Supernet

    def __init__(self, config: SupernetTrainConfig, out_dir: str | Path, *, space: BlockSpace | None = None):
        if not isinstance(config, SupernetTrainConfig):
            raise TypeError("SupernetTrainer needs a SupernetTrainConfig")
        if config.val_split:
            raise ValueError(f"a supernet run does not evaluate on a val split (got val_split={config.val_split!r}): "
                             "candidates are scored on the search split carved from the training data, and the val "
                             "split is kept for the searched network")
        if config.weight_sharing not in WEIGHT_SHARING:
            raise ValueError(f"weight_sharing must be one of {WEIGHT_SHARING}, got {config.weight_sharing!r}")
        if config.compile:
            raise ValueError("compile is not supported for supernets: every sampled path would recompile")
        if config.sampling not in SAMPLING:
            raise ValueError(f"sampling must be one of {SAMPLING}, got {config.sampling!r}")
        if config.zero_init_residual and config.weight_sharing != "none":
            raise ValueError("zero_init_residual needs per-choice weights (weight_sharing='none')")
        self.space = space or load_space(config.space)
        self.split = config.search_split
        self.train_view, self.search_view = build_search_split(config.data, self.split, size=config.resolution,
                                                               augmentation=augmentation(config), resize=config.resize)
        # epochs: null and head: auto are resolved on the training view (any member shows the endpoints)
        config, proposal = resolve_for_data(config, self.train_view, self.space.sample(0))
        torch.manual_seed(config.seed)  # the supernet's initial weights
        supernet = build_supernet(config, self.train_view.num_classes, self.space)
        super().__init__(config, out_dir, model=supernet, train_set=self.train_view)
        self.head_proposal = proposal
        # Trainer sets the momentum of registered batch norms; shared-weight templates are not registered.
        self.model.set_bn_momentum(config.bn_momentum)
    def wrap_distributed(self, model: torch.nn.Module) -> torch.nn.Module:
        # Each step trains one path, so most parameters are unused: DDP must be told (the path
        # is the same on every rank, since it depends only on (seed, step)).
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(model, find_unused_parameters=True)

    def train_step(self, images: torch.Tensor, targets: list[dict[str, Any]]) -> dict[str, float]:
        config = self.config
        paths = step_paths(self.space, config.sampling, self.step, config.seed, resolution=config.resolution,
                           head=self.model.head_spec)
        if len(paths) == 1:
            self.model.set_active(paths[0])
            return super().train_step(images, targets)
        # Several paths, one update: their gradients are summed (FairNAS, BigNAS).
        lr = self.set_learning_rate()
        images, boxes, labels = self.prepare_batch(images, targets)
        self.optimizer.zero_grad(set_to_none=True)
        totals = {"loss": 0.0, "classification": 0.0, "localization": 0.0}
        teacher = None
        for index, path in enumerate(paths):
            self.model.set_active(path)
            losses, class_logits = self.forward_loss(images, boxes, labels)
            loss = losses["loss"]
            if config.sampling == "sandwich" and index == 0:
                teacher = class_logits.detach()  # the largest path teaches the others
            elif teacher is not None and config.distill_weight:
                loss = loss + config.distill_weight * distillation_loss(class_logits, teacher, losses["matches"])
            self.scaler.scale(loss).backward()
            for key in totals:
                totals[key] += float(losses[key].detach()) / len(paths)
        self.apply_gradients()
        return {**totals, "lr": lr}

    def run(self) -> dict[str, Any]:
        self.out.mkdir(parents=True, exist_ok=True)
        if self.dist.is_main:
            write_json_atomic(self.out / "search_split.json", split_record(self.split, self.train_view,
                                                                           self.search_view))
            write_json_atomic(self.out / "supernet.json", {
                "space": self.space.to_description(), "weight_sharing": self.config.weight_sharing,
                "parameters": sum(p.numel() for p in self.model.parameters()),
                "train_images": len(self.train_view), "search_images": len(self.search_view)})
        return super().run()


def train_supernet(config: SupernetTrainConfig, out_dir: str | Path) -> dict[str, Any]:
    return SupernetTrainer(config, out_dir).run()


# ---- reading a run back ---------------------------------------------------------------------------
@dataclass(frozen=True)
class SupernetRun:
    """A trained supernet on disk: its settings and weights (loaded as data, never unpickled)."""

    config: SupernetTrainConfig
    weights: dict[str, torch.Tensor]
    path: Path  # the weights file

    @property
    def directory(self) -> Path:
        return self.path.parent


def read_supernet_run(path: str | Path) -> SupernetRun:
    """A supernet checkpoint.pt, model.pt (with config.json beside it) or run directory (its
    model.pt when finished, else checkpoint.pt). Raises one clear error per bad input."""
    path = Path(path)
    if path.is_dir():
        candidates = [path / "model.pt", path / "checkpoint.pt"]
        found = [p for p in candidates if p.is_file()]
        if not found:
            raise FileNotFoundError(f"{path} holds no model.pt or checkpoint.pt (is it a `tdbnas supernet train` "
                                    "run directory?)")
        path = found[0]
    if not path.is_file():
        raise FileNotFoundError(f"supernet checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same clear message
        raise ValueError(f"{path} is not a readable checkpoint ({type(exc).__name__}: {exc})") from exc
    if isinstance(state, dict) and state.get("format") == CHECKPOINT_FORMAT:
        if state.get("version") != CHECKPOINT_VERSION:
            raise ValueError(f"{path} has checkpoint version {state.get('version')}; this tdbnas reads "
                             f"version {CHECKPOINT_VERSION}")
        settings, weights = json.loads(state["config"]), state["model"]
    elif isinstance(state, dict) and state and all(isinstance(v, torch.Tensor) for v in state.values()):
        beside = path.parent / "config.json"
        if not beside.is_file():
            raise ValueError(f"{path} is a bare state dict with no config.json beside it; pass the run's "
                             "checkpoint.pt or keep its config.json next to the weights")
        settings, weights = json.loads(beside.read_text()), state
    else:
        raise ValueError(f"{path} holds neither a tdbnas checkpoint nor a state dict")
    if "space" not in settings:
        raise ValueError(f"{path} is a detector checkpoint (`tdbnas train`), not a supernet checkpoint "
                         "(`tdbnas supernet train`): its settings name no search space")
    config = SupernetTrainConfig.from_dict(settings)
    return SupernetRun(config, weights, path)


def load_supernet(run: SupernetRun, num_classes: int, space: BlockSpace | None = None) -> Supernet:
    """The run's supernet with its weights; a different space, or changed description, is an error."""
    supernet = build_supernet(run.config, num_classes, space)
    try:
        supernet.load_state_dict(run.weights)
    except RuntimeError as exc:
        raise ValueError(f"{run.path} does not fit a supernet over space {supernet.space.name!r} with "
                         f"{num_classes} classes: {str(exc).splitlines()[0]} {_first_problem(exc)}") from None
    except ValueError as exc:
        raise ValueError(f"{run.path}: {exc} (the run was trained on space {run.config.space!r})") from None
    return supernet.eval()


def _first_problem(exc: RuntimeError) -> str:
    lines = [line.strip() for line in str(exc).splitlines()[1:] if line.strip()]
    return lines[0][:300] if lines else ""


