"""The smallest predicted latency (or MAdds, or params) a `BlockSpace` can reach, found exactly.

Why: a budget below that minimum makes every candidate infeasible, and a search would only
find out after `random_tries` rejected samples, with no hint of what budget *is* reachable.
DetNAS (`search.py::legal`) simply loops; MMRazor's latency constraint was never evaluated at
all (open-mmlab/mmrazor#568). Here the check runs before the first evaluation and says the
number (reference detnas_nasfpn.md §6.1).

How. A detector's predicted latency is `a * (sum of unit entries + whole-model term) + b`
(`tdbnas.latency.predictor`). The unit sum is additive over layers and, given the widths at
the head's input endpoints, over head units. A layer's unit depends only on its block's input
width, its own block's width, the choice and the (fixed) position, so a dynamic programme over
blocks with state `(current width, endpoint widths chosen so far, mode)` is exact: within a
block each layer is a step whose cost depends on that state only. The tiny state space (at
most a few widths per block, two endpoints) makes it instant even for the 10^27-member `tdb`.

The whole-model term of modelled profiles (`tdbnas.latency.modelled.whole_model`) is not a sum
of entries, but it decomposes:
  * the Edge TPU CPU fallback after the first unsupported op is additive once the DP carries a
    boolean mode "the split has happened" (each unit's fallback depends only on that mode);
  * parameter streaming is `rate * max(0, P - cache)` with `P` the accelerated parameter bytes,
    itself additive. For any `0 <= lam <= rate`, `rate * max(0, P - C) >= lam * (P - C)`, so
    `min(sum + fallback + lam * P) - lam * C` is a lower bound (a Lagrangian relaxation); a few
    values of `lam` give the bound, and each DP argmin is a real member whose *predicted*
    latency is an upper bound. When they meet (always in practice: the fastest networks are
    far below the 7.5 MiB cache, so streaming is 0 at the optimum) the minimum is exact;
    otherwise `Minimum` reports both ends and `exact` is False.
`a > 0` (the calibration fit guarantees it), so minimising the raw sum minimises the prediction.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from tdbnas.latency.predictor import LatencyPredictor, MissingEntriesError, whole_model_term
from tdbnas.latency.units import DEFAULT_HEAD, head_units
from tdbnas.spaces import ArchSpec, BlockSpace, FeatureInfo, LayerConfig, SSDLiteHead, as_hw, layer_cost
from tdbnas.spaces.channels import round_channels, same_output_size
from tdbnas.spaces.primitives import head_primitives

#: Relative gap under which a lower and an upper bound count as equal (float summation order).
EXACT_TOLERANCE = 1e-9
#: Fractions of the streaming rate tried as Lagrange multipliers (0 = ignore streaming).
STREAMING_MULTIPLIERS = (0.0, 0.25, 0.5, 0.75, 1.0)

Mode = Hashable
LayerCostFn = Callable[[LayerConfig, Mode], tuple[float, Mode]]
HeadCostFn = Callable[[tuple[int, ...], Mode], float]


@dataclass(frozen=True)
class Minimum:
    """The smallest value of one quantity over a space: `value` is reached by `arch`; `lower`
    is a proven lower bound (equal to `value` when `exact`)."""

    quantity: str        # "latency", "madds" or "params"
    profile: str | None  # the latency profile, None for MAdds / params
    value: float
    lower: float
    arch: ArchSpec
    resolution: tuple[int, int]
    kind: str = ""       # "measured" / "modelled" for latency

    @property
    def exact(self) -> bool:
        return self.value - self.lower <= EXACT_TOLERANCE * max(1.0, abs(self.value))

    def to_json(self) -> dict[str, Any]:
        return {"quantity": self.quantity, "profile": self.profile, "value": self.value, "lower": self.lower,
                "exact": self.exact, "arch": self.arch.encode(), "resolution": list(self.resolution),
                "kind": self.kind}


# ---- the dynamic programme -------------------------------------------------------------------
def endpoint_blocks(space: BlockSpace, names: Sequence[str]) -> dict[int, str]:
    """Block index -> endpoint name: `C<k>` is the output of the last block at stride 2**k."""
    found: dict[str, int] = {}
    stride = 1
    for index, block in enumerate(space.blocks):
        stride *= block.stride
        for name in names:
            if stride == 2 ** int(name.lstrip("C")):
                found[name] = index
    missing = [name for name in names if name not in found]
    if missing:
        raise ValueError(f"space {space.name!r} has no endpoint {', '.join(missing)} for the head")
    return {index: name for name, index in found.items()}


def minimise(space: BlockSpace, resolution: int | Sequence[int], *, layer_cost_fn: LayerCostFn,
             head_cost_fn: HeadCostFn, head: SSDLiteHead = DEFAULT_HEAD, width_multiplier: float = 1.0,
             cut_after_endpoints: bool = True, initial_mode: Mode = None) -> tuple[float, ArchSpec]:
    """Minimum over all members of `sum(layer_cost_fn) + head_cost_fn(endpoint widths)`.

    `layer_cost_fn(config, mode) -> (cost, next mode)` is called for every non-skip layer (a
    skip is the identity: cost 0, mode unchanged); `head_cost_fn(widths, mode)` receives the
    built widths at `head.from_features`, in that order. With `cut_after_endpoints`, blocks after
    the last endpoint are not costed (as the latency units: they are not built), and the
    returned architecture takes their first choices.
    """
    if not isinstance(space, BlockSpace):
        raise TypeError(f"space {getattr(space, 'name', space)!r} is not a BlockSpace")
    hw = as_hw(resolution)
    endpoints = endpoint_blocks(space, head.from_features)
    last = max(endpoints) if cut_after_endpoints else len(space.blocks) - 1
    # state (built input width, ((endpoint, width), ...), mode) -> (cost, chosen layers per block)
    states: dict[tuple[int, tuple[tuple[str, int], ...], Mode], tuple[float, tuple]] = {
        (3, (), initial_mode): (0.0, ())}
    # A layer's cost depends on (block, position, choice, width, input width, mode) only, and
    # many states share them: cost each once (building a unit key is the expensive part).
    memo: dict[tuple, tuple[float, Mode]] = {}
    for b, block in enumerate(space.blocks[:last + 1]):
        out_hw = (same_output_size(hw[0], block.stride), same_output_size(hw[1], block.stride))
        following: dict = {}
        for (cin, eps, mode), (cost, chosen) in states.items():
            for width in block.widths:
                built = round_channels(width, width_multiplier)
                inner: dict[Mode, tuple[float, tuple]] = {mode: (cost, ())}
                for index in range(block.layers):
                    stride = block.stride if index == 0 else 1
                    in_channels, in_hw = (cin, hw) if index == 0 else (built, out_hw)
                    step: dict[Mode, tuple[float, tuple]] = {}
                    for m, (c, layers) in inner.items():
                        for t, template in enumerate(block.choices(index)):
                            layer = template.build(out=width, stride=stride)
                            if layer.is_skip:
                                add, m2 = 0.0, m
                            else:
                                memo_key = (b, index, t, width, in_channels, m)
                                if memo_key not in memo:
                                    placed = layer if width_multiplier == 1.0 else replace(layer, out=built)
                                    residual = (placed.residual_capable and index > 0 and stride == 1
                                                and built == in_channels)
                                    memo[memo_key] = layer_cost_fn(LayerConfig(placed, in_channels, in_hw, residual), m)
                                add, m2 = memo[memo_key]
                            total = c + add
                            if m2 not in step or total < step[m2][0]:
                                step[m2] = (total, (*layers, layer))
                    inner = step
                new_eps = (*eps, (endpoints[b], built)) if b in endpoints else eps
                for m, (c, layers) in inner.items():
                    key = (built, new_eps, m)
                    if key not in following or c < following[key][0]:
                        following[key] = (c, (*chosen, layers))
        states = following
        hw = out_hw
    best: tuple[float, tuple] | None = None
    for (_, eps, mode), (cost, chosen) in states.items():
        widths = dict(eps)
        total = cost + head_cost_fn(tuple(widths[name] for name in head.from_features), mode)
        if best is None or total < best[0]:
            best = (total, chosen)
    assert best is not None
    blocks = list(best[1])
    for block in space.blocks[last + 1:]:
        blocks.append(tuple(block.choices(i)[0].build(out=block.widths[0], stride=block.stride if i == 0 else 1)
                            for i in range(block.layers)))
    return best[0], ArchSpec(tuple(blocks))


def _endpoint_hws(space: BlockSpace, resolution: int | Sequence[int], names: Sequence[str]) -> list[tuple[int, int]]:
    hw, sizes = as_hw(resolution), {}
    for index, block in enumerate(space.blocks):
        hw = (same_output_size(hw[0], block.stride), same_output_size(hw[1], block.stride))
        sizes[index] = hw
    by_name = {name: index for index, name in endpoint_blocks(space, names).items()}
    return [sizes[by_name[name]] for name in names]


# ---- latency ---------------------------------------------------------------------------------
class _ModelledWholeModel:
    """Per-unit pieces of `tdbnas.latency.modelled.whole_model` (same loop, one unit at a time):
    the CPU-fallback milliseconds, given whether the split already happened, and the parameter
    bytes that stay on the accelerator (which streaming charges beyond the cache)."""

    def __init__(self, device: str):
        from tdbnas.latency import modelled

        self.m = modelled
        self.model = modelled.device_model(device)
        self.rate_ms_per_byte = self.model.ms_per_mb / 1e6
        self.cache = self.model.param_cache_bytes
        self._memo: dict[tuple[str, bool], tuple[float, int, bool]] = {}

    def unit(self, unit: Any, split: bool) -> tuple[float, int, bool]:
        """(fallback ms, accelerated parameter bytes, split after this unit)."""
        memo_key = (unit.key, split)
        if memo_key in self._memo:
            return self._memo[memo_key]
        m, model = self.m, self.model
        fallback, params = 0.0, 0
        for op in m.unit_ops(unit):
            supported = m.is_supported(op, model.name)
            if not split and model.single_split and not supported:
                split = True  # its own entry already holds its CPU time and the transfer
                continue
            if not split or not model.single_split:
                params += m.param_bytes(op) if supported else 0
            elif supported:
                fallback += m.cpu_ms(op, model) - m.accelerator_ms(op, model)
            else:
                fallback -= m.transfer_ms(op, model)
        self._memo[memo_key] = result = (fallback, params, split)
        return result


def min_latency(space: BlockSpace, predictor: LatencyPredictor, resolution: int | Sequence[int], *,
                head: SSDLiteHead = DEFAULT_HEAD, width_multiplier: float = 1.0) -> Minimum:
    """The smallest latency `predictor` predicts for any member of `space` (see the module doc)."""
    hw = as_hw(resolution)
    values = predictor.table.values(predictor.profile, predictor.runtime_version)
    info = predictor.table.profile(predictor.profile)
    calibration = predictor.calibration
    a, b = (1.0, 0.0) if calibration is None else (float(calibration.a), float(calibration.b))
    if a <= 0:
        raise ValueError(f"profile {predictor.profile!r} has a calibration slope a = {a} <= 0; refit it")
    whole = None
    if whole_model_term(info.kind, info.environment) is not None:
        whole = _ModelledWholeModel(str(info.environment.get("device")))
    missing: dict[str, None] = {}
    hws = _endpoint_hws(space, hw, head.from_features)

    def entry(key: str) -> float:
        value = values.get(key)
        if value is None:
            missing[key] = None
            return 0.0
        return value

    def run(lam: float) -> tuple[float, ArchSpec]:
        def layer_fn(config: LayerConfig, split: Mode) -> tuple[float, Mode]:
            cost = entry(config.key)
            if whole is None:
                return cost, split
            fallback, params, after = whole.unit(config, bool(split))
            return cost + fallback + lam * params, after

        def head_fn(widths: tuple[int, ...], split: Mode) -> float:
            total = 0.0
            for unit in head_units(head, widths, hws, width_multiplier):
                total += entry(unit.key)
                if whole is not None:
                    fallback, params, split = whole.unit(unit, bool(split))
                    total += fallback + lam * params
            return total

        return minimise(space, hw, layer_cost_fn=layer_fn, head_cost_fn=head_fn, head=head,
                        width_multiplier=width_multiplier, initial_mode=False)

    streaming = whole is not None and whole.cache is not None
    multipliers = STREAMING_MULTIPLIERS if streaming else (0.0,)
    lower_raw, best = -math.inf, None
    for fraction in multipliers:
        lam = fraction * whole.rate_ms_per_byte if streaming else 0.0  # type: ignore[union-attr]
        value, arch = run(lam)
        if missing:
            keys = list(missing)
            predictor.check(keys, [], hw, head, width_multiplier)  # raises, naming the profile command
            raise MissingEntriesError(f"profile {predictor.profile!r} lacks {len(keys)} entries", keys)
        lower_raw = max(lower_raw, value - (lam * whole.cache if streaming else 0.0))  # type: ignore[union-attr]
        predicted = float(predictor.predict_many([arch], hw, head=head, width_multiplier=width_multiplier)[0])
        if best is None or predicted < best[0]:
            best = (predicted, arch)
        found = Minimum("latency", predictor.profile, best[0], min(a * lower_raw + b, best[0]), best[1], hw,
                        predictor.kind)
        if found.exact:  # the usual case, at the first multiplier (0: no streaming at the optimum)
            break
    return found


# ---- MAdds and parameters --------------------------------------------------------------------
class _Endpoints:
    """Just enough of an `ArchSpec` for `SSDLiteHead.feature_maps`: the endpoints' widths."""

    def __init__(self, names: Sequence[str], strides: Sequence[int], widths: Sequence[int]):
        self._infos = {n: FeatureInfo(n, w, s, 0) for n, s, w in zip(names, strides, widths)}

    def feature(self, name: str, width_multiplier: float = 1.0) -> FeatureInfo:
        return self._infos[name]


def min_cost(space: BlockSpace, quantity: str, resolution: int | Sequence[int], *,
             head: SSDLiteHead = DEFAULT_HEAD, width_multiplier: float = 1.0) -> Minimum:
    """The smallest detector MAdds or params (`tdbnas.spaces.detector_cost(...).total`) in `space`.

    The whole backbone counts (costs are not cut at the last endpoint); the head's cost comes
    from `head_primitives` on the endpoint widths alone.
    """
    return _extreme_cost(space, quantity, resolution, head, width_multiplier, sign=1.0)


def max_cost(space: BlockSpace, quantity: str, resolution: int | Sequence[int], *,
             head: SSDLiteHead = DEFAULT_HEAD, width_multiplier: float = 1.0) -> Minimum:
    """The largest detector MAdds or params in `space` (the same programme on negated costs):
    the "largest child" of sandwich sampling. `value` and `lower` are that maximum."""
    return _extreme_cost(space, quantity, resolution, head, width_multiplier, sign=-1.0)


def _extreme_cost(space: BlockSpace, quantity: str, resolution: int | Sequence[int], head: SSDLiteHead,
                  width_multiplier: float, sign: float) -> Minimum:
    if quantity not in ("madds", "params"):
        raise ValueError(f"quantity must be 'madds' or 'params', not {quantity!r}")
    hw = as_hw(resolution)
    strides = [2 ** int(name.lstrip("C")) for name in head.from_features]
    memo: dict[tuple[int, ...], float] = {}

    def layer_fn(config: LayerConfig, mode: Mode) -> tuple[float, Mode]:
        return sign * float(getattr(layer_cost(config), quantity)), mode

    def head_fn(widths: tuple[int, ...], mode: Mode) -> float:
        if widths not in memo:
            ops = head_primitives(head, _Endpoints(head.from_features, strides, widths), hw,  # type: ignore[arg-type]
                                  width_multiplier)
            memo[widths] = sign * float(sum(getattr(op, quantity) for op in ops))
        return memo[widths]

    value, arch = minimise(space, hw, layer_cost_fn=layer_fn, head_cost_fn=head_fn, head=head,
                           width_multiplier=width_multiplier, cut_after_endpoints=False)
    return Minimum(quantity, None, sign * value, sign * value, arch, hw)


__all__ = ["Minimum", "endpoint_blocks", "max_cost", "min_cost", "min_latency", "minimise"]
