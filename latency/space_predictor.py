"""Latency of many genomes of one `BlockSpace` at once: per-position lookup tables, no decoding.

`LatencyPredictor.predict_many` turns every architecture into unit keys (tens of thousands of
architectures per second). Search works on genomes of one space, where a layer's unit depends
only on a few genes: its op, its block's width and, for the first layer of a block, the previous
block's width; the head's units only on the widths at its endpoints. So each position gets a
small table indexed by those genes, filled once from the profile, and a batch of genomes is
summed with numpy fancy indexing: millions of genomes per second.

The tables are filled through the space's own `decode` and `ArchSpec.trace` (a representative
genome per gene combination), so the keys are exactly those `predict` would look up; a test
checks the two agree on random genomes. Profiles with a whole-model term (modelled Edge TPU
streaming and CPU fallback are not per-unit sums) fall back to `predict_many` on decoded genomes,
and so do backbone + pyramid spaces (`PyramidSearchSpace`), whose cells' units depend on many
genes at once (levels, inputs and the output order).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from tdbnas.latency.predictor import LatencyPredictor, MissingEntriesError
from tdbnas.latency.units import DEFAULT_HEAD, head_units
from tdbnas.spaces import BlockSpace, PyramidSearchSpace, SearchSpace, Skip, SSDLiteHead, as_hw


@dataclass(frozen=True)
class _Table:
    genes: tuple[int, ...]        # slot indices the entry depends on
    sizes: tuple[int, ...]        # choices of each of those slots
    values: np.ndarray            # flat, row-major over `sizes`
    keys: tuple[tuple[str, ...], ...]  # unit keys of each cell (for missing-entry errors)


class SpacePredictor:
    """`predict_genomes(genomes [N, slots]) -> ms [N]` for one space, resolution and head."""

    def __init__(self, predictor: LatencyPredictor, space: SearchSpace, resolution: int | Sequence[int], *,
                 head: SSDLiteHead = DEFAULT_HEAD, width_multiplier: float = 1.0):
        if not isinstance(space, (BlockSpace, PyramidSearchSpace)):
            raise TypeError(f"space {getattr(space, 'name', space)!r} is not a BlockSpace; use predict_many")
        self.predictor, self.space = predictor, space
        self.hw, self.head, self.width_multiplier = as_hw(resolution), head, width_multiplier
        self.exact_tables = predictor._whole_model is None and isinstance(space, BlockSpace)  # noqa: SLF001
        self._tables = self._build_tables() if self.exact_tables else []

    # ---- building ---------------------------------------------------------------------------
    def _genes_of_position(self) -> list[tuple[int, ...]]:
        """Per flat layer position, the slots its unit depends on."""
        genes: list[tuple[int, ...]] = []
        previous_width: int | None = None
        for width_gene, layer_genes in self.space._plan:  # noqa: SLF001 - the space's own slot layout
            for index, op_gene in enumerate(layer_genes):
                relevant = [g for g in (op_gene, width_gene) if g is not None]
                if index == 0 and previous_width is not None:
                    relevant.append(previous_width)
                genes.append(tuple(sorted(set(relevant))))
            previous_width = width_gene
        return genes

    def _cells(self, genes: tuple[int, ...]):
        """(flat index, representative genome) for every combination of `genes`' choices."""
        sizes = [len(self.space.slots[g]) for g in genes]
        for flat, combo in enumerate(itertools.product(*(range(s) for s in sizes))):
            genome = [0] * len(self.space.slots)
            for gene, choice in zip(genes, combo):
                genome[gene] = choice
            yield flat, self.space.decode(genome)

    def _table(self, genes: tuple[int, ...], keys_of) -> _Table:
        sizes = tuple(len(self.space.slots[g]) for g in genes)
        values = np.zeros(int(np.prod(sizes)) if sizes else 1)
        all_keys = []
        lookup, index = self.predictor._values, self.predictor._index  # noqa: SLF001
        for flat, arch in self._cells(genes):
            keys = keys_of(arch)
            all_keys.append(keys)
            values[flat] = sum(lookup[index[k]] if k in index else np.nan for k in keys)
        return _Table(genes, sizes, values, tuple(all_keys))

    def _build_tables(self) -> list[_Table]:
        hw, wm, head = self.hw, self.width_multiplier, self.head
        reference = self.space.decode([0] * len(self.space.slots))
        last = max(reference.feature(name, wm).layer_index for name in head.from_features)
        tables = []
        for position, genes in enumerate(self._genes_of_position()):
            if position > last:
                break  # layers past the last endpoint are not built

            def keys_of(arch, position=position):
                config = arch.trace(hw, wm)[position]
                return () if isinstance(config.layer, Skip) else (config.key,)

            tables.append(self._table(genes, keys_of))
        head_genes = tuple(sorted({g for name in head.from_features for g in self._endpoint_genes(name)}))

        def head_keys(arch):
            maps = head.feature_maps(arch, hw, wm)[:len(head.from_features)]
            return tuple(u.key for u in head_units(head, [m.channels for m in maps], [m.hw for m in maps], wm))

        tables.append(self._table(head_genes, head_keys))
        return tables

    def _endpoint_genes(self, name: str) -> tuple[int, ...]:
        """The width slot of the block that produces endpoint `name` (none when its width is fixed)."""
        target, stride = 2 ** int(name.lstrip("C")), 1
        found = None
        for block, (width_gene, _) in zip(self.space.blocks, self.space._plan):  # noqa: SLF001
            stride *= block.stride
            if stride == target:
                found = width_gene
        return () if found is None else (found,)

    # ---- predicting -------------------------------------------------------------------------
    def predict_genomes(self, genomes: np.ndarray | Sequence[Sequence[int]], *, calibrated: bool = True
                        ) -> np.ndarray:
        genomes = np.asarray(genomes, dtype=np.int64)
        if genomes.ndim != 2 or genomes.shape[1] != len(self.space.slots):
            raise ValueError(f"genomes must be [N, {len(self.space.slots)}] for space {self.space.name!r}, "
                             f"got shape {genomes.shape}")
        if not self.exact_tables:
            archs = [self.space.decode(tuple(int(g) for g in row)) for row in genomes]
            return self.predictor.predict_many(archs, self.hw, head=self.head,
                                               width_multiplier=self.width_multiplier, calibrated=calibrated)
        total = np.zeros(len(genomes))
        for table in self._tables:
            flat = np.zeros(len(genomes), dtype=np.int64)
            for gene, size in zip(table.genes, table.sizes):
                flat = flat * size + genomes[:, gene]
            total += table.values[flat]
        if np.isnan(total).any():
            self._raise_missing(genomes[np.isnan(total)])
        calibration = self.predictor.calibration
        return calibration.apply(total) if calibrated and calibration is not None else total

    def _raise_missing(self, genomes: np.ndarray) -> None:
        archs = [self.space.decode(tuple(int(g) for g in row)) for row in genomes[:5]]
        keys = [k for arch in archs for k in self.predictor.missing(_all_keys(self, arch))]
        message = self.predictor.profile_command(archs, self.hw, self.head, self.width_multiplier)
        raise MissingEntriesError(f"profile {self.predictor.profile!r} has no entry for {len(set(keys))} unit(s) of "
                                  f"{len(genomes)} genome(s), e.g. {keys[:5]}. Measure them with: {message}", keys)


def _all_keys(space_predictor: SpacePredictor, arch) -> list[str]:
    from tdbnas.latency.predictor import unit_keys

    return list(unit_keys(arch, space_predictor.hw, space_predictor.head, space_predictor.width_multiplier))
