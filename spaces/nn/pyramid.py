"""The feature pyramid in torch: modules that hold weights, and one forward that wires them.

`Pyramid(spec, in_channels)` holds the weights of one pyramid (`spec`: `tdbnas.spaces.pyramid`):

    lateral.<j>        1x1 conv + BN per backbone input level whose width differs (else Identity)
    extra.<j>          per extra level: 2x2 max-pool, or ReLU -> 3x3 stride-2 conv -> BN
    cells.<r>.<i>      per stack r and cell i: ReLU -> 3x3 conv -> BN (separable: 3x3 depthwise
                       -> 1x1 -> BN)

The wiring (resampling, binary ops, absorbed maps) has no weights and lives in
`pyramid_forward`, which takes the weight-holding modules as callables: the stand-alone
`Pyramid` and the weight-sharing supernet run the same function, so a path of the supernet
computes what the extracted network computes. The Keras lowering
(`tdbnas.export.keras_pyramid`) mirrors it with native 'SAME' pooling and TF's nearest resize
with half-pixel centres (here two index gathers computed by TF's float32 rule).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tdbnas.spaces.nn.ops import DEFAULT_NORM, Conv2dSame, ConvBNAct, NormSettings, init_weights
from tdbnas.spaces.pyramid import PyramidSpec


class MaxPool2x2(nn.Module):
    """2x2 stride-2 max-pool with TF 'SAME' geometry: ceil(size / 2), the odd row or column
    pooled alone (TF pads it with values that never win the max)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return downsample(x, 1)


class PyramidConv(nn.Module):
    """ReLU -> 3x3 conv (stride 1 or 2) -> BN, or ReLU -> 3x3 depthwise -> 1x1 -> BN when
    `separable` (TF `separable_conv2d`: no BN between the two)."""

    def __init__(self, channels: int, stride: int = 1, separable: bool = False, norm: NormSettings = DEFAULT_NORM):
        super().__init__()
        self.separable = separable
        if separable:
            self.depthwise = Conv2dSame(channels, channels, 3, stride, groups=channels)
            self.pointwise = ConvBNAct(channels, channels, 1, act=None, norm=norm)
        else:
            self.conv = ConvBNAct(channels, channels, 3, stride, act=None, norm=norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(x)
        if self.separable:
            return self.pointwise(self.depthwise(x))
        return self.conv(x)


def downsample(x: torch.Tensor, levels: int) -> torch.Tensor:
    """`levels` 2x2 max-pools: [N, C, H, W] -> [N, C, ceil(H / 2**levels), ...]."""
    for _ in range(levels):
        x = F.max_pool2d(x, 2, 2, ceil_mode=True)  # a window hanging over the edge pools what it covers
    return x


@functools.lru_cache(maxsize=1024)
def nearest_indices(size_in: int, size_out: int) -> tuple[int, ...]:
    """Source row (or column) of each output one of a nearest resize with half-pixel centres,
    computed in float32 exactly as TF's and TFLite's kernels do:
    `min(floor((dst + 0.5f) * (float(in) / out)), in - 1)` (torch's `nearest-exact` rule)."""
    scale = np.float32(size_in) / np.float32(size_out)
    source = np.floor((np.arange(size_out, dtype=np.float32) + np.float32(0.5)) * scale).astype(np.int64)
    return tuple(int(v) for v in np.minimum(source, size_in - 1))


def upsample(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Nearest-neighbour resize to `size` with half-pixel centres (TF `half_pixel_centers=True`),
    as two gathers: exports to ONNX (`Gather`) where `nearest-exact` interpolation does not."""
    rows = torch.tensor(nearest_indices(int(x.shape[-2]), int(size[0])), device=x.device)
    cols = torch.tensor(nearest_indices(int(x.shape[-1]), int(size[1])), device=x.device)
    return x.index_select(-2, rows).index_select(-1, cols)


def merge(op: str, a: torch.Tensor, b: torch.Tensor, gate: int | None) -> torch.Tensor:
    """`sum`: a + b. `gp`: g + o * sigmoid(global max of g), g the gate input (TF `global_attention`)."""
    if op == "sum":
        return a + b
    g, o = (a, b) if gate == 0 else (b, a)
    return g + o * torch.sigmoid(torch.amax(g, dim=(2, 3), keepdim=True))


Apply = Callable[..., torch.Tensor]


def pyramid_forward(spec: PyramidSpec, features: Sequence[torch.Tensor], lateral: Apply, extra: Apply,
                    cell: Apply) -> list[torch.Tensor]:
    """The pyramid's maps P<min>..P<max> from the backbone's C<min>.. (level order).

    `lateral(j, x)` brings input level j to the pyramid width, `extra(j, x)` makes extra level j
    from the level below, `cell(r, i, x)` is the ReLU -> conv -> BN of cell i in stack r."""
    pool = [lateral(j, x) for j, x in enumerate(features)]  # [N, width, H_k, W_k] each
    for j in range(spec.num_levels - len(features)):
        pool.append(extra(j, pool[-1]))
    plan, count, low = spec.plan(), spec.num_levels, spec.min_level
    for r in range(spec.stack):
        sizes = [tuple(x.shape[-2:]) for x in pool]
        nodes, levels = list(pool), list(spec.levels)
        for c in plan:
            inputs = []
            for index in c.inputs:
                x, level = nodes[index], levels[index]
                if level < c.level:
                    x = downsample(x, c.level - level)
                elif level > c.level:
                    x = upsample(x, sizes[c.level - low])
                inputs.append(x)
            x = merge(c.op, inputs[0], inputs[1], c.gate)
            for index in c.absorbed:
                x = x + nodes[index]
            nodes.append(cell(r, c.index, x))
            levels.append(c.level)
        outputs = {levels[n]: nodes[n] for n in range(len(nodes) - count, len(nodes))}
        pool = [outputs[level] for level in spec.levels]
    return pool


class Pyramid(nn.Module):
    """A stand-alone pyramid on backbone maps of widths `in_channels` (C<min>.., level order)."""

    def __init__(self, spec: PyramidSpec, in_channels: Sequence[int], width_multiplier: float = 1.0,
                 norm: NormSettings = DEFAULT_NORM):
        super().__init__()
        if not 1 <= len(in_channels) <= spec.num_levels:
            raise ValueError(f"the pyramid reads 1..{spec.num_levels} backbone levels, got {len(in_channels)}")
        self.spec = spec
        width = spec.scaled_width(width_multiplier)
        self.lateral = nn.ModuleList(nn.Identity() if cin == width else ConvBNAct(cin, width, 1, act=None, norm=norm)
                                     for cin in in_channels)
        extras = spec.num_levels - len(in_channels)
        self.extra = nn.ModuleList(MaxPool2x2() if spec.extra == "pool" else
                                   PyramidConv(width, 2, spec.separable, norm) for _ in range(extras))
        self.cells = nn.ModuleList(nn.ModuleList(PyramidConv(width, 1, spec.separable, norm) for _ in spec.cells)
                                   for _ in range(spec.stack))
        init_weights(self)

    def forward(self, features: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        return pyramid_forward(self.spec, features, lambda j, x: self.lateral[j](x), lambda j, x: self.extra[j](x),
                               lambda r, i, x: self.cells[r][i](x))


__all__ = ["MaxPool2x2", "Pyramid", "PyramidConv", "downsample", "merge", "pyramid_forward", "upsample"]
