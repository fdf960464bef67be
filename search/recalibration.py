"""Per-path batch-norm recalibration: exact statistics of one path before scoring it.

In a weight-sharing supernet the running statistics of a batch norm mix every path that went
through it during training, so they fit no single path. DetNAS therefore resets the
statistics and re-estimates them for each candidate on training images before evaluating it
(official `test_server.py::bn_statistic`: reset mean 0 / var 1, forward passes in train mode
under `no_grad` with the path fixed; reference §2.2). Its EMA with momentum 0.1 over 500
iterations is dominated by the last few dozen batches; here the statistics are an exact
average over the N images instead, as OFA does (`set_running_statistics`, 2,000 images):

    running_mean = mean over the N images of the activations' per-batch means,
    running_var  = mean over the N images of the per-batch (unbiased) variances,

each batch weighted by its number of images. That is PyTorch's cumulative average
(`momentum=None`, which weights batches equally) generalised to a short last batch: batch k
of b images enters with momentum b / (images so far + b). With equal batches the two are
identical; with one batch holding all N images the statistics are exactly the activations'
mean and unbiased variance. The images are the same for every candidate (seeded choice from
the training data, resize only), so candidates are compared on equal terms.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


@dataclass(frozen=True)
class RecalibrationSettings:
    """How many training images (DetNAS: 500), in batches of `batch_size`, chosen by `seed`."""

    images: int = 500
    batch_size: int = 32
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("images", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"recalibration {name} must be a positive integer, got {value!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


DEFAULT_RECALIBRATION = RecalibrationSettings()


def recalibration_indices(num_images: int, images: int, seed: int = 0) -> list[int]:
    """The first `images` positions of a seeded permutation of the dataset (all if it has fewer)."""
    order = np.random.default_rng(seed).permutation(num_images)
    return [int(i) for i in order[:images]]


def path_batchnorms(model: nn.Module) -> list[_BatchNorm]:
    """The batch norms `model`'s forward runs: the active path's for a supernet, else all."""
    active = getattr(model, "active_batchnorms", None)
    if callable(active):
        return list(active())
    return [m for m in model.modules() if isinstance(m, _BatchNorm)]


def recalibrate_bn(model: nn.Module, dataset, settings: RecalibrationSettings = DEFAULT_RECALIBRATION, *,
                   workers: int = 0) -> dict[str, Any]:
    """Reset and re-estimate the running statistics of every batch norm `model` runs.

    `dataset` yields (image, target) pairs (a training view with evaluation transforms). The
    model runs in train mode under `no_grad`; momenta and train/eval mode are restored
    afterwards. Returns what was done: images and batches used, batch norms touched, seconds.
    """
    from torch.utils.data import DataLoader, Subset

    from tdbnas.detection.data import collate_detection

    norms = path_batchnorms(model)
    untracked = [m for m in norms if not m.track_running_stats]
    if untracked:
        raise ValueError(f"{len(untracked)} batch norm(s) keep no running statistics (track_running_stats=False); "
                         "there is nothing to recalibrate")
    if len(dataset) == 0:
        raise ValueError("no images to recalibrate batch-norm statistics on")
    indices = recalibration_indices(len(dataset), settings.images, settings.seed)
    loader = DataLoader(Subset(dataset, indices), batch_size=settings.batch_size, shuffle=False,
                        num_workers=workers, collate_fn=collate_detection)
    device = next(model.parameters()).device
    momenta = [m.momentum for m in norms]
    was_training = model.training
    reset: set[int] = set()

    def reset_on_first_run(module: _BatchNorm, _inputs) -> None:
        # Lazily, while the module runs: a shared-weight template holds its slice of the shared
        # statistics only during its call.
        if id(module) not in reset:
            module.reset_running_stats()
            reset.add(id(module))

    hooks = [m.register_forward_pre_hook(reset_on_first_run) for m in norms]
    started, seen, batches = time.perf_counter(), 0, 0
    try:
        model.train()
        with torch.no_grad():
            for images, _ in loader:
                count = images.shape[0]
                for module in norms:
                    module.momentum = count / (seen + count)
                model(images.to(device))
                seen, batches = seen + count, batches + 1
    finally:
        for hook in hooks:
            hook.remove()
        for module, momentum in zip(norms, momenta):
            module.momentum = momentum
        model.train(was_training)
    if len(reset) != len({id(m) for m in norms}):
        raise RuntimeError(f"{len(norms) - len(reset)} batch norm(s) of the path never ran during recalibration")
    return {"images": seen, "batches": batches, "batch_size": settings.batch_size, "batchnorms": len(norms),
            "seconds": round(time.perf_counter() - started, 3)}
