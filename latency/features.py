"""Features of a genome that carry physics, shared across slots: what a learned latency model
regresses on when it cannot time single ops.

Three groups of columns (`SharedFeatures.names()` lists them):
  * physics: per op kind, the count, multiply-adds, parameters and activation elements (read +
    written) summed over the network. For a space in the architecture language (`BlockSpace`,
    `PyramidSearchSpace`) they come from the decoded detector's primitive ops
    (`tdbnas.spaces.primitives`: backbone, SSDLite head, pyramid) at a stated resolution; kinds
    are `conv1x1`, `conv` (k x k), `dwconv`, the data movers (`add`, `mul`, `gap`, `concat`,
    `split`, `maxpool`, `resize`, `gmax`, `logistic`, `relu`) and the activations TFLite
    cannot fuse (`hswish`, `sigmoid`). For a `CategoricalSpace` they are the sums of the
    choices' own numeric attributes (`tdbnas.spaces.fbnet` gives per-op-kind ones);
  * counts: how many slots chose each choice name that several slots offer (an op's count
    across the network: the "op-count regression" of the baselines);
  * deviations: one 0/1 column per slot and non-reference choice (the TuNAS one-hot layout):
    what a slot costs beyond its shared share. `tdbnas.latency.ridge` penalises them harder.

Everything a model needs to recompute them is in `to_json` (the space's description, the
resolution, head and width multiplier), so a saved cost model predicts on its own.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import numpy as np

from tdbnas.spaces import (
    ArchSpec,
    CategoricalSpace,
    GenomeSpace,
    LayerConfig,
    SearchSpace,
    SSDLiteHead,
    as_hw,
    head_primitives,
    layer_primitives,
)
from tdbnas.spaces.primitives import Primitive, pyramid_primitives

QUANTITIES = ("count", "madds", "params", "activations")
#: Op kinds of `tdbnas.spaces.primitives` (convs split by kernel shape) and unfused activations.
OP_KINDS = ("conv1x1", "conv", "dwconv", "add", "mul", "gap", "concat", "split", "maxpool", "resize", "gmax",
            "logistic", "relu")
ACTIVATION_KINDS = ("hswish", "sigmoid")


def op_kind(op: Primitive) -> str:
    if op.op == "conv":
        return "conv1x1" if op.kernel == 1 else "conv"
    if op.op not in OP_KINDS:
        raise ValueError(f"no latency feature for op kind {op.op!r}")
    return op.op


def physics_names() -> list[str]:
    names = [f"{kind}.{q}" for kind in OP_KINDS for q in QUANTITIES]
    return names + [f"{kind}.{q}" for kind in ACTIVATION_KINDS for q in ("count", "activations")]


_PHYSICS_INDEX = {name: i for i, name in enumerate(physics_names())}


def ops_vector(ops: Sequence[Primitive]) -> np.ndarray:
    """The physics columns of a list of ops."""
    v = np.zeros(len(_PHYSICS_INDEX))
    for op in ops:
        kind = op_kind(op)
        out_elements = op.out_hw[0] * op.out_hw[1] * op.cout
        for quantity, value in (("count", 1), ("madds", op.madds), ("params", op.weights),
                                ("activations", op.in_hw[0] * op.in_hw[1] * op.cin + out_elements)):
            v[_PHYSICS_INDEX[f"{kind}.{quantity}"]] += value
        if op.act in ACTIVATION_KINDS:
            v[_PHYSICS_INDEX[f"{op.act}.count"]] += 1
            v[_PHYSICS_INDEX[f"{op.act}.activations"]] += out_elements
    return v


@lru_cache(maxsize=65536)
def _layer_vector(config: LayerConfig) -> np.ndarray:
    return ops_vector(layer_primitives(config))


#: (head, its feature maps, resolution, width multiplier) -> physics of the head's ops, which
#: depend on the maps alone (extra layers and predictors); members of a space share few of them.
_HEADS: dict[tuple, np.ndarray] = {}


@lru_cache(maxsize=65536)
def detector_vector(arch: ArchSpec, hw: tuple[int, int], head: SSDLiteHead, width_multiplier: float) -> np.ndarray:
    """The physics columns of a whole SSDLite detector (backbone, pyramid, head); layers and
    heads repeat across a space's members, so each is counted once."""
    total = sum((_layer_vector(config) for config in arch.trace(hw, width_multiplier)), np.zeros(len(_PHYSICS_INDEX)))
    if arch.pyramid is not None:
        ops = pyramid_primitives(arch, hw, width_multiplier) + head_primitives(head, arch, hw, width_multiplier)
        return total + ops_vector(ops)
    key = (head, head.feature_maps(arch, hw, width_multiplier), hw, width_multiplier)
    if key not in _HEADS:
        _HEADS[key] = ops_vector(head_primitives(head, arch, hw, width_multiplier))
    return total + _HEADS[key]


def space_from_json(data: dict[str, Any]) -> GenomeSpace:
    """Rebuild a space from the description a model stored."""
    from tdbnas.spaces.pyramid_space import space_from_description

    if "slots" in data:
        return CategoricalSpace.from_description(data)
    return space_from_description(data)


def space_description(space: GenomeSpace) -> dict[str, Any]:
    describe = getattr(space, "to_description", None)
    if not callable(describe):
        raise ValueError(f"space {space.name!r} cannot be written as a description, so a cost model with shared "
                         "features could not predict on its own; use the one-hot features")
    return describe()


def head_to_json(head: SSDLiteHead) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(head).items()}


def head_from_json(data: dict[str, Any]) -> SSDLiteHead:
    return SSDLiteHead(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


class SharedFeatures:
    """The shared feature columns of one space (see the module docstring)."""

    kind = "shared"

    def __init__(self, space: GenomeSpace, *, resolution: int | Sequence[int] | None = None,
                 head: SSDLiteHead | None = None, width_multiplier: float = 1.0):
        from tdbnas.latency.cost_model import FeatureLayout

        self.space_object = space
        self.description = space_description(space)
        self.space = space.name
        self.slots = tuple((slot.name, tuple(str(c) for c in slot.choices)) for slot in space.slots)
        self.deviation_layout = FeatureLayout.build(space)
        self.categorical = isinstance(space, CategoricalSpace)
        if self.categorical:
            self.hw, self.head, self.width_multiplier = None, None, 1.0
            self.physics = space.attribute_names
            table = np.zeros((len(self.slots), max(len(c) for _, c in self.slots), len(self.physics)))
            for s, (_, choices) in enumerate(self.slots):
                for c in range(len(choices)):
                    table[s, c] = [space.attribute(s, c, name) for name in self.physics]
            self._table = table
        else:
            if not isinstance(space, SearchSpace):
                raise TypeError(f"space {space.name!r} is neither categorical nor in the architecture language")
            self.hw = as_hw(320 if resolution is None else resolution)
            self.head = head or SSDLiteHead()
            self.width_multiplier = float(width_multiplier)
            self.physics = tuple(physics_names())
        slots_of: dict[str, set[int]] = {}
        for s, (_, choices) in enumerate(self.slots):
            for choice in choices:
                slots_of.setdefault(choice, set()).add(s)
        self.shared_choices = tuple(c for c, where in slots_of.items() if len(where) >= 2)

    # ---- layout ---------------------------------------------------------------------------
    def names(self) -> list[str]:
        return ([f"{name}" for name in self.physics] + [f"count:{c}" for c in self.shared_choices]
                + self.deviation_layout.names())

    def __len__(self) -> int:
        return len(self.physics) + len(self.shared_choices) + len(self.deviation_layout)

    def deviation_mask(self) -> np.ndarray:
        mask = np.zeros(len(self), dtype=bool)
        mask[len(self.physics) + len(self.shared_choices):] = True
        return mask

    def check_space(self, space: GenomeSpace) -> None:
        self.deviation_layout.check_space(space)

    def check_genomes(self, genomes: Any) -> np.ndarray:
        return self.deviation_layout.check_genomes(genomes)

    # ---- columns --------------------------------------------------------------------------
    def physics_matrix(self, genomes: Any) -> np.ndarray:
        g = self.check_genomes(genomes)
        if self.categorical:
            return self._table[np.arange(g.shape[1])[None, :], g].sum(axis=1)
        space = self.space_object
        return np.array([detector_vector(space.decode(tuple(int(x) for x in row)), self.hw, self.head,
                                         self.width_multiplier) for row in g]).reshape(len(g), len(self.physics))

    def count_matrix(self, genomes: Any) -> np.ndarray:
        """How many slots chose each shared choice name (the op-count regression's design)."""
        g = self.check_genomes(genomes)
        out = np.zeros((len(g), len(self.shared_choices)))
        column = {c: i for i, c in enumerate(self.shared_choices)}
        for s, (_, choices) in enumerate(self.slots):
            lookup = np.array([column.get(c, -1) for c in choices])
            hits = lookup[g[:, s]]
            rows = np.flatnonzero(hits >= 0)
            np.add.at(out, (rows, hits[rows]), 1.0)
        return out

    def madds(self, genomes: Any) -> np.ndarray:
        """Total multiply-adds of each genome (the MAdds-only baseline's one feature)."""
        physics = self.physics_matrix(genomes)
        columns = [i for i, name in enumerate(self.physics) if name == "madds" or name.endswith(".madds")]
        if not columns:
            raise ValueError(f"space {self.space!r} gives no MAdds attribute (an attribute named 'madds' or "
                             "'<kind>.madds')")
        return physics[:, columns].sum(axis=1)

    def encode(self, genomes: Any) -> np.ndarray:
        g = self.check_genomes(genomes)
        return np.hstack([self.physics_matrix(g), self.count_matrix(g), self.deviation_layout.encode(g)])

    # ---- JSON -----------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"kind": self.kind, "space": self.description}
        if not self.categorical:
            data.update(resolution=list(self.hw), head=head_to_json(self.head), width_multiplier=self.width_multiplier)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SharedFeatures:
        space = space_from_json(data["space"])
        if isinstance(space, CategoricalSpace):
            return cls(space)
        return cls(space, resolution=tuple(data["resolution"]), head=head_from_json(data["head"]),
                   width_multiplier=float(data["width_multiplier"]))


__all__ = ["ACTIVATION_KINDS", "OP_KINDS", "QUANTITIES", "SharedFeatures", "detector_vector", "op_kind",
           "ops_vector", "physics_names", "space_description", "space_from_json"]
