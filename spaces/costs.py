"""Multiply-adds and parameters from the spec alone: no framework, no forward pass.

Counting convention (the one that reproduces the MobileDet config headers, see
`benchmarks/results/reference_costs.md`):
  * MAdds: multiply-accumulates of convolutions only, `H_out * W_out * k * k * C_in * C_out`
    (depthwise: `... * C`), squeeze-excite 1x1 convs included. Batch norm (folded at
    export), activations, residual adds, pooling and the SE scale are not counted.
  * Params: convolution weights and biases plus batch-norm scale and offset (trainable
    variables; BN moving statistics are not counted).
  * Detector: backbone + SSDLite extra layers + box and class predictors, with
    `num_classes + 1` class outputs per anchor (background slot, as the TF OD API); plus the
    feature pyramid's convs (laterals, strided extra levels, cells) when the architecture has one.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from tdbnas.spaces.arch import ArchSpec, LayerConfig
from tdbnas.spaces.head import SSDLiteHead
from tdbnas.spaces.primitives import Primitive, head_primitives, layer_primitives, pyramid_primitives


@dataclass(frozen=True)
class Cost:
    madds: int = 0
    params: int = 0

    def __add__(self, other: Cost) -> Cost:
        return Cost(self.madds + other.madds, self.params + other.params)

    @classmethod
    def of(cls, primitives: Iterable[Primitive]) -> Cost:
        madds = params = 0
        for op in primitives:
            madds += op.madds
            params += op.params
        return cls(madds, params)


@dataclass(frozen=True)
class DetectorCost:
    backbone: Cost
    head: Cost
    pyramid: Cost = Cost()

    @property
    def total(self) -> Cost:
        return self.backbone + self.pyramid + self.head


def layer_cost(config: LayerConfig) -> Cost:
    return Cost.of(layer_primitives(config))


def backbone_cost(arch: ArchSpec, resolution: int | Sequence[int] = 320, width_multiplier: float = 1.0) -> Cost:
    total = Cost()
    for config in arch.trace(resolution, width_multiplier):
        total = total + layer_cost(config)
    return total


def detector_cost(arch: ArchSpec, resolution: int | Sequence[int] = 320, num_classes: int = 90,
                  width_multiplier: float = 1.0, head: SSDLiteHead | None = None) -> DetectorCost:
    """Backbone and SSDLite head costs at `resolution` for `num_classes` (excluding background)."""
    if head is None:
        head = SSDLiteHead(num_classes=num_classes)
    elif head.num_classes != num_classes:
        raise ValueError(f"head has num_classes={head.num_classes} but num_classes={num_classes} was given")
    return DetectorCost(backbone_cost(arch, resolution, width_multiplier),
                        Cost.of(head_primitives(head, arch, resolution, width_multiplier)),
                        Cost.of(pyramid_primitives(arch, resolution, width_multiplier)))
