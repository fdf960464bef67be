"""A search space over backbone and feature pyramid together: one genome, one architecture.

`PyramidSearchSpace` composes a `BlockSpace` (the backbone's slots, unchanged, first) with the
slots of a searchable pyramid, so sampling, mutation, crossover, de-duplication and every
search algorithm treat the pyramid's choices like any backbone choice (NAS-FPN searched the
cross-scale connections; reference detnas_nasfpn.md §3). The pyramid's frame is fixed (levels,
width, stack count, how extra levels are made, regular or separable convs); its wiring is
searched, as in Vertex AI's NAS-FPN space (`nasfpn_search_space`): `intermediate` cells with a
level, a binary op and two distinct pool inputs each, then one output cell per level with an
op and two inputs, the output cells' level order being one more choice (a permutation).

    pyramid.c1.level   P4 | P5 | ...          intermediate cells only
    pyramid.c1.op      sum | gp
    pyramid.c1.inputs  0_1 | 0_2 | ... | 3_4  distinct pool maps (pairs in increasing order)
    pyramid.outputs    3-4-5-7-6 | ...        the output cells' levels, in order
    pyramid.o1.op, pyramid.o1.inputs, ...     output cells

Every genome decodes to a valid pyramid (inputs always exist, outputs cover every level once),
so genetic operators cannot produce an invalid network. A description is the backbone space's
description (or a registered name) plus the pyramid frame:

    {"name": "tdb-lite-pyramid", "backbone": "tdb-lite",
     "pyramid": {"levels": [3, 7], "width": 64, "separable": true, "intermediate": 2}}
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tdbnas.spaces.arch import ArchSpec, LayerConfig
from tdbnas.spaces.pyramid import BINARY_OPS, EXTRA_MODES, MergeCell, PyramidSpec
from tdbnas.spaces.space import BlockSpace, Genome, NotInSpaceError, SearchSpace, Slot, read_description

PREFIX = "pyramid"


@dataclass(frozen=True)
class PyramidChoices:
    """The fixed frame of a searchable pyramid and the choices of its cells."""

    min_level: int = 3
    max_level: int = 7
    width: int = 64
    stack: int = 1
    extra: str = "pool"
    separable: bool = True
    intermediate: int = 2
    ops: tuple[str, ...] = BINARY_OPS
    #: Levels an intermediate cell may take (default: every level).
    cell_levels: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "ops", tuple(self.ops))
        if self.cell_levels is not None:
            object.__setattr__(self, "cell_levels", tuple(self.cell_levels))
        if not self.ops or len(set(self.ops)) != len(self.ops) or any(op not in BINARY_OPS for op in self.ops):
            raise ValueError(f"ops must be distinct choices among {BINARY_OPS}, got {self.ops}")
        if isinstance(self.intermediate, bool) or not isinstance(self.intermediate, int) or self.intermediate < 0:
            raise ValueError(f"intermediate must be a non-negative cell count, got {self.intermediate!r}")
        if self.extra not in EXTRA_MODES:
            raise ValueError(f"extra must be one of {EXTRA_MODES}, got {self.extra!r}")
        levels_ok = isinstance(self.min_level, int) and isinstance(self.max_level, int)
        if not (levels_ok and self.min_level < self.max_level):
            raise ValueError(f"levels must be [min, max] with min < max, got [{self.min_level!r}, {self.max_level!r}]")
        bad = [level for level in self.allowed_levels() if not self.min_level <= level <= self.max_level]
        if bad or not self.allowed_levels() or len(set(self.allowed_levels())) != len(self.allowed_levels()):
            raise ValueError(f"cell_levels must be distinct levels within P{self.min_level}-P{self.max_level}, "
                             f"got {self.cell_levels}")
        # The frame must make a valid pyramid: check it on the simplest member.
        self.frame(self.simplest_cells())

    @property
    def levels(self) -> tuple[int, ...]:
        return tuple(range(self.min_level, self.max_level + 1))

    def allowed_levels(self) -> tuple[int, ...]:
        return self.levels if self.cell_levels is None else self.cell_levels

    def simplest_cells(self) -> tuple[MergeCell, ...]:
        cells = [MergeCell(self.allowed_levels()[0], self.ops[0], (0, 1)) for _ in range(self.intermediate)]
        cells += [MergeCell(level, self.ops[0], (0, 1)) for level in self.levels]
        return tuple(cells)

    def frame(self, cells: Sequence[MergeCell]) -> PyramidSpec:
        return PyramidSpec(self.min_level, self.max_level, self.width, tuple(cells), self.stack, self.extra,
                           self.separable)

    def to_description(self) -> dict[str, Any]:
        data = asdict(self)
        data["levels"] = [data.pop("min_level"), data.pop("max_level")]
        data["ops"] = list(self.ops)
        data["cell_levels"] = None if self.cell_levels is None else list(self.cell_levels)
        return data

    @classmethod
    def from_description(cls, raw: Any) -> PyramidChoices:
        if not isinstance(raw, dict):
            raise ValueError(f"'pyramid' must be a mapping, got {raw!r}")
        allowed = {"levels", "width", "stack", "extra", "separable", "intermediate", "ops", "cell_levels"}
        unknown = sorted(set(raw) - allowed)
        if unknown:
            raise ValueError(f"unknown key(s) {unknown} in the pyramid description; allowed: {sorted(allowed)}")
        fields = dict(raw)
        levels = fields.pop("levels", [3, 7])
        if not (isinstance(levels, (list, tuple)) and len(levels) == 2):
            raise ValueError(f"'levels' must be [min, max], got {levels!r}")
        return cls(min_level=levels[0], max_level=levels[1], **fields)


class PyramidSearchSpace(SearchSpace):
    """Backbone slots (a `BlockSpace`) followed by the pyramid's slots; see the module docstring."""

    def __init__(self, name: str, backbone: BlockSpace, pyramid: PyramidChoices, description: str = ""):
        if not isinstance(backbone, BlockSpace):
            raise TypeError(f"the backbone of a pyramid space is a BlockSpace, got {type(backbone).__name__}")
        self.name, self.description = name, description
        self.backbone, self.choices = backbone, pyramid
        count = len(pyramid.levels)
        self._offset = offset = len(backbone.slots)
        slots: list[Slot] = []
        # Genome indices of each cell's (level | None, op, inputs) genes, and of the output order.
        plan: list[tuple[int | None, int, int]] = []
        for index in range(pyramid.intermediate + count):
            output = index >= pyramid.intermediate
            label = f"o{index - pyramid.intermediate + 1}" if output else f"c{index + 1}"
            level_gene = None
            if not output:
                level_gene = offset + len(slots)
                slots.append(Slot(f"{PREFIX}.{label}.level", tuple(f"P{lv}" for lv in pyramid.allowed_levels())))
            slots.append(Slot(f"{PREFIX}.{label}.op", pyramid.ops))
            pairs = tuple(f"{a}_{b}" for a, b in itertools.combinations(range(count + index), 2))
            slots.append(Slot(f"{PREFIX}.{label}.inputs", pairs))
            plan.append((level_gene, offset + len(slots) - 2, offset + len(slots) - 1))
        self._orders = tuple(itertools.permutations(pyramid.levels))
        self._outputs_gene = offset + len(slots)
        slots.append(Slot(f"{PREFIX}.outputs", tuple("-".join(str(lv) for lv in order) for order in self._orders)))
        self._pairs = [tuple(itertools.combinations(range(count + index), 2)) for index in range(len(plan))]
        self._cell_plan = tuple(plan)
        self._slots = backbone.slots + tuple(slots)
        # Every member has this backbone skeleton and pyramid frame; decoding one checks that the
        # backbone can feed the pyramid (it has endpoint C<min>).
        self.reference = self.decode((0,) * len(self._slots))

    # ---- descriptions --------------------------------------------------------------------------
    @classmethod
    def from_description(cls, data: dict[str, Any]) -> PyramidSearchSpace:
        from tdbnas.spaces.catalog import SPACES

        if not isinstance(data, dict):
            raise ValueError("a pyramid space description must be a mapping")
        unknown = sorted(set(data) - {"name", "description", "backbone", "pyramid"})
        if unknown:
            raise ValueError(f"unknown key(s) {unknown} in a pyramid space description")
        missing = sorted({"name", "backbone", "pyramid"} - set(data))
        if missing:
            raise ValueError(f"a pyramid space description needs {missing}")
        raw = data["backbone"]
        if isinstance(raw, str):
            backbone = SPACES.get(raw)
            if not isinstance(backbone, BlockSpace):
                raise ValueError(f"backbone space {raw!r} is not a BlockSpace")
        else:
            backbone = BlockSpace.from_description(raw)
        return cls(str(data["name"]), backbone, PyramidChoices.from_description(data["pyramid"]),
                   str(data.get("description", "")))

    def to_description(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "backbone": self.backbone.to_description(),
                "pyramid": self.choices.to_description()}

    # ---- SearchSpace ---------------------------------------------------------------------------
    @property
    def slots(self) -> tuple[Slot, ...]:
        return self._slots

    def decode(self, genome: Sequence[int]) -> ArchSpec:
        genome = self.check_genome(genome)
        backbone = self.backbone.decode(genome[:self._offset])
        order = self._orders[genome[self._outputs_gene]]
        cells = []
        for index, (level_gene, op_gene, inputs_gene) in enumerate(self._cell_plan):
            output = index - self.choices.intermediate
            level = (self.choices.allowed_levels()[genome[level_gene]] if level_gene is not None
                     else order[output])
            cells.append(MergeCell(level, self.choices.ops[genome[op_gene]], self._pairs[index][genome[inputs_gene]]))
        return ArchSpec(backbone.blocks, self.choices.frame(cells))

    def encode(self, arch: ArchSpec) -> Genome:
        if arch.pyramid is None:
            raise NotInSpaceError(f"space {self.name!r} has a feature pyramid; the architecture has none")
        genome = list(self.backbone.encode(arch.backbone_only())) + [0] * (len(self._slots) - self._offset)
        pyramid, frame = arch.pyramid, self.choices.frame(self.choices.simplest_cells())
        if pyramid.header() != frame.header() or len(pyramid.cells) != len(frame.cells):
            raise NotInSpaceError(f"space {self.name!r} has pyramids {frame.header()!r} with {len(frame.cells)} cells, "
                                  f"the architecture has {pyramid.header()!r} with {len(pyramid.cells)}")
        order = tuple(cell.level for cell in pyramid.cells[self.choices.intermediate:])
        genome[self._outputs_gene] = self._orders.index(order)
        for index, (cell, (level_gene, op_gene, inputs_gene)) in enumerate(zip(pyramid.cells, self._cell_plan)):
            where = f"pyramid cell {index + 1} ({cell.token()})"
            if level_gene is not None:
                if cell.level not in self.choices.allowed_levels():
                    raise NotInSpaceError(f"{where}: level P{cell.level} is not one of "
                                          f"{[f'P{lv}' for lv in self.choices.allowed_levels()]}")
                genome[level_gene] = self.choices.allowed_levels().index(cell.level)
            if cell.op not in self.choices.ops:
                raise NotInSpaceError(f"{where}: op {cell.op!r} is not one of {list(self.choices.ops)}")
            genome[op_gene] = self.choices.ops.index(cell.op)
            genome[inputs_gene] = self._pairs[index].index(cell.inputs)
        return tuple(genome)

    def layer_configs(self, resolution: int | Sequence[int], width_multiplier: float = 1.0) -> frozenset[LayerConfig]:
        """The backbone's placed layers (pyramid parts are enumerated by `tdbnas.latency.units`)."""
        return self.backbone.layer_configs(resolution, width_multiplier)

    # ---- structure -----------------------------------------------------------------------------
    def pyramid_genes(self) -> range:
        """Indices of the pyramid's slots in a genome."""
        return range(self._offset, len(self._slots))


def pyramid_space(backbone: BlockSpace, choices: PyramidChoices | None = None, *, name: str | None = None,
                  description: str = "") -> PyramidSearchSpace:
    """`backbone` with a searchable pyramid (default frame: P3-P7, 64 wide, separable, 2
    intermediate cells, stack 1: NAS-FPN's cell shape at a mobile width)."""
    choices = choices or PyramidChoices()
    return PyramidSearchSpace(name or f"{backbone.name}+pyramid", backbone, choices,
                              description or f"{backbone.name} with a searched NAS-FPN-style pyramid")


def space_from_description(data: dict[str, Any]) -> SearchSpace:
    """A `PyramidSearchSpace` for descriptions with a `pyramid` key, else a `BlockSpace`."""
    if isinstance(data, dict) and "pyramid" in data:
        return PyramidSearchSpace.from_description(data)
    return BlockSpace.from_description(data)


def space_from_file(path: str | Path) -> SearchSpace:
    """A description file (YAML or JSON, safe loaders only) of either kind of space."""
    data = read_description(path)
    if isinstance(data, dict) and "pyramid" not in data:
        return BlockSpace.from_file(path)  # its own messages
    try:
        return space_from_description(data)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None


def resolve_space(text: str) -> SearchSpace:
    """A registered space, `NAME+pyramid` (registered space NAME with the default searchable
    pyramid, `pyramid_space`), or a .yaml/.yml/.json description file of either kind."""
    from tdbnas.spaces.catalog import SPACES

    if text in SPACES:
        return SPACES.get(text)
    name, plus, rest = text.partition("+")
    if plus and rest == "pyramid" and name in SPACES:
        backbone = SPACES.get(name)
        if isinstance(backbone, BlockSpace):
            return pyramid_space(backbone)
    if Path(text).suffix in (".yaml", ".yml", ".json"):
        return space_from_file(text)
    raise ValueError(f"{text!r} is neither a registered space ({', '.join(SPACES.names())}), NAME+pyramid, "
                     "nor a .yaml/.yml/.json description file")


__all__ = ["PyramidChoices", "PyramidSearchSpace", "pyramid_space", "resolve_space", "space_from_description",
           "space_from_file"]
