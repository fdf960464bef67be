"""Search spaces: a fixed skeleton of slots, each with its choices.

`SearchSpace` is the interface search, latency profiling and cost models use. A member is
a *genome* (one choice index per slot) that decodes to an `ArchSpec`; every genome is a
valid network, so sampling, mutation and crossover on genomes can only give valid members.

`BlockSpace` is the generic categorical space, built from a plain description (a dict,
YAML or JSON) so users can define their own. All built-in spaces are descriptions too:

    name: my-space
    description: what it is for
    blocks:
      - {name: stem, layers: 1, stride: 2, widths: [32], ops: [conv_k3]}
      - {name: b1, layers: 1, stride: 1, widths: [16, 24], ops: [ds_k3, ir_k3_e4]}
      - {name: b2, layers: 4, stride: 2, widths: [16, 32],
         ops: [ir_k3_e4, er_k3_e8, tk_k3_i0.25_o0.75], skippable: true}

Each block has one output width (a slot when there are several) and `layers` layer slots,
each choosing one of `ops` (layer tokens without `_c` and `_s`: the block supplies width
and stride). With `skippable`, every layer but the first may also be `skip`. The first
layer of a block carries the stride and is never skipped, so a block always sets its width.
"""

from __future__ import annotations

import copy
import math
import random
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tdbnas.spaces.arch import ArchSpec, LayerConfig
from tdbnas.spaces.channels import CHANNEL_BASE, as_hw, round_channels, same_output_size
from tdbnas.spaces.layers import SPLIT_KINDS, Layer, LayerTemplate, Skip, split_channels_error

Genome = tuple[int, ...]
Feasibility = Callable[[ArchSpec], bool]
RandomLike = random.Random | int | None
DEFAULT_MAX_TRIES = 10_000


class NotInSpaceError(ValueError):
    """An architecture that the space cannot express; the message says where and why."""


class InfeasibleError(RuntimeError):
    """No candidate satisfied the feasibility predicate within the allowed tries."""


@dataclass(frozen=True)
class Slot:
    name: str
    choices: tuple[Any, ...]

    def __len__(self) -> int:
        return len(self.choices)


def as_rng(rng: RandomLike) -> random.Random:
    """A `random.Random` from a seed, an existing generator (used as is), or None (fresh)."""
    if isinstance(rng, random.Random):
        return rng
    return random.Random(rng)


class GenomeSpace(ABC):
    """A product of named categorical slots: what search operators and learned cost models need.

    A member is a *genome*, one choice index per slot. Random draws, mutation and crossover
    work on genomes alone; `SearchSpace` adds the architecture every genome decodes to, while a
    plain `CategoricalSpace` (`tdbnas.spaces.categorical`) has named choices only.
    """

    name: str = "space"
    description: str = ""

    @property
    @abstractmethod
    def slots(self) -> tuple[Slot, ...]: ...

    def size(self) -> int:
        """Number of distinct members (every genome is a distinct member)."""
        return math.prod(len(slot) for slot in self.slots)

    def check_genome(self, genome: Sequence[int]) -> Genome:
        slots = self.slots
        if len(genome) != len(slots):
            raise ValueError(f"genome has {len(genome)} genes, space {self.name!r} has {len(slots)} slots")
        for gene, slot in zip(genome, slots):
            if isinstance(gene, bool) or not isinstance(gene, int) or not 0 <= gene < len(slot):
                raise ValueError(f"gene {gene!r} out of range for slot {slot.name!r} ({len(slot)} choices)")
        return tuple(genome)

    def random_genome(self, rng: RandomLike = None) -> Genome:
        rng = as_rng(rng)
        return tuple(rng.randrange(len(slot)) for slot in self.slots)

    def mutate_genome(self, genome: Sequence[int], rng: RandomLike = None, prob: float = 0.1) -> Genome:
        """Each gene moves to a different choice with probability `prob` (DetNAS `m_prob`)."""
        rng = as_rng(rng)
        genes = list(self.check_genome(genome))
        for index, slot in enumerate(self.slots):
            if len(slot) > 1 and rng.random() < prob:
                other = rng.randrange(len(slot) - 1)
                genes[index] = other if other < genes[index] else other + 1
        return tuple(genes)

    def crossover_genomes(self, a: Sequence[int], b: Sequence[int], rng: RandomLike = None) -> Genome:
        """Uniform crossover: each gene from either parent with probability 1/2."""
        rng = as_rng(rng)
        a, b = self.check_genome(a), self.check_genome(b)
        return tuple(x if rng.random() < 0.5 else y for x, y in zip(a, b))


class SearchSpace(GenomeSpace):
    """A genome space whose every member decodes to a valid backbone.

    Subclasses define `slots`, `decode`, `encode` and `layer_configs`; sampling, mutation,
    crossover, size and the feasibility hook are shared.
    """

    #: Optional predicate (e.g. predicted latency <= budget). Sampling, mutation and
    #: crossover retry until it holds; set it with `with_feasibility`.
    feasible: Feasibility | None = None

    @abstractmethod
    def decode(self, genome: Sequence[int]) -> ArchSpec:
        """The architecture of a genome."""

    @abstractmethod
    def encode(self, arch: ArchSpec) -> Genome:
        """The genome of an architecture; `NotInSpaceError` if the space cannot express it."""

    @abstractmethod
    def layer_configs(self, resolution: int | Sequence[int], width_multiplier: float = 1.0) -> frozenset[LayerConfig]:
        """Every distinct placed layer (skips excluded) that some member contains at `resolution`:
        exactly what a latency table for this space must hold."""

    # ---- shared behaviour --------------------------------------------------------------
    def contains(self, arch: ArchSpec) -> bool:
        try:
            self.encode(arch)
        except NotInSpaceError:
            return False
        return True

    def with_feasibility(self, predicate: Feasibility | None) -> SearchSpace:
        """A copy of this space whose sampling, mutation and crossover respect `predicate`."""
        constrained = copy.copy(self)
        constrained.feasible = predicate
        return constrained

    def is_feasible(self, arch: ArchSpec) -> bool:
        return self.feasible is None or bool(self.feasible(arch))

    def sample(self, rng: RandomLike = None, max_tries: int = DEFAULT_MAX_TRIES) -> ArchSpec:
        """A uniformly random member (among feasible ones when a predicate is set)."""
        rng = as_rng(rng)
        return self._until_feasible(lambda: self.random_genome(rng), "sampling", max_tries)

    def mutate(self, arch: ArchSpec, rng: RandomLike = None, prob: float = 0.1,
               max_tries: int = DEFAULT_MAX_TRIES) -> ArchSpec:
        """A mutant of `arch` (which may equal `arch` when no gene fired; search de-duplicates)."""
        rng, genome = as_rng(rng), self.encode(arch)
        return self._until_feasible(lambda: self.mutate_genome(genome, rng, prob), "mutation", max_tries)

    def crossover(self, a: ArchSpec, b: ArchSpec, rng: RandomLike = None,
                  max_tries: int = DEFAULT_MAX_TRIES) -> ArchSpec:
        rng, ga, gb = as_rng(rng), self.encode(a), self.encode(b)
        return self._until_feasible(lambda: self.crossover_genomes(ga, gb, rng), "crossover", max_tries)

    def _until_feasible(self, make: Callable[[], Genome], what: str, max_tries: int) -> ArchSpec:
        for _ in range(max(1, max_tries)):
            arch = self.decode(make())
            if self.is_feasible(arch):
                return arch
        raise InfeasibleError(f"{what} in space {self.name!r} found no feasible candidate in {max_tries} tries; "
                              "the constraint may be too tight for this space")


@dataclass(frozen=True)
class BlockChoices:
    """One block of a `BlockSpace` skeleton."""

    name: str
    layers: int
    stride: int
    widths: tuple[int, ...]
    ops: tuple[LayerTemplate, ...]
    skippable: bool = False

    def choices(self, index: int) -> tuple[LayerTemplate, ...]:
        """Layer choices at position `index` of the block (skip is never first)."""
        if self.skippable and index > 0:
            return (*self.ops, LayerTemplate(Skip, ()))
        return self.ops


_BLOCK_KEYS = {"name", "layers", "stride", "widths", "ops", "skippable"}
_SPACE_KEYS = {"name", "description", "blocks"}


def _block_from_description(index: int, raw: Any) -> BlockChoices:
    where = f"blocks[{index}]"
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: a block must be a mapping, got {raw!r}")
    unknown = sorted(set(raw) - _BLOCK_KEYS)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(_BLOCK_KEYS)}")
    missing = sorted({"layers", "stride", "widths", "ops"} - set(raw))
    if missing:
        raise ValueError(f"{where}: missing key(s) {missing}")
    name = str(raw.get("name", f"b{index}"))
    where = f"blocks[{index}] ({name})"
    layers, stride, skippable = raw["layers"], raw["stride"], raw.get("skippable", False)
    if isinstance(layers, bool) or not isinstance(layers, int) or layers < 1:
        raise ValueError(f"{where}: 'layers' must be a positive integer, got {layers!r}")
    if stride not in (1, 2) or isinstance(stride, bool):
        raise ValueError(f"{where}: 'stride' must be 1 or 2, got {stride!r}")
    if not isinstance(skippable, bool):
        raise ValueError(f"{where}: 'skippable' must be true or false, got {skippable!r}")
    widths = raw["widths"]
    if not isinstance(widths, list) or not widths:
        raise ValueError(f"{where}: 'widths' must be a non-empty list of channel counts")
    for width in widths:
        if isinstance(width, bool) or not isinstance(width, int) or width < CHANNEL_BASE or width % CHANNEL_BASE:
            raise ValueError(f"{where}: width {width!r} is not a positive multiple of {CHANNEL_BASE}")
    if len(set(widths)) != len(widths):
        raise ValueError(f"{where}: duplicate widths in {widths}")
    ops_raw = raw["ops"]
    if not isinstance(ops_raw, list) or not ops_raw:
        raise ValueError(f"{where}: 'ops' must be a non-empty list of layer choices such as 'ir_k3_e4'")
    ops = []
    for token in ops_raw:
        if token == "skip":
            raise ValueError(f"{where}: 'skip' is not an op choice; set 'skippable: true' to let "
                             "the non-first layers be skipped")
        try:
            ops.append(LayerTemplate.parse(str(token)))
        except ValueError as exc:
            raise ValueError(f"{where}: bad op {token!r}: {exc}") from None
    if len({op.token for op in ops}) != len(ops):
        raise ValueError(f"{where}: duplicate ops in {ops_raw}")
    return BlockChoices(name, layers, stride, tuple(widths), tuple(ops), skippable)


def read_description(path: str | Path) -> Any:
    """The parsed content of a space description file: YAML (`.yaml`/`.yml`) or JSON, safe
    loaders only; unreadable or malformed files raise ValueError naming the file."""
    import json

    import yaml

    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ValueError(f"cannot read space description {path}: {exc.strerror}") from None
    try:
        return yaml.safe_load(text) if path.suffix in (".yaml", ".yml") else json.loads(text)
    except (yaml.YAMLError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path} is not valid {'YAML' if path.suffix in ('.yaml', '.yml') else 'JSON'}: "
                         f"{exc}") from None


def from_description_file(path: str | Path, build: Callable[[Any], Any]) -> Any:
    """`build(description)` of a description file, its errors prefixed with the file's name."""
    data = read_description(path)
    try:
        return build(data)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None


class BlockSpace(SearchSpace):
    """The generic categorical space over a block skeleton (see the module docstring)."""

    def __init__(self, name: str, blocks: Sequence[BlockChoices], description: str = ""):
        if not blocks:
            raise ValueError(f"space {name!r} needs at least one block")
        names = [block.name for block in blocks]
        if len(set(names)) != len(names):
            raise ValueError(f"space {name!r} has duplicate block names: {names}")
        self.name, self.description, self.blocks = name, description, tuple(blocks)
        _check_split_blocks(self.blocks)
        # Slot layout: per block, its width (when there is a choice), then one slot per layer
        # with a choice. Fixed parts take no gene; `_plan` says where each part comes from.
        slots: list[Slot] = []
        plan: list[tuple[int | None, list[int | None]]] = []
        for block in self.blocks:
            width_gene = None
            if len(block.widths) > 1:
                width_gene = len(slots)
                slots.append(Slot(f"{block.name}.width", block.widths))
            layer_genes: list[int | None] = []
            for index in range(block.layers):
                choices = block.choices(index)
                if len(choices) > 1:
                    layer_genes.append(len(slots))
                    slots.append(Slot(f"{block.name}.{index + 1}", tuple(c.token for c in choices)))
                else:
                    layer_genes.append(None)
            plan.append((width_gene, layer_genes))
        self._slots, self._plan = tuple(slots), tuple(plan)

    # ---- construction from plain data ---------------------------------------------------
    @classmethod
    def from_description(cls, data: dict[str, Any]) -> BlockSpace:
        if not isinstance(data, dict):
            raise ValueError("a space description must be a mapping with 'name' and 'blocks'")
        unknown = sorted(set(data) - _SPACE_KEYS)
        if unknown:
            raise ValueError(f"unknown key(s) {unknown} in space description; allowed: {sorted(_SPACE_KEYS)}")
        if "name" not in data or "blocks" not in data:
            raise ValueError("a space description needs 'name' and 'blocks'")
        if not isinstance(data["blocks"], list):
            raise ValueError("'blocks' must be a list")
        blocks = [_block_from_description(i, raw) for i, raw in enumerate(data["blocks"])]
        return cls(str(data["name"]), blocks, str(data.get("description", "")))

    @classmethod
    def from_file(cls, path: str | Path) -> BlockSpace:
        """Load a description from YAML (`.yaml`/`.yml`) or JSON, with safe loaders only."""
        return from_description_file(path, cls.from_description)

    def to_description(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "blocks": [
            {"name": b.name, "layers": b.layers, "stride": b.stride, "widths": list(b.widths),
             "ops": [op.token for op in b.ops], "skippable": b.skippable} for b in self.blocks]}

    # ---- SearchSpace ------------------------------------------------------------------
    @property
    def slots(self) -> tuple[Slot, ...]:
        return self._slots

    def decode(self, genome: Sequence[int]) -> ArchSpec:
        genome = self.check_genome(genome)
        blocks = []
        for block, (width_gene, layer_genes) in zip(self.blocks, self._plan):
            width = block.widths[0 if width_gene is None else genome[width_gene]]
            layers = []
            for index, gene in enumerate(layer_genes):
                template = block.choices(index)[0 if gene is None else genome[gene]]
                layers.append(template.build(out=width, stride=block.stride if index == 0 else 1))
            blocks.append(tuple(layers))
        return ArchSpec(tuple(blocks))

    def encode(self, arch: ArchSpec) -> Genome:
        if arch.pyramid is not None:
            raise NotInSpaceError(f"space {self.name!r} has no feature pyramid; the architecture has one "
                                  "(search backbone and pyramid with a PyramidSearchSpace)")
        if len(arch.blocks) != len(self.blocks):
            raise NotInSpaceError(f"space {self.name!r} has {len(self.blocks)} blocks, "
                                  f"the architecture has {len(arch.blocks)}")
        genome: list[int] = [0] * len(self._slots)
        for b, (block, layers, (width_gene, layer_genes)) in enumerate(zip(self.blocks, arch.blocks, self._plan)):
            where = f"block {b} ({block.name})"
            if len(layers) != block.layers:
                raise NotInSpaceError(f"{where} has {block.layers} layer slot(s), the architecture has {len(layers)}")
            width = layers[0].out if not layers[0].is_skip else None  # type: ignore[attr-defined]
            if width not in block.widths:
                raise NotInSpaceError(f"{where}: width {width} is not one of {list(block.widths)}")
            if width_gene is not None:
                genome[width_gene] = block.widths.index(width)
            for index, (layer, gene) in enumerate(zip(layers, layer_genes)):
                choice = _match_choice(block, index, layer, width)
                if choice is None:
                    options = ", ".join(t.token for t in block.choices(index))
                    raise NotInSpaceError(f"{where}, layer {index + 1}: {layer.token()!r} is not a choice here "
                                          f"(width {width}, stride {block.stride if index == 0 else 1}; "
                                          f"choices: {options})")
                if gene is not None:
                    genome[gene] = choice
        return tuple(genome)

    def layer_configs(self, resolution: int | Sequence[int], width_multiplier: float = 1.0) -> frozenset[LayerConfig]:
        hw = as_hw(resolution)
        configs: set[LayerConfig] = set()
        in_widths = {3}
        for block in self.blocks:
            out_hw = (same_output_size(hw[0], block.stride), same_output_size(hw[1], block.stride))
            scaled = [round_channels(w, width_multiplier) for w in block.widths]
            for width in scaled:
                for index in range(block.layers):
                    stride = block.stride if index == 0 else 1
                    sources = in_widths if index == 0 else {width}
                    for template in block.choices(index):
                        if template.is_skip:
                            continue
                        layer = template.build(out=width, stride=stride)
                        for cin in sources:
                            residual = layer.residual_capable and index > 0 and stride == 1 and cin == width
                            configs.add(LayerConfig(layer, cin, hw if index == 0 else out_hw, residual))
            in_widths, hw = set(scaled), out_hw
        return frozenset(configs)


def _match_choice(block: BlockChoices, index: int, layer: Layer, width: int | None) -> int | None:
    stride = block.stride if index == 0 else 1
    if not layer.is_skip and (layer.out != width or layer.stride != stride):  # type: ignore[attr-defined]
        return None
    for position, template in enumerate(block.choices(index)):
        if template.matches(layer):
            return position
    return None


def _check_split_blocks(blocks: Sequence[BlockChoices]) -> None:
    """ShuffleNet/Xception choices need in == out at stride 1 and out > in at stride 2; check every
    width pair a member could meet so that every genome decodes."""
    previous: tuple[int, ...] = (3,)
    for block in blocks:
        split = [op for op in block.ops if issubclass(op.cls, SPLIT_KINDS)]
        if split:
            for index in range(block.layers):
                stride = block.stride if index == 0 else 1
                for width in block.widths:
                    for cin in (previous if index == 0 else (width,)):
                        reason = split_channels_error(split[0].cls.title, stride, cin, width)
                        if reason:
                            raise ValueError(f"block {block.name!r}: ShuffleNet/Xception choices cannot go from "
                                             f"{cin} to {width} channels ({reason})")
        previous = block.widths
