"""One torch module per layer kind, all with the constructor `(config, norm)`.

`config` is a placed layer (`LayerConfig`: spec, input channels, derived shortcut); inner
widths come from the spec's own helpers (`hidden`, `ranks`, `mid`), the same ones cost
counting and the Keras lowering use, so the three cannot drift apart. Blocks know nothing
of search, latency or export.
"""

from __future__ import annotations

import torch
from torch import nn

from tdbnas.spaces.arch import LayerConfig
from tdbnas.spaces.channels import round_channels
from tdbnas.spaces.layers import (
    IBN,
    Conv,
    DepthwiseSeparable,
    FusedIBN,
    Layer,
    ShuffleBlock,
    Skip,
    Tucker,
    XceptionBlock,
)
from tdbnas.spaces.nn.ops import DEFAULT_NORM, ConvBNAct, NormSettings, SqueezeExcite


class ConvLayer(nn.Module):
    """`conv`: k x k conv -> BN -> act."""

    def __init__(self, config: LayerConfig, norm: NormSettings):
        super().__init__()
        spec: Conv = config.layer  # type: ignore[assignment]
        self.conv = ConvBNAct(config.in_channels, spec.out, spec.kernel, spec.stride, act=spec.act, norm=norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class InvertedBottleneck(nn.Module):
    """`ir`, `ds` and `er`: [1x1 expand] -> k x k depthwise | k x k regular expand -> [SE] -> 1x1 linear,
    plus the shortcut when the config derives one."""

    def __init__(self, config: LayerConfig, norm: NormSettings):
        super().__init__()
        spec: IBN | DepthwiseSeparable | FusedIBN = config.layer  # type: ignore[assignment]
        cin, hidden = config.in_channels, spec.hidden(config.in_channels)
        if isinstance(spec, IBN):
            self.expand = ConvBNAct(cin, hidden, 1, act=spec.act, norm=norm)
            self.spatial = ConvBNAct(hidden, hidden, spec.kernel, spec.stride, groups=hidden, act=spec.act, norm=norm)
        elif isinstance(spec, DepthwiseSeparable):
            self.expand = nn.Identity()
            self.spatial = ConvBNAct(cin, cin, spec.kernel, spec.stride, groups=cin, act=spec.act, norm=norm)
        else:  # fused: one regular conv does expansion and spatial mixing
            self.expand = nn.Identity()
            self.spatial = ConvBNAct(cin, hidden, spec.kernel, spec.stride, act=spec.act, norm=norm)
        self.se = SqueezeExcite(hidden, round_channels(hidden, spec.se), spec.act) if spec.se else nn.Identity()
        self.project = ConvBNAct(hidden, spec.out, 1, act=None, norm=norm)
        self.residual = config.residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.expand(x)  # [N, hidden, H, W]
        x = self.spatial(x)  # [N, hidden, H/s, W/s]
        x = self.se(x)
        x = self.project(x)  # [N, out, H/s, W/s]
        return x + shortcut if self.residual else x


class TuckerBottleneck(nn.Module):
    """`tk`: 1x1 compress to round8(in*i) -> k x k regular conv to round8(out*o) -> 1x1 linear."""

    def __init__(self, config: LayerConfig, norm: NormSettings):
        super().__init__()
        spec: Tucker = config.layer  # type: ignore[assignment]
        in_rank, out_rank = spec.ranks(config.in_channels)
        self.compress = ConvBNAct(config.in_channels, in_rank, 1, act=spec.act, norm=norm)
        self.core = ConvBNAct(in_rank, out_rank, spec.kernel, spec.stride, act=spec.act, norm=norm)
        self.project = ConvBNAct(out_rank, spec.out, 1, act=None, norm=norm)
        self.residual = config.residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.core(self.compress(x)))
        return y + x if self.residual else y


class ChannelSplitBlock(nn.Module):
    """`sh` and `xc` (DetNAS `ShuffleNetV2BlockSearched`). Stride 1: split the channels into the
    even and odd ones (ShuffleNetV2's shuffle + split), keep one half, transform the other,
    concatenate. Stride 2: a dw k x k -> 1x1 projection of the input beside the main branch."""

    def __init__(self, config: LayerConfig, norm: NormSettings):
        super().__init__()
        spec: ShuffleBlock | XceptionBlock = config.layer  # type: ignore[assignment]
        cin, mid, k, s, act = config.in_channels, spec.mid(), spec.kernel, spec.stride, spec.act
        self.stride = s
        if s == 1:
            branch_in, branch_out = cin // 2, spec.out // 2
            self.proj = nn.Identity()
        else:
            branch_in, branch_out = cin, spec.out - cin
            self.proj = nn.Sequential(ConvBNAct(cin, cin, k, s, groups=cin, act=None, norm=norm),
                                      ConvBNAct(cin, cin, 1, act=act, norm=norm))
        if isinstance(spec, ShuffleBlock):
            self.main = nn.Sequential(ConvBNAct(branch_in, mid, 1, act=act, norm=norm),
                                      ConvBNAct(mid, mid, k, s, groups=mid, act=None, norm=norm),
                                      ConvBNAct(mid, branch_out, 1, act=act, norm=norm))
        else:
            self.main = nn.Sequential(ConvBNAct(branch_in, branch_in, k, s, groups=branch_in, act=None, norm=norm),
                                      ConvBNAct(branch_in, mid, 1, act=act, norm=norm),
                                      ConvBNAct(mid, mid, k, groups=mid, act=None, norm=norm),
                                      ConvBNAct(mid, mid, 1, act=act, norm=norm),
                                      ConvBNAct(mid, mid, k, groups=mid, act=None, norm=norm),
                                      ConvBNAct(mid, branch_out, 1, act=act, norm=norm))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            kept, x = x[:, 0::2], x[:, 1::2]  # [N, C/2, H, W] each
        else:
            kept = self.proj(x)  # [N, C_in, H/2, W/2]
        return torch.cat((kept, self.main(x)), dim=1)


BLOCKS: dict[type[Layer], type[nn.Module]] = {
    Conv: ConvLayer,
    IBN: InvertedBottleneck,
    DepthwiseSeparable: InvertedBottleneck,
    FusedIBN: InvertedBottleneck,
    Tucker: TuckerBottleneck,
    ShuffleBlock: ChannelSplitBlock,
    XceptionBlock: ChannelSplitBlock,
}


def build_layer(config: LayerConfig, norm: NormSettings = DEFAULT_NORM) -> nn.Module:
    """The torch module of one placed layer (`nn.Identity` for `skip`)."""
    if isinstance(config.layer, Skip):
        return nn.Identity()
    try:
        block = BLOCKS[type(config.layer)]
    except KeyError:
        raise TypeError(f"no torch block for layer kind {type(config.layer).__name__}") from None
    return block(config, norm)
