"""Torch building pieces shared by the blocks: TF-'SAME' convolution, conv+BN+activation,
squeeze-excite, initialisation.

Padding follows TensorFlow's 'SAME' rule so that the Keras/TFLite lowering (which uses
native 'SAME') computes the same function: at stride 1 with an odd kernel it is the usual
symmetric `k // 2`; at stride 2 TF puts the odd pixel at the bottom/right, which depends on
the input size, so the padding is computed per call.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

# TF truncated-normal initialisers divide by this to get the requested std after truncation.
_TRUNCATED_NORMAL_STD = 0.87962566103423978


@dataclass(frozen=True)
class NormSettings:
    """Batch-norm settings. Defaults are the MobileDet backbone's (BN decay 0.99 -> torch
    momentum 0.01, epsilon 0.01; reference §1.1)."""

    eps: float = 0.01
    momentum: float = 0.01


DEFAULT_NORM = NormSettings()


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """(before, after) padding of TF 'SAME' for one spatial dimension."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class Conv2dSame(nn.Conv2d):
    """`nn.Conv2d` with TensorFlow 'SAME' padding."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int = 1,
                 groups: int = 1, bias: bool = False):
        symmetric = stride == 1
        super().__init__(in_channels, out_channels, kernel, stride,
                         padding=kernel // 2 if symmetric else 0, groups=groups, bias=bias)
        self._pad_per_call = not symmetric and kernel > 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._pad_per_call:
            k, s = self.kernel_size[0], self.stride[0]
            top, bottom = same_padding(x.shape[-2], k, s)
            left, right = same_padding(x.shape[-1], k, s)
            x = F.pad(x, (left, right, top, bottom))
        return super().forward(x)


def activation(name: str | None) -> nn.Module:
    if name is None:
        return nn.Identity()
    if name == "relu6":
        return nn.ReLU6()
    if name == "hswish":
        return nn.Hardswish()  # x * relu6(x + 3) / 6, TF's swish6
    if name == "relu":
        return nn.ReLU()
    raise ValueError(f"unknown activation {name!r}")


class ConvBNAct(nn.Sequential):
    """Conv (no bias) -> BatchNorm -> activation (`act=None`: linear)."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int = 1, stride: int = 1,
                 groups: int = 1, act: str | None = "relu6", norm: NormSettings = DEFAULT_NORM):
        super().__init__()
        self.conv = Conv2dSame(in_channels, out_channels, kernel, stride, groups=groups)
        self.bn = nn.BatchNorm2d(out_channels, eps=norm.eps, momentum=norm.momentum)
        self.act = activation(act)


class SqueezeExcite(nn.Module):
    """TF MobileDet `_squeeze_and_excite`: global mean -> 1x1 conv + bias (block activation)
    -> 1x1 conv + bias -> sigmoid -> scale. Hidden width `round8(channels * ratio)`."""

    def __init__(self, channels: int, hidden: int, act: str):
        super().__init__()
        self.reduce = nn.Conv2d(channels, hidden, 1, bias=True)
        self.act = activation(act)
        self.expand = nn.Conv2d(hidden, channels, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = x.mean(dim=(2, 3), keepdim=True)  # [N, C, 1, 1]
        scale = torch.sigmoid(self.expand(self.act(self.reduce(scale))))
        return x * scale


def init_weights(module: nn.Module) -> None:
    """TF initialisation of the MobileDet code: He-normal (truncated at 2 std) on every conv,
    fan-in = k*k*C_in/groups, which for a depthwise conv is the paper's sqrt(2/k^2)/0.8796;
    zero biases; BN scale 1, offset 0."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            fan_in = m.weight[0].numel()
            std = math.sqrt(2.0 / fan_in) / _TRUNCATED_NORMAL_STD
            nn.init.trunc_normal_(m.weight, std=std, a=-2 * std, b=2 * std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
