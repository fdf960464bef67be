"""The feature pyramid: NAS-FPN merging cells (Ghiasi, Lin, Le, CVPR 2019) as a frozen spec with
one canonical piece of text, the optional second section of an architecture string.

A pyramid over levels P<min>..P<max> (stride 2**level) starts from a *pool* of one map per
level: the backbone endpoints C<min>.. (a 1x1 conv + BN brings each to the pyramid width when
its width differs), and above the backbone's last endpoint maps made from the level below by
a 2x2 max-pool (`pool`, the TF reference's `resample_feature_map`) or a ReLU -> 3x3 stride-2
conv -> BN (`conv`). Then each merging cell, in order (TF `tensorflow/tpu`
`models/official/detection/modeling/architecture/nasfpn.py::_build_feature_pyramid`):

  1. takes two maps of the pool, by index (0..L-1 are the L input levels, L, L+1, ... the
     outputs of the earlier cells), and resamples both to its output level: 2x2 max-pools to
     go down, one nearest-neighbour resize to go up (no 1x1 conv is needed: every map in the
     pool but the backbone's already has the pyramid width);
  2. merges them with a binary op: `sum`, or `gp`, global-pooling attention
     `g + o * sigmoid(global_max(g))` where the gate source g is the coarser input (on a tie,
     the first one), TF's `global_attention`;
  3. if it is an output cell, adds every map of its level that no cell has used yet
     (NAS-FPN's rule that completes the output levels);
  4. applies ReLU -> 3x3 conv -> BN (the mobile variant: ReLU -> 3x3 depthwise -> 1x1 -> BN,
     TF's `use_separable_conv`), and its output joins the pool.

The last L cells are the output cells (derived, never written): their levels must be a
permutation of min..max, as in the published cell (2 intermediate + 5 output blocks,
`NASFPN_BLOCK_SPECS`) and Vertex AI's NAS-FPN search space. The output maps, ordered by level,
are the next stack's input pool; the cell group is stacked `stack` times, each repeat with its
own weights (TF `num_repeats`).

Text form (tokens `_`-separated like layer tokens; the header, then the cells, `,`-separated):

    fpn_p3-7_c64[_x<stack>][_sc][_dw],p4_gp_1_3,p4_sum_1_5,p3_sum_0_6,...

    p3-7     levels P3..P7                   c64   pyramid width (scaled by the width multiplier)
    x3       stack the cell group 3 times    sc    extra levels by strided conv (default: max-pool)
    dw       depthwise-separable convs (the mobile "Lite" variant)
    p4_gp_1_3   a cell at P4 merging pool maps 1 and 3 (written in increasing order) by attention

Defaults are omitted (stack 1, max-pool extra levels, regular convs), so one pyramid has one
string. Resampling geometry: level k of an H x W image is ceil(H / 2**k) x ceil(W / 2**k), the
size TF 'SAME' strides give; a 2x2 stride-2 'SAME' max-pool halves a size exactly so, and
nearest upsampling resizes to the finer level's exact size (half-pixel centres: TF
`resize_nearest_neighbor(half_pixel_centers=True)`, torch `nearest-exact`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tdbnas.spaces.channels import CHANNEL_BASE, as_hw, round_channels, same_output_size

PYRAMID_KIND = "fpn"
CELL_SEPARATOR = ","
BINARY_OPS = ("sum", "gp")
EXTRA_MODES = ("pool", "conv")
_EXTRA_TOKENS = {"conv": "sc"}
MIN_LEVEL, MAX_LEVEL = 1, 10  # stride 2 .. 1024

_HEADER = re.compile(r"^fpn_p(?P<low>\d+)-(?P<high>\d+)_c(?P<width>\d+)(?P<options>(?:_[a-z0-9]+)*)$")
_CELL = re.compile(r"^p(?P<level>\d+)_(?P<op>[a-z]+)_(?P<a>\d+)_(?P<b>\d+)$")


class PyramidStringError(ValueError):
    """A malformed pyramid section; `token` is the offending token, `index` its position in the
    section (0: the header, 1..: the cells)."""

    def __init__(self, message: str, token: str | None = None, index: int | None = None):
        super().__init__(message)
        self.token, self.index = token, index


@dataclass(frozen=True)
class MergeCell:
    """One merging cell as written: output level, binary op, two pool indices (a < b)."""

    level: int
    op: str
    inputs: tuple[int, int]

    def __post_init__(self) -> None:
        object.__setattr__(self, "inputs", tuple(self.inputs))
        if self.op not in BINARY_OPS:
            raise ValueError(f"binary op must be one of {', '.join(BINARY_OPS)}, got {self.op!r}")
        a, b = self.inputs
        if a == b:
            raise ValueError(f"a cell merges two different maps, got input {a} twice")
        if a > b:
            raise ValueError(f"inputs are written in increasing order: write {self._text(b, a)!r}")

    def _text(self, a: int, b: int) -> str:
        return f"p{self.level}_{self.op}_{a}_{b}"

    def token(self) -> str:
        return self._text(*self.inputs)

    def __str__(self) -> str:
        return self.token()


@dataclass(frozen=True)
class CellPlan:
    """A cell with everything its builders need, derived from the spec (same for every stack)."""

    index: int                       # position in the cell group
    level: int
    op: str
    inputs: tuple[int, int]          # pool indices
    input_levels: tuple[int, int]
    gate: int | None                 # for `gp`: 0 or 1, the input whose global max gates the other
    absorbed: tuple[int, ...]        # unused pool maps of this level summed in (output cells only)
    is_output: bool
    node: int                        # the pool index of this cell's output


@dataclass(frozen=True)
class PyramidSpec:
    """A merging-cell feature pyramid. Build one with `PyramidSpec.parse(text)` or from cells."""

    min_level: int
    max_level: int
    width: int
    cells: tuple[MergeCell, ...]
    stack: int = 1
    extra: str = "pool"
    separable: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "cells", tuple(self.cells))
        error = _structure_error(self)
        if error is not None:
            index, reason = error
            where = "pyramid" if index is None else f"cell {index + 1} ({self.cells[index].token()})"
            raise ValueError(f"{where}: {reason}")

    # ---- text form -------------------------------------------------------------------------
    @classmethod
    def parse(cls, text: str) -> PyramidSpec:
        """Parse a canonical pyramid section; `PyramidStringError` names the bad token."""
        if not isinstance(text, str) or not text:
            raise PyramidStringError("empty pyramid section")
        tokens = text.split(CELL_SEPARATOR)
        for index, token in enumerate(tokens):
            if not token:
                raise PyramidStringError(f"empty token at position {index} of the pyramid section "
                                         "(doubled or trailing separator?)", token, index)
        header = _parse_header(tokens[0])
        cells = []
        for index, token in enumerate(tokens[1:], start=1):
            try:
                cells.append(_parse_cell(token))
            except ValueError as exc:
                raise PyramidStringError(f"bad cell {token!r} (cell {index}): {exc}", token, index) from None
        error = _structure_error(_Unchecked(**header, cells=tuple(cells)))
        if error is not None:
            index, reason = error
            token = tokens[0] if index is None else tokens[index + 1]
            raise PyramidStringError(f"{'header' if index is None else f'cell {index + 1}'} {token!r}: {reason}",
                                     token, 0 if index is None else index + 1)
        spec = cls(**header, cells=tuple(cells))
        if spec.encode() != text:  # every part is canonical on its own; this guards the whole
            raise PyramidStringError(f"pyramid section is not canonical; write {spec.encode()!r}", text, 0)
        return spec

    def header(self) -> str:
        parts = [f"{PYRAMID_KIND}_p{self.min_level}-{self.max_level}", f"c{self.width}"]
        if self.stack != 1:
            parts.append(f"x{self.stack}")
        if self.extra != "pool":
            parts.append(_EXTRA_TOKENS[self.extra])
        if self.separable:
            parts.append("dw")
        return "_".join(parts)

    def encode(self) -> str:
        return CELL_SEPARATOR.join([self.header(), *(cell.token() for cell in self.cells)])

    def __str__(self) -> str:
        return self.encode()

    # ---- structure -------------------------------------------------------------------------
    @property
    def levels(self) -> tuple[int, ...]:
        return tuple(range(self.min_level, self.max_level + 1))

    @property
    def num_levels(self) -> int:
        return self.max_level - self.min_level + 1

    @property
    def num_intermediate(self) -> int:
        return len(self.cells) - self.num_levels

    def level_names(self) -> tuple[str, ...]:
        return tuple(f"P{level}" for level in self.levels)

    def plan(self) -> tuple[CellPlan, ...]:
        """The cells with their input levels, gate and absorbed maps (TF `_build_feature_pyramid`'s
        bookkeeping: a pool map counts as used once a cell takes it or an output cell absorbs it)."""
        return _plan(self)

    def input_levels(self, deepest: int) -> tuple[int, ...]:
        """The levels taken from a backbone whose deepest endpoint is C<deepest>; the levels above
        are extra levels made from the one below."""
        return tuple(level for level in self.levels if level <= deepest)

    def scaled_width(self, width_multiplier: float = 1.0) -> int:
        return self.width if width_multiplier == 1.0 else round_channels(self.width, width_multiplier)


def level_hw(resolution: int | Sequence[int], level: int) -> tuple[int, int]:
    """Size of level `level` (stride 2**level) of an image: 'SAME' halving, `level` times."""
    h, w = as_hw(resolution)
    for _ in range(level):
        h, w = same_output_size(h, 2), same_output_size(w, 2)
    return h, w


@dataclass(frozen=True)
class _Unchecked:
    """The fields of a spec, for checking before construction (so parse can name the token)."""

    min_level: int
    max_level: int
    width: int
    cells: tuple[MergeCell, ...]
    stack: int = 1
    extra: str = "pool"
    separable: bool = False

    @property
    def num_levels(self) -> int:
        return self.max_level - self.min_level + 1


def _structure_error(spec: Any) -> tuple[int | None, str] | None:
    """(cell index or None for the header, reason) of the first rule `spec` breaks, or None."""
    for name in ("min_level", "max_level", "width", "stack"):
        value = getattr(spec, name)
        if isinstance(value, bool) or not isinstance(value, int):
            return None, f"{name} must be an integer, got {value!r}"
    if not MIN_LEVEL <= spec.min_level < spec.max_level <= MAX_LEVEL:
        return None, (f"levels must satisfy {MIN_LEVEL} <= min < max <= {MAX_LEVEL}, got "
                      f"P{spec.min_level}-P{spec.max_level}")
    if spec.width < CHANNEL_BASE or spec.width % CHANNEL_BASE:
        return None, (f"the pyramid width must be a positive multiple of {CHANNEL_BASE}, got {spec.width} "
                      f"(write c{round_channels(max(spec.width, 1))})")
    if spec.stack < 1:
        return None, f"the stack count must be at least 1, got {spec.stack}"
    if spec.extra not in EXTRA_MODES:
        return None, f"extra levels are made by one of {EXTRA_MODES}, got {spec.extra!r}"
    if not isinstance(spec.separable, bool):
        return None, f"separable must be true or false, got {spec.separable!r}"
    count = spec.num_levels
    if not all(isinstance(cell, MergeCell) for cell in spec.cells):
        return None, "cells must be MergeCell specs"
    if len(spec.cells) < count:
        return None, (f"a pyramid over {count} levels needs at least {count} cells (the last {count} are the "
                      f"output cells, one per level), got {len(spec.cells)}")
    first_output = len(spec.cells) - count
    for index, cell in enumerate(spec.cells):
        if not spec.min_level <= cell.level <= spec.max_level:
            return index, f"level P{cell.level} is outside the pyramid's P{spec.min_level}-P{spec.max_level}"
        pool = count + index
        if cell.inputs[1] >= pool:
            return index, (f"input {cell.inputs[1]} does not exist yet: cell {index + 1} chooses from pool maps "
                           f"0..{pool - 1} (0..{count - 1} the input levels, then the earlier cells)")
    outputs = sorted(cell.level for cell in spec.cells[first_output:])
    if outputs != list(range(spec.min_level, spec.max_level + 1)):
        return first_output, (f"the last {count} cells are the output cells and need one cell per level "
                              f"P{spec.min_level}..P{spec.max_level}; their levels are "
                              f"{[cell.level for cell in spec.cells[first_output:]]}")
    return None


def _plan(spec: PyramidSpec) -> tuple[CellPlan, ...]:
    count = spec.num_levels
    levels = list(spec.levels)
    used = [0] * count
    first_output = len(spec.cells) - count
    plans = []
    for index, cell in enumerate(spec.cells):
        a, b = cell.inputs
        used[a] += 1
        used[b] += 1
        absorbed = []
        is_output = index >= first_output
        if is_output:
            for node, (level, uses) in enumerate(zip(levels, used)):
                if uses == 0 and level == cell.level:
                    used[node] += 1
                    absorbed.append(node)
        gate = None if cell.op == "sum" else (0 if levels[a] >= levels[b] else 1)
        plans.append(CellPlan(index, cell.level, cell.op, (a, b), (levels[a], levels[b]), gate, tuple(absorbed),
                              is_output, count + index))
        levels.append(cell.level)
        used.append(0)
    return tuple(plans)


def _parse_header(token: str) -> dict[str, Any]:
    match = _HEADER.match(token)
    if match is None:
        raise PyramidStringError(f"bad pyramid header {token!r}: expected "
                                 "fpn_p<min>-<max>_c<width>[_x<stack>][_sc][_dw], e.g. 'fpn_p3-7_c64_x3_dw'",
                                 token, 0)
    fields: dict[str, Any] = {"min_level": int(match["low"]), "max_level": int(match["high"]),
                              "width": int(match["width"])}
    options = [part for part in match["options"].split("_") if part]
    order = []
    for part in options:
        if re.fullmatch(r"x\d+", part):
            name, value = "stack", int(part[1:])
        elif part == "sc":
            name, value = "extra", "conv"
        elif part == "dw":
            name, value = "separable", True
        else:
            raise PyramidStringError(f"unknown option {part!r} in pyramid header {token!r} "
                                     "(options: x<stack>, sc, dw)", token, 0)
        if name in fields:
            raise PyramidStringError(f"option {part!r} given twice in pyramid header {token!r}", token, 0)
        fields[name] = value
        order.append(name)
    if order != sorted(order, key=("stack", "extra", "separable").index):
        raise PyramidStringError(f"options of pyramid header {token!r} are out of order; they come as "
                                 "x<stack>, sc, dw", token, 0)
    if fields.get("stack") == 1:
        raise PyramidStringError(f"'x1' is the default stack count; omit it from {token!r}", token, 0)
    for name in ("min_level", "max_level", "width"):
        text = {"min_level": match["low"], "max_level": match["high"], "width": match["width"]}[name]
        if text != str(int(text)):
            raise PyramidStringError(f"leading zero in {text!r} of pyramid header {token!r}", token, 0)
    return fields


def _parse_cell(token: str) -> MergeCell:
    match = _CELL.match(token)
    if match is None:
        raise ValueError("expected p<level>_<op>_<input>_<input>, e.g. 'p4_gp_1_3'")
    for part in ("level", "a", "b"):
        if match[part] != str(int(match[part])):
            raise ValueError(f"leading zero in {match[part]!r}")
    if match["op"] not in BINARY_OPS:
        raise ValueError(f"unknown binary op {match['op']!r}; ops: {', '.join(BINARY_OPS)}")
    return MergeCell(int(match["level"]), match["op"], (int(match["a"]), int(match["b"])))


# ---- named pyramids ---------------------------------------------------------------------------
def _cells(*tokens: str) -> tuple[MergeCell, ...]:
    return tuple(_parse_cell(token) for token in tokens)


#: The published NAS-FPN cell: TF `NASFPN_BLOCK_SPECS` (level, combine_fn, input_offsets,
#: is_output) in `tensorflow/tpu` nasfpn.py; mmdet writes the same graph as `gp_64_4, sum_44_4,
#: sum_43_3, sum_34_4, gp_43_5 + sum_55_5, gp_54_7 + sum_77_7, gp_75_6`.
NASFPN_CELLS = _cells("p4_gp_1_3", "p4_sum_1_5", "p3_sum_0_6", "p4_sum_6_7", "p5_gp_7_8", "p7_gp_6_9",
                      "p6_gp_9_10")
#: Top-down FPN (Lin et al. 2017) in merging cells: from the top level down, each output cell
#: sums its level's input with the output one level up (the top cell takes the level below, as a
#: merging cell has two inputs), then ReLU -> 3x3 conv -> BN as every cell.
FPN_CELLS = _cells("p6_sum_3_4", "p7_sum_4_5", "p5_sum_2_5", "p4_sum_1_7", "p3_sum_0_8")


def named_pyramids() -> dict[str, tuple[PyramidSpec, str]]:
    """name -> (spec, source) of the built-in pyramids (registered in `tdbnas.spaces.catalog`)."""
    tf = "tensorflow/tpu models/official/detection/modeling/architecture/nasfpn.py NASFPN_BLOCK_SPECS"
    return {
        "fpn": (PyramidSpec(3, 7, 64, FPN_CELLS), "top-down FPN (Lin et al., CVPR 2017) in merging cells, P3-P7"),
        "fpn-lite": (PyramidSpec(3, 7, 64, FPN_CELLS, separable=True),
                     "top-down FPN with depthwise-separable convs (FPNLite-style), P3-P7"),
        "nasfpn": (PyramidSpec(3, 7, 256, NASFPN_CELLS, stack=7),
                   f"NAS-FPN (Ghiasi et al., CVPR 2019): the published 7-cell group, 256 wide, stacked 7 "
                   f"times; {tf}"),
        "nasfpn-lite": (PyramidSpec(3, 7, 64, NASFPN_CELLS, stack=3, separable=True),
                        "the published NAS-FPN cell with depthwise-separable convs at width 64, stacked 3 times "
                        f"(the mobile 'Lite' variant; width and stack are tdbnas choices); {tf}"),
    }


__all__ = ["BINARY_OPS", "CellPlan", "EXTRA_MODES", "FPN_CELLS", "MergeCell", "NASFPN_CELLS", "PyramidSpec",
           "PyramidStringError", "level_hw", "named_pyramids"]
