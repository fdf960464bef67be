"""Op units: the pieces a detector is cut into for latency tables.

A unit is the smallest part that is profiled on its own and whose latencies are summed:
every backbone layer (a `LayerConfig`: stem, bottlenecks, ...), every SSDLite extra layer
(1x1 -> depthwise 3x3 stride 2 -> 1x1) and every box/class predictor (depthwise kxk -> 1x1).
Each unit has a `key` that names everything that changes its cost — layer signature (kind,
kernel, stride, expansion or Tucker ratios, activation, SE), input HxW, in/out channels and
the shortcut — and nothing else, so equal keys mean equal micro-models:

    ir_k3_s2_e8@40x40:40>72            a backbone layer (`LayerConfig.key`)
    ssd_extra@10x10:384>256>512        an extra layer: input, 1x1 width, output width
    ssd_box_k3@20x20:96>12             a box predictor: input channels > anchors * 4
    ssd_class_k3@20x20:96>273          a class predictor: input channels > anchors * class slots

With a feature pyramid, its parts are units too (`tdbnas.spaces.pyramid_layout`): laterals,
resamplings, strided extra levels and merging cells, e.g.

    fpn_lateral@40x40:40>64            1x1 conv + BN from a backbone endpoint to the pyramid width
    fpn_down_2@40x40:64 / fpn_upsample@5x5>20x20:64   2x2 max-pools / nearest resize between levels
    fpn_cell_gp_dw@10x10:64+1          global-pooling attention, 1 absorbed map, separable conv

`detector_units` lists the units of one detector in execution order; `space_units` is the
exact set any member of a `BlockSpace` can contain, i.e. what a table for the space must hold
(for a `PyramidSearchSpace`, a small superset: see `pyramid_space_units`).
Pure Python, like `tdbnas.spaces`.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from tdbnas.spaces import ArchSpec, BlockSpace, LayerConfig, SearchSpace, Skip, SSDLiteHead, as_hw, round_channels
from tdbnas.spaces.channels import same_output_size
from tdbnas.spaces.pyramid import level_hw
from tdbnas.spaces.pyramid_layout import (
    PyramidCell,
    PyramidDownConv,
    PyramidLateral,
    PyramidResample,
    pyramid_layout,
    resample_part,
)
from tdbnas.spaces.pyramid_space import PyramidSearchSpace

DEFAULT_HEAD = SSDLiteHead()


@dataclass(frozen=True, order=True)
class HeadExtra:
    """One SSDLite extra feature layer: 1x1 to `mid`, depthwise 3x3 stride 2, 1x1 to `out` (ReLU6)."""

    in_hw: tuple[int, int]
    in_channels: int
    mid: int
    out: int

    @property
    def key(self) -> str:
        return f"ssd_extra@{self.in_hw[0]}x{self.in_hw[1]}:{self.in_channels}>{self.mid}>{self.out}"

    @property
    def out_hw(self) -> tuple[int, int]:
        return same_output_size(self.in_hw[0], 2), same_output_size(self.in_hw[1], 2)


@dataclass(frozen=True, order=True)
class HeadPredictor:
    """One SSDLite predictor on one map: depthwise kxk + BN + ReLU6, then 1x1 with bias."""

    what: str  # "box" or "class"
    in_hw: tuple[int, int]
    in_channels: int
    out_channels: int
    kernel: int = 3

    def __post_init__(self) -> None:
        if self.what not in ("box", "class"):
            raise ValueError(f"a predictor is 'box' or 'class', not {self.what!r}")

    @property
    def key(self) -> str:
        return (f"ssd_{self.what}_k{self.kernel}@{self.in_hw[0]}x{self.in_hw[1]}:"
                f"{self.in_channels}>{self.out_channels}")

    @property
    def out_hw(self) -> tuple[int, int]:
        return self.in_hw


Unit = LayerConfig | HeadExtra | HeadPredictor | PyramidLateral | PyramidResample | PyramidDownConv | PyramidCell
PYRAMID_UNITS = (PyramidLateral, PyramidResample, PyramidDownConv, PyramidCell)


def head_units(head: SSDLiteHead, feature_channels: Sequence[int], feature_hw: Sequence[tuple[int, int]],
               width_multiplier: float = 1.0) -> list[HeadExtra | HeadPredictor]:
    """Head units given the widths and sizes of the backbone maps named by `head.from_features`."""
    if len(feature_channels) != len(head.from_features) or len(feature_hw) != len(head.from_features):
        raise ValueError(f"the head reads {len(head.from_features)} backbone maps "
                         f"({', '.join(head.from_features)}); got {len(feature_channels)} widths")
    maps = list(zip(feature_hw, feature_channels))
    extras: list[HeadExtra | HeadPredictor] = []
    hw, channels = maps[-1]
    for depth in head.extra_depths:
        mid, out = head.extra_widths(depth, width_multiplier)
        extra = HeadExtra(tuple(hw), channels, mid, out)
        extras.append(extra)
        hw, channels = extra.out_hw, out
        maps.append((hw, channels))
    predictors = []
    for (hw, channels), anchors in zip(maps, head.anchors_per_location()):
        predictors.append(HeadPredictor("box", tuple(hw), channels, anchors * 4, head.kernel))
        predictors.append(HeadPredictor("class", tuple(hw), channels, anchors * head.class_slots, head.kernel))
    return extras + predictors


def detector_units(arch: ArchSpec, resolution: int | Sequence[int], *, head: SSDLiteHead = DEFAULT_HEAD,
                   width_multiplier: float = 1.0) -> tuple[Unit, ...]:
    """Every unit of one SSDLite detector, backbone first, then the pyramid's parts (if any),
    then the head, in execution order.

    The backbone is cut after its last endpoint the head (or the pyramid) reads (layers past it
    are not built).
    """
    head = head.resolve(arch)
    configs = arch.trace(resolution, width_multiplier)
    maps = [map_ for map_ in head.feature_maps(arch, resolution, width_multiplier)[:len(head.from_features)]]
    if arch.pyramid is None:
        last = max(arch.feature(name, width_multiplier).layer_index for name in head.from_features)
        pyramid = []
    else:
        last = max(info.layer_index for info in arch.pyramid_inputs(width_multiplier))
        pyramid = list(pyramid_layout(arch, resolution, width_multiplier).parts())
    # A skipped layer is the identity: nothing to run, nothing to time.
    backbone = [config for config in configs[:last + 1] if not isinstance(config.layer, Skip)]
    return (*backbone, *pyramid, *head_units(head, [m.channels for m in maps], [m.hw for m in maps],
                                             width_multiplier))


def space_units(space: SearchSpace, resolution: int | Sequence[int], *, head: SSDLiteHead = DEFAULT_HEAD,
                width_multiplier: float = 1.0) -> frozenset[Unit]:
    """The exact set of units any member of `space` can contain at `resolution`.

    Backbone layers come from `space.layer_configs`; head units from every combination of the
    widths the space allows at the head's input endpoints.
    """
    if isinstance(space, PyramidSearchSpace):
        return pyramid_space_units(space, resolution, head=head, width_multiplier=width_multiplier)
    units: set[Unit] = set(space.layer_configs(resolution, width_multiplier))
    choices = [endpoint_widths(space, name, width_multiplier) for name in head.from_features]
    hws = [_endpoint_hw(space, name, resolution) for name in head.from_features]
    for widths in itertools.product(*choices):
        units.update(head_units(head, widths, hws, width_multiplier))
    return frozenset(units)


def pyramid_space_units(space: PyramidSearchSpace, resolution: int | Sequence[int], *,
                        head: SSDLiteHead = DEFAULT_HEAD, width_multiplier: float = 1.0) -> frozenset[Unit]:
    """Every unit a member of a backbone + pyramid space can contain at `resolution`: the
    backbone's layers, a lateral per input level and endpoint width, the extra levels, every
    resampling between two levels, and every cell (op, level, absorbed count) a cell of the
    frame can meet. A superset by a few units (not every (level, absorbed count) pair is
    reachable by every frame), so a table built from it covers the whole space."""
    hw, wm = as_hw(resolution), width_multiplier
    choices, reference = space.choices, space.reference
    frame = reference.pyramid
    width = frame.scaled_width(wm)
    units: set[Unit] = set(space.layer_configs(hw, wm))

    def hw_of(level: int) -> tuple[int, int]:
        return level_hw(hw, level)

    inputs = [int(info.name[1:]) for info in reference.pyramid_inputs(wm)]
    for level in inputs:
        widths = endpoint_widths(space.backbone, f"C{level}", wm)
        units.update(PyramidLateral(hw_of(level), cin, width) for cin in widths if cin != width)
    for level in frame.levels[len(inputs):]:
        units.add(PyramidResample(hw_of(level - 1), width, 1) if frame.extra == "pool"
                  else PyramidDownConv(hw_of(level - 1), width, frame.separable))
    for source, target in itertools.permutations(frame.levels, 2):
        units.add(resample_part(source, target, width, hw_of))  # type: ignore[arg-type]
    for op in choices.ops:
        for level in choices.allowed_levels():
            units.add(PyramidCell(op, hw_of(level), width, 0, frame.separable))
        # An output cell absorbs its level's input map and intermediate cells at its level.
        for level in frame.levels:
            units.update(PyramidCell(op, hw_of(level), width, absorbed, frame.separable)
                         for absorbed in range(0, 2 + choices.intermediate))
    resolved = head.resolve(reference)
    maps = resolved.feature_maps(reference, hw, wm)[:len(resolved.from_features)]
    units.update(head_units(resolved, [m.channels for m in maps], [m.hw for m in maps], wm))
    return frozenset(units)


def endpoint_widths(space: SearchSpace, name: str, width_multiplier: float = 1.0) -> tuple[int, ...]:
    """The output widths a space allows at endpoint `name` (C4 = the last block at stride 16)."""
    block = _endpoint_block(space, name)
    return tuple(sorted({round_channels(w, width_multiplier) for w in block.widths}))


def _endpoint_block(space: SearchSpace, name: str):
    if not isinstance(space, BlockSpace):
        raise TypeError(f"space {getattr(space, 'name', space)!r} is not a BlockSpace: enumerate its units "
                        "from sampled members with `units_of_archs`")
    target = 2 ** int(name.lstrip("C"))
    stride, found = 1, None
    for block in space.blocks:
        stride *= block.stride
        if stride == target:
            found = block
    if found is None:
        raise ValueError(f"space {space.name!r} has no endpoint {name} (no block at stride {target})")
    return found


def _endpoint_hw(space: SearchSpace, name: str, resolution: int | Sequence[int]) -> tuple[int, int]:
    hw = as_hw(resolution)
    stride = 1
    for block in space.blocks:
        stride *= block.stride
        hw = (same_output_size(hw[0], block.stride), same_output_size(hw[1], block.stride))
        if stride == 2 ** int(name.lstrip("C")):
            return hw
    raise ValueError(f"space {space.name!r} has no endpoint {name}")


def units_of_archs(archs: Iterable[ArchSpec], resolution: int | Sequence[int], *,
                   head: SSDLiteHead = DEFAULT_HEAD, width_multiplier: float = 1.0) -> frozenset[Unit]:
    """The union of the units of some architectures (for spaces that cannot be enumerated)."""
    units: set[Unit] = set()
    for arch in archs:
        units.update(detector_units(arch, resolution, head=head, width_multiplier=width_multiplier))
    return frozenset(units)
