"""A pyramid placed on a backbone at a resolution: its parts in execution order, with shapes.

The parts are what every consumer of a pyramid counts, builds or times, so that costs, the
torch and Keras builders' order, latency-table units and the modelled accelerator profiles
agree on one decomposition (like `LayerConfig` for a backbone layer):

    PyramidLateral   1x1 conv + BN bringing a backbone endpoint to the pyramid width
                     (only where the widths differ)                 fpn_lateral@40x40:40>64
    PyramidResample  down by n levels: n 2x2 stride-2 max-pools       fpn_down_2@40x40:64
                     up: one nearest-neighbour resize                 fpn_upsample@5x5>20x20:64
    PyramidDownConv  an extra level by ReLU -> 3x3 stride-2 conv -> BN (separable: 3x3
                     depthwise stride 2 -> 1x1 -> BN)                fpn_sconv_dw@10x10:64
    PyramidCell      binary op (sum / global-pooling attention) on two resampled maps, the
                     absorbed same-level maps added, ReLU -> 3x3 conv (or separable) -> BN
                                                                     fpn_cell_gp_dw@20x20:64+1

A key names everything that changes a part's cost and nothing else (which pool maps a cell
reads does not: after resampling its inputs have its own shape). The upsampling key was
`fpn_up@...` while the Keras lowering used TFLite's RESIZE_NEAREST_NEIGHBOR; it was renamed when
the lowering changed (`tdbnas.export.keras_pyramid`), so no table reuses a resize's timing. Extra levels by max-pool are
`PyramidResample` parts down one level. Pure Python: no framework.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from tdbnas.spaces.arch import ArchSpec
from tdbnas.spaces.channels import as_hw, same_output_size
from tdbnas.spaces.pyramid import CellPlan, PyramidSpec, level_hw


def _hw(hw: tuple[int, int]) -> str:
    return f"{hw[0]}x{hw[1]}"


class _KeepsWidth:
    """A part whose output has its input's width (`channels`), as every map in the pool does."""

    channels: int

    @property
    def in_channels(self) -> int:
        return self.channels

    @property
    def out_channels(self) -> int:
        return self.channels


@dataclass(frozen=True)
class PyramidLateral:
    """1x1 conv + BN (linear) from a backbone endpoint's width to the pyramid width."""

    in_hw: tuple[int, int]
    in_channels: int
    out_channels: int

    @property
    def key(self) -> str:
        return f"fpn_lateral@{_hw(self.in_hw)}:{self.in_channels}>{self.out_channels}"

    @property
    def out_hw(self) -> tuple[int, int]:
        return self.in_hw


@dataclass(frozen=True)
class PyramidResample(_KeepsWidth):
    """Move a map `levels` levels down (> 0: that many 2x2 max-pools) or up (< 0: one nearest
    resize to `target_hw`, the finer level's exact size)."""

    in_hw: tuple[int, int]
    channels: int
    levels: int
    target_hw: tuple[int, int] | None = None  # for upsampling only

    def __post_init__(self) -> None:
        if self.levels == 0:
            raise ValueError("a resample moves a map at least one level")
        if (self.levels < 0) != (self.target_hw is not None):
            raise ValueError("upsampling needs the target size, downsampling derives it")

    @property
    def out_hw(self) -> tuple[int, int]:
        if self.target_hw is not None:
            return self.target_hw
        h, w = self.in_hw
        for _ in range(self.levels):
            h, w = same_output_size(h, 2), same_output_size(w, 2)
        return h, w

    @property
    def key(self) -> str:
        if self.levels > 0:
            return f"fpn_down_{self.levels}@{_hw(self.in_hw)}:{self.channels}"
        return f"fpn_upsample@{_hw(self.in_hw)}>{_hw(self.out_hw)}:{self.channels}"


@dataclass(frozen=True)
class PyramidDownConv(_KeepsWidth):
    """An extra level made by ReLU -> 3x3 stride-2 conv -> BN (or its separable form)."""

    in_hw: tuple[int, int]
    channels: int
    separable: bool = False

    @property
    def out_hw(self) -> tuple[int, int]:
        return same_output_size(self.in_hw[0], 2), same_output_size(self.in_hw[1], 2)

    @property
    def key(self) -> str:
        return f"fpn_sconv{'_dw' if self.separable else ''}@{_hw(self.in_hw)}:{self.channels}"


@dataclass(frozen=True)
class PyramidCell(_KeepsWidth):
    """A merging cell after resampling: `op` on two maps of shape `hw` x `channels`, `absorbed`
    more maps added, then ReLU -> 3x3 conv (or separable) -> BN. Takes 2 + absorbed inputs."""

    op: str
    hw: tuple[int, int]
    channels: int
    absorbed: int = 0
    separable: bool = False

    @property
    def in_hw(self) -> tuple[int, int]:
        return self.hw

    @property
    def out_hw(self) -> tuple[int, int]:
        return self.hw

    @property
    def num_inputs(self) -> int:
        return 2 + self.absorbed

    @property
    def key(self) -> str:
        absorbed = f"+{self.absorbed}" if self.absorbed else ""
        return f"fpn_cell_{self.op}{'_dw' if self.separable else ''}@{_hw(self.hw)}:{self.channels}{absorbed}"


PyramidPart = PyramidLateral | PyramidResample | PyramidDownConv | PyramidCell


@dataclass(frozen=True)
class PlacedCell:
    """One cell of one stack: the resampling of each input (None: already at the cell's level)
    and the cell part itself."""

    stack: int
    plan: CellPlan
    resample: tuple[PyramidResample | None, PyramidResample | None]
    cell: PyramidCell


@dataclass(frozen=True)
class PyramidLayout:
    """Everything of one pyramid at one resolution and width multiplier."""

    spec: PyramidSpec
    input_levels: tuple[int, ...]                 # levels read from the backbone
    level_hw: tuple[tuple[int, int], ...]         # per pyramid level
    width: int                                    # scaled pyramid width
    laterals: tuple[PyramidLateral | None, ...]   # per input level
    extras: tuple[PyramidResample | PyramidDownConv, ...]  # per extra level
    cells: tuple[PlacedCell, ...]                 # stack by stack, cell by cell

    def parts(self) -> Iterator[PyramidPart]:
        """Every part in execution order (laterals, extra levels, then per cell its resamplings
        and the cell)."""
        yield from (lateral for lateral in self.laterals if lateral is not None)
        yield from self.extras
        for placed in self.cells:
            yield from (r for r in placed.resample if r is not None)
            yield placed.cell


def resample_part(from_level: int, to_level: int, channels: int, hw_of) -> PyramidResample | None:
    """The resampling from one level to another (None when they are equal); `hw_of(level)`."""
    if from_level == to_level:
        return None
    if from_level < to_level:
        return PyramidResample(hw_of(from_level), channels, to_level - from_level)
    return PyramidResample(hw_of(from_level), channels, to_level - from_level, hw_of(to_level))


def layout_from_widths(spec: PyramidSpec, input_channels: Sequence[int], resolution: int | Sequence[int],
                       width_multiplier: float = 1.0) -> PyramidLayout:
    """The layout given the (scaled) widths of the backbone endpoints C<min>.., in level order."""
    hw = as_hw(resolution)
    width = spec.scaled_width(width_multiplier)
    levels = spec.levels
    inputs = levels[:len(input_channels)]
    if not inputs:
        raise ValueError(f"the pyramid needs at least backbone endpoint C{spec.min_level}")
    sizes = tuple(level_hw(hw, level) for level in levels)

    def hw_of(level: int) -> tuple[int, int]:
        return sizes[level - spec.min_level]

    laterals = tuple(None if cin == width else PyramidLateral(hw_of(level), cin, width)
                     for level, cin in zip(inputs, input_channels))
    extras: list[PyramidResample | PyramidDownConv] = []
    for level in levels[len(inputs):]:
        below = hw_of(level - 1)
        extras.append(PyramidResample(below, width, 1) if spec.extra == "pool"
                      else PyramidDownConv(below, width, spec.separable))
    cells = []
    for stack in range(spec.stack):
        for plan in spec.plan():
            resample = tuple(resample_part(level, plan.level, width, hw_of) for level in plan.input_levels)
            cell = PyramidCell(plan.op, hw_of(plan.level), width, len(plan.absorbed), spec.separable)
            cells.append(PlacedCell(stack, plan, resample, cell))  # type: ignore[arg-type]
    return PyramidLayout(spec, inputs, sizes, width, laterals, tuple(extras), tuple(cells))


def pyramid_layout(arch: ArchSpec, resolution: int | Sequence[int], width_multiplier: float = 1.0) -> PyramidLayout:
    """The layout of `arch`'s pyramid (ValueError if it has none)."""
    if arch.pyramid is None:
        raise ValueError("this architecture has no pyramid")
    channels = [info.channels for info in arch.pyramid_inputs(width_multiplier)]
    return layout_from_widths(arch.pyramid, channels, resolution, width_multiplier)


__all__ = ["PlacedCell", "PyramidCell", "PyramidDownConv", "PyramidLateral", "PyramidLayout", "PyramidPart",
           "PyramidResample", "layout_from_widths", "pyramid_layout", "resample_part"]
