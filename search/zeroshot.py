"""Training-free ("zero-shot") accuracy signals of a detector, computed at initialisation.

Each score builds the candidate as the real SSDLite detector (backbone, extra layers and
predictors of the run's head) at the training resolution and looks at it before any training,
on detection inputs: Gaussian images of the training size, or a fixed batch of real training
images with their boxes. Cost: a forward (and for some a backward) pass of a small batch, well
under a second per candidate on one CPU thread, so a search can score thousands of candidates.

* `entropy` — MAE-DET / DeepMAD (Sun et al., ICML 2022): the differential entropy of the
  multi-scale features of the backbone with Gaussian weights and inputs, BN removed and ReLU,
  Σ_s w_s (log σ_s + log C_s) over the feature maps the head reads (C3, C4, C5: weights 1, 1, 6,
  MAE-DET's for its last three stages; log C_s as in its reference code).
* `zen` — Zen-score (Lin et al., ICCV 2021): log E‖f(x) − f(x + αε)‖ + Σ_BN log √(mean σ²_BN),
  Gaussian weights, BN on batch statistics, α = 0.01, f = the detector's outputs (all
  predictors).
* `naswot` — NASWOT (Mellor et al., ICML 2021): log |det K| of the kernel of binary ReLU
  activation codes over a batch of real images, K_ij = Σ_layers (N_units − Hamming(c_i, c_j)).
* `synflow` — SynFlow (Tanaka et al., NeurIPS 2020; the zero-cost-proxy form of Abdelfattah
  et al., ICLR 2021): log Σ |θ ⊙ ∂R/∂θ| with |θ|, an all-ones input and R = Σ outputs, in float64,
  activations as identity and BN as identity (the linearised network the score is defined on).
* `gradnorm` — log Σ_layers ‖∂L/∂W‖ of the detection loss on a real batch (Abdelfattah et al.).

Higher is better for every score. All are deterministic for a given seed and batch.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from tdbnas.spaces import ArchSpec, SSDLiteHead, as_hw, resolve_arch

ZERO_SHOT = ("entropy", "zen", "naswot", "synflow", "gradnorm")
#: MAE-DET's stage weights for its last three stages (C3, C4, C5), and 1 for any other map.
ENTROPY_WEIGHTS = {"C3": 1.0, "C4": 1.0, "C5": 6.0}
ZEN_ALPHA = 0.01
#: Keeps a log finite when a score is exactly zero (e.g. a dead network).
TINY = 1e-300


@dataclass(frozen=True)
class ZeroShotSettings:
    batch_size: int = 8       # images per score (Gaussian or real)
    naswot_batch: int = 16    # the NASWOT kernel is batch x batch
    seed: int = 0

    def __post_init__(self) -> None:
        if self.batch_size < 2 or self.naswot_batch < 2:
            raise ValueError("zero-shot scores need batches of at least 2 images")


class ZeroShotScorer:
    """`score(arch) -> {name: value}` for the zero-shot scores of `names`.

    `data` (a COCO-format dataset root) supplies the real images of `naswot` and `gradnorm`
    (the first images of `split`, resized as in training); without it those two are unavailable.
    """

    def __init__(self, *, resolution: int | Sequence[int], head: SSDLiteHead, data: str | Path | None = None,
                 split: str = "train", names: Sequence[str] = ZERO_SHOT,
                 settings: ZeroShotSettings = ZeroShotSettings()):
        unknown = sorted(set(names) - set(ZERO_SHOT))
        if unknown:
            raise ValueError(f"unknown zero-shot scores {unknown}; known: {', '.join(ZERO_SHOT)}")
        needs_data = sorted(set(names) & {"naswot", "gradnorm"})
        if needs_data and data is None:
            raise ValueError(f"the zero-shot scores {needs_data} need real images: give a dataset")
        self.hw, self.head, self.names, self.settings = as_hw(resolution), head, tuple(names), settings
        self.images = self.boxes = self.labels = None
        if needs_data:
            self.images, self.boxes, self.labels = _real_batch(data, split, self.hw, max(settings.batch_size,
                                                                                          settings.naswot_batch))

    def model(self, arch: ArchSpec) -> nn.Module:
        """The candidate detector with its training initialisation (seeded)."""
        from tdbnas.detection.model import SSDLite

        torch.manual_seed(self.settings.seed)
        return SSDLite(arch, num_classes=self.head.num_classes, head=self.head)

    def gaussian(self, batch: int, offset: int = 0) -> torch.Tensor:
        generator = torch.Generator().manual_seed(self.settings.seed * 7919 + offset)
        return torch.randn(batch, 3, *self.hw, generator=generator)

    def score(self, arch: ArchSpec | str) -> dict[str, Any]:
        arch = resolve_arch(arch) if isinstance(arch, str) else arch
        result: dict[str, Any] = {}
        seconds: dict[str, float] = {}
        for name in self.names:
            started = time.perf_counter()
            with torch.random.fork_rng():
                result[name] = float(getattr(self, f"_{name}")(arch))
            seconds[name] = round(time.perf_counter() - started, 4)
        result["seconds"] = seconds
        return result

    # ---- the scores ------------------------------------------------------------------------
    def _entropy(self, arch: ArchSpec) -> float:
        model = self.model(arch)
        _gaussian_weights(model)
        _plain(model, activations=False)  # MAE-DET: no BN, ReLU
        # Without BN a 30-layer Gaussian network overflows: each backbone layer's output is
        # divided by its σ and log σ is accumulated. Every op inside is positively homogeneous
        # (conv without bias, ReLU, residual add within the layer), so this is exact.
        log_sigma = {"running": 0.0}
        produced: dict[int, float] = {}

        def normalise(module, inputs, output):
            sigma = float(output.std())
            log_sigma["running"] += math.log(max(sigma, TINY))
            output = output / max(sigma, TINY)
            produced[id(output)] = log_sigma["running"]
            return output

        layers = [layer for block in model.backbone.blocks for layer in block]
        handles = [layer.register_forward_hook(normalise) for layer in layers]
        try:
            with torch.no_grad():
                features = model.backbone(self.gaussian(self.settings.batch_size))
        finally:
            for handle in handles:
                handle.remove()
        total = 0.0
        for name, feature in zip(model.head_spec.from_features, features):
            total += ENTROPY_WEIGHTS.get(name, 1.0) * (produced[id(feature)] + math.log(feature.shape[1]))
        return total

    def _zen(self, arch: ArchSpec) -> float:
        model = self.model(arch)
        _gaussian_weights(model)
        batch = self.settings.batch_size
        x, noise = self.gaussian(batch, 1), self.gaussian(batch, 2)
        variances = _BatchVariance(model)
        with torch.no_grad():
            model.train()
            with variances:
                boxes, classes = model(x)
            perturbed_boxes, perturbed_classes = model(x + ZEN_ALPHA * noise)
        difference = torch.cat([(boxes - perturbed_boxes).flatten(1), (classes - perturbed_classes).flatten(1)], 1)
        expected = float(difference.norm(dim=1).mean())
        return math.log(max(expected, TINY)) + sum(0.5 * math.log(max(v, TINY)) for v in variances.values)

    def _naswot(self, arch: ArchSpec) -> float:
        model = self.model(arch).train()
        images = self.images[: self.settings.naswot_batch]
        n = images.shape[0]
        kernel = torch.zeros(n, n, dtype=torch.float64)

        def hook(module, inputs, output):
            codes = (output.detach().flatten(1) > 0).to(torch.float64)
            # agreements = matches of ones + matches of zeros = N_units - Hamming distance
            kernel.add_(codes @ codes.t() + (1 - codes) @ (1 - codes).t())

        handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.ReLU | nn.ReLU6)]
        try:
            with torch.no_grad():
                model(images)
        finally:
            for handle in handles:
                handle.remove()
        sign, logdet = torch.linalg.slogdet(kernel)
        return float(logdet) if float(sign) > 0 else -math.inf

    def _synflow(self, arch: ArchSpec) -> float:
        model = self.model(arch).double()
        _plain(model, activations=True)
        with torch.no_grad():
            for param in model.parameters():
                param.abs_()
        model.eval()
        ones = torch.ones(1, 3, *self.hw, dtype=torch.float64)
        boxes, classes = model(ones)
        (boxes.sum() + classes.sum()).backward()
        total = sum(float((p.detach() * p.grad).abs().sum()) for p in model.parameters() if p.grad is not None)
        return math.log(max(total, TINY))

    def _gradnorm(self, arch: ArchSpec) -> float:
        from tdbnas.detection.loss import DetectionLoss

        model = self.model(arch).train()
        loss_fn = DetectionLoss(model.anchors(self.hw), model.num_classes, model.head_spec.background_class)
        count = self.settings.batch_size
        box_deltas, class_logits = model(self.images[:count])
        loss_fn(box_deltas, class_logits, self.boxes[:count], self.labels[:count])["loss"].backward()
        total = sum(float(m.weight.grad.norm()) for m in model.modules()
                    if isinstance(m, nn.Conv2d) and m.weight.grad is not None)
        return math.log(max(total, TINY))


# ---- helpers ------------------------------------------------------------------------------------
def _gaussian_weights(model: nn.Module) -> None:
    """N(0, 1) conv weights (MAE-DET, Zen-NAS), zero biases, BN scale 1 / offset 0."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Conv2d):
                module.weight.normal_()
                if module.bias is not None:
                    module.bias.zero_()
            elif isinstance(module, nn.BatchNorm2d):
                module.weight.fill_(1.0)
                module.bias.zero_()


def _plain(model: nn.Module, *, activations: bool) -> None:
    """BN -> identity; ReLU6 -> ReLU (`activations=False`: MAE-DET's plain ReLU network) or
    every activation -> identity (`activations=True`: SynFlow's linearised network; with |θ| and
    a positive input ReLU is the identity anyway, while ReLU6 would clip the growing signal to 6
    and zero every gradient)."""
    for module in list(model.modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, nn.BatchNorm2d):
                setattr(module, child_name, nn.Identity())
            elif isinstance(child, nn.ReLU | nn.ReLU6 | nn.Hardswish):
                setattr(module, child_name, nn.Identity() if activations else nn.ReLU())


class _BatchVariance:
    """The mean over channels of every BN's input batch variance during one forward pass."""

    def __init__(self, model: nn.Module):
        self.model, self.values, self.handles = model, [], []

    def __enter__(self):
        self.values.clear()
        for module in self.model.modules():
            if isinstance(module, nn.BatchNorm2d):
                self.handles.append(module.register_forward_pre_hook(
                    lambda m, inputs: self.values.append(float(inputs[0].detach().var(dim=(0, 2, 3)).mean()))))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles.clear()


def _real_batch(data: str | Path, split: str, hw: tuple[int, int], count: int):
    """The first `count` images of `split` (evaluation transform) with boxes and labels."""
    from tdbnas.detection.data import build_dataset, collate_detection

    dataset = build_dataset(data, split, size=hw, train=False)
    if len(dataset) < 2:
        raise ValueError(f"{data} split {split!r} has {len(dataset)} images; zero-shot scores need at least 2")
    images, targets = collate_detection([dataset[i] for i in range(min(count, len(dataset)))])
    return images, [t["boxes"] for t in targets], [t["labels"] for t in targets]


def rank_correlations(values: Sequence[float], truth: Sequence[float]) -> dict[str, float]:
    """Kendall tau and Spearman rho of a signal against ground truth (NaN-free inputs)."""
    from scipy.stats import kendalltau, spearmanr

    values, truth = np.asarray(values, dtype=float), np.asarray(truth, dtype=float)
    return {"kendall": float(kendalltau(values, truth).statistic),
            "spearman": float(spearmanr(values, truth).statistic)}
