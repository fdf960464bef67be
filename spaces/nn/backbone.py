"""A torch backbone built from any `ArchSpec`, publishing its endpoints without a forward pass."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from tdbnas.spaces.arch import ArchSpec, FeatureInfo
from tdbnas.spaces.nn.blocks import build_layer
from tdbnas.spaces.nn.ops import DEFAULT_NORM, NormSettings, init_weights


class Backbone(nn.Module):
    """`blocks[b][i]` is layer i of block b of the spec (module names trace back to the string).

    `forward` returns the endpoints named in `out_features` (default: all of C1..C5), in that
    order; `feature_info` gives their channels and strides.
    """

    def __init__(self, arch: ArchSpec, width_multiplier: float = 1.0,
                 out_features: Sequence[str] | None = None, norm: NormSettings = DEFAULT_NORM,
                 in_channels: int = 3):
        super().__init__()
        self.arch, self.width_multiplier = arch, width_multiplier
        available = {info.name: info for info in arch.features(width_multiplier)}
        names = list(available) if out_features is None else list(out_features)
        missing = [name for name in names if name not in available]
        if missing:
            raise ValueError(f"backbone has no endpoint(s) {missing}; it has {list(available)}")
        self.feature_info: tuple[FeatureInfo, ...] = tuple(available[name] for name in names)
        self._taps = {info.layer_index: slot for slot, info in enumerate(self.feature_info)}
        self._last_tap = max(self._taps)
        # Layers after the last requested endpoint are not built: they would hold parameters
        # that never get a gradient. Resolution changes no module, so trace at 1x1.
        configs = arch.trace(1, width_multiplier, in_channels)[: self._last_tap + 1]
        blocks: list[nn.ModuleList] = []
        for b, block in enumerate(arch.blocks):
            start = sum(len(previous) for previous in arch.blocks[:b])
            layers = [build_layer(config, norm) for config in configs[start:start + len(block)]]
            if layers:
                blocks.append(nn.ModuleList(layers))
        self.blocks = nn.ModuleList(blocks)
        init_weights(self)

    @property
    def out_channels(self) -> list[int]:
        return [info.channels for info in self.feature_info]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outputs: list[torch.Tensor | None] = [None] * len(self.feature_info)
        index = 0
        for block in self.blocks:
            for layer in block:
                x = layer(x)
                slot = self._taps.get(index)
                if slot is not None:
                    outputs[slot] = x
                index += 1
        return outputs  # type: ignore[return-value]
