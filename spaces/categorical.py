"""Plain categorical spaces: named slots with named choices, and optional numeric attributes
per choice, for search spaces that are not written in the architecture language.

Cost models (`tdbnas.latency.cost_model`) and the search operators need only slots and
genomes (`GenomeSpace`); a space of someone else's networks, e.g. FBNet's 22 layers x 9 blocks
(`tdbnas.spaces.fbnet`), is written as such a space. Its attributes carry what is known of each
choice in each slot (MAdds, parameter and activation counts per op kind, ...), so that a learned
latency model can share an op's cost across slots instead of learning every slot on its own.

A description (YAML or JSON, safe loaders only):

    name: my-space
    description: what it is for
    slots:
      - name: l1
        choices: [k3_e1, k3_e6, skip]
        attributes:                     # optional; a missing attribute is 0
          k3_e1: {conv.madds: 1.2e6, conv.count: 2}
          k3_e6: {conv.madds: 7.4e6, conv.count: 2}

A member can be written as its genome (choice indices) or its choice names in slot order.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tdbnas.spaces.registry import Registry
from tdbnas.spaces.space import Genome, GenomeSpace, Slot, from_description_file, read_description

_SPACE_KEYS = {"name", "description", "slots"}
_SLOT_KEYS = {"name", "choices", "attributes"}


class CategoricalSpace(GenomeSpace):
    """Named slots, each with named choices and, optionally, numeric attributes per choice."""

    def __init__(self, name: str, slots: Sequence[tuple[str, Sequence[str]]],
                 attributes: Sequence[Mapping[str, Mapping[str, float]]] | None = None, description: str = ""):
        if not name or not isinstance(name, str):
            raise ValueError("a categorical space needs a name")
        if not slots:
            raise ValueError(f"space {name!r} needs at least one slot")
        self.name, self.description = name, description
        built = []
        for index, (slot_name, choices) in enumerate(slots):
            where = f"space {name!r}, slot {index} ({slot_name!r})"
            choices = tuple(str(c) for c in choices)
            if not choices:
                raise ValueError(f"{where} has no choices")
            if len(set(choices)) != len(choices):
                raise ValueError(f"{where} has duplicate choices: {list(choices)}")
            built.append(Slot(str(slot_name), choices))
        names = [slot.name for slot in built]
        if len(set(names)) != len(names):
            raise ValueError(f"space {name!r} has duplicate slot names")
        self._slots = tuple(built)
        attributes = list(attributes) if attributes is not None else [{} for _ in built]
        if len(attributes) != len(built):
            raise ValueError(f"space {name!r}: {len(attributes)} attribute tables for {len(built)} slots")
        self._attributes = tuple(_check_attributes(slot, table, name) for slot, table in zip(built, attributes))
        self.attribute_names: tuple[str, ...] = tuple(sorted({a for table in self._attributes
                                                              for values in table for a in values}))

    # ---- GenomeSpace ----------------------------------------------------------------------
    @property
    def slots(self) -> tuple[Slot, ...]:
        return self._slots

    # ---- attributes -------------------------------------------------------------------------
    def attribute(self, slot: int, choice: int, name: str) -> float:
        """The attribute `name` of choice `choice` in slot `slot` (0 where not given)."""
        return self._attributes[slot][choice].get(name, 0.0)

    def attributes_of(self, slot: int, choice: int) -> dict[str, float]:
        return dict(self._attributes[slot][choice])

    # ---- members as text --------------------------------------------------------------------
    def names_of(self, genome: Sequence[int]) -> tuple[str, ...]:
        """The choice names of a genome, in slot order."""
        genome = self.check_genome(genome)
        return tuple(slot.choices[g] for slot, g in zip(self._slots, genome))

    def genome_of(self, names: Sequence[str]) -> Genome:
        """The genome of a member written as its choice names; ValueError naming the bad slot."""
        if len(names) != len(self._slots):
            raise ValueError(f"{len(names)} choice names for the {len(self._slots)} slots of space {self.name!r}")
        genome = []
        for slot, choice in zip(self._slots, names):
            if choice not in slot.choices:
                raise ValueError(f"slot {slot.name!r} of space {self.name!r} has no choice {choice!r} "
                                 f"(choices: {', '.join(slot.choices)})")
            genome.append(slot.choices.index(choice))
        return tuple(genome)

    # ---- plain data ---------------------------------------------------------------------------
    @classmethod
    def from_description(cls, data: Any) -> CategoricalSpace:
        if not isinstance(data, dict):
            raise ValueError("a categorical space description must be a mapping with 'name' and 'slots'")
        unknown = sorted(set(data) - _SPACE_KEYS)
        if unknown:
            raise ValueError(f"unknown key(s) {unknown} in categorical space description; allowed: "
                             f"{sorted(_SPACE_KEYS)}")
        if "name" not in data or "slots" not in data:
            raise ValueError("a categorical space description needs 'name' and 'slots'")
        if not isinstance(data["slots"], list):
            raise ValueError("'slots' must be a list")
        slots, attributes = [], []
        for index, raw in enumerate(data["slots"]):
            if not isinstance(raw, dict):
                raise ValueError(f"slots[{index}]: a slot must be a mapping with 'name' and 'choices', got {raw!r}")
            unknown = sorted(set(raw) - _SLOT_KEYS)
            if unknown:
                raise ValueError(f"slots[{index}]: unknown key(s) {unknown}; allowed: {sorted(_SLOT_KEYS)}")
            if not isinstance(raw.get("choices"), list):
                raise ValueError(f"slots[{index}]: 'choices' must be a list of names")
            name = str(raw.get("name", f"s{index}"))
            table = raw.get("attributes") or {}
            if not isinstance(table, dict):
                raise ValueError(f"slots[{index}] ({name}): 'attributes' must map choice names to mappings")
            unknown_choices = sorted(set(map(str, table)) - set(map(str, raw["choices"])))
            if unknown_choices:
                raise ValueError(f"slots[{index}] ({name}): attributes for unknown choice(s) {unknown_choices}")
            slots.append((name, raw["choices"]))
            attributes.append({str(k): v for k, v in table.items()})
        return cls(str(data["name"]), slots, [[table.get(str(c), {}) for c in choices] for (_, choices), table
                                              in zip(slots, attributes)], str(data.get("description", "")))

    @classmethod
    def from_file(cls, path: str | Path) -> CategoricalSpace:
        return from_description_file(path, cls.from_description)

    def to_description(self) -> dict[str, Any]:
        slots = []
        for slot, table in zip(self._slots, self._attributes):
            entry: dict[str, Any] = {"name": slot.name, "choices": list(slot.choices)}
            given = {choice: dict(values) for choice, values in zip(slot.choices, table) if values}
            if given:
                entry["attributes"] = given
            slots.append(entry)
        return {"name": self.name, "description": self.description, "slots": slots}


def _check_attributes(slot: Slot, table: Any, space: str) -> tuple[dict[str, float], ...]:
    """Per choice of `slot`, its attributes as finite floats (given per choice, in order)."""
    where = f"space {space!r}, slot {slot.name!r}"
    if isinstance(table, Mapping):  # {choice name: {attribute: value}}
        table = [table.get(choice, {}) for choice in slot.choices]
    table = list(table)
    if len(table) != len(slot.choices):
        raise ValueError(f"{where}: attributes for {len(table)} choices, the slot has {len(slot.choices)}")
    checked = []
    for choice, values in zip(slot.choices, table):
        if not isinstance(values, Mapping):
            raise ValueError(f"{where}, choice {choice!r}: attributes must be a mapping of name to number")
        row = {}
        for key, value in values.items():
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise ValueError(f"{where}, choice {choice!r}: attribute {key!r} must be a finite number, "
                                 f"got {value!r}")
            row[str(key)] = float(value)
        checked.append(row)
    return tuple(checked)


def _load_categorical() -> None:
    from tdbnas.spaces.fbnet import fbnet_space

    CATEGORICAL_SPACES.add("fbnet", fbnet_space())


#: Built-in categorical spaces (not architecture-language spaces: `tdbnas.spaces.SPACES` holds those).
CATEGORICAL_SPACES: Registry[CategoricalSpace] = Registry("categorical space", _load_categorical)


def resolve_genome_space(text: str) -> GenomeSpace:
    """A built-in categorical space, a description file of one (a mapping with 'slots'), or any
    space `tdbnas.spaces.pyramid_space.resolve_space` knows."""
    from tdbnas.spaces.pyramid_space import resolve_space

    if text in CATEGORICAL_SPACES:
        return CATEGORICAL_SPACES.get(text)
    if Path(text).suffix in (".yaml", ".yml", ".json"):
        data = read_description(text)
        if isinstance(data, dict) and "slots" in data:
            return CategoricalSpace.from_file(text)
        return resolve_space(text)  # a block or pyramid space description, with its own messages
    try:
        return resolve_space(text)
    except ValueError as exc:
        raise ValueError(f"{exc}; built-in categorical spaces: {', '.join(CATEGORICAL_SPACES.names())}") from None


__all__ = ["CATEGORICAL_SPACES", "CategoricalSpace", "resolve_genome_space"]
