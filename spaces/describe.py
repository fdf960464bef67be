"""A layer-by-layer table of an architecture: what `tdbnas arch show` prints and run reports draw.

Pure Python (no torch): the rows come from the spec's trace (channels, strides, output sizes)
and `costs.layer_cost`.
"""

from __future__ import annotations

from tdbnas.spaces.channels import round_channels
from tdbnas.spaces.costs import layer_cost
from tdbnas.spaces.layers import IBN, DepthwiseSeparable, FusedIBN, ShuffleBlock, Tucker, XceptionBlock

LAYER_HEADERS = ("#", "blk", "token", "kind", "k", "s", "options", "in>out", "inner", "res", "out", "ep",
                 "MAdds(M)", "params(K)")


def _inner(config) -> str:
    layer, cin = config.layer, config.in_channels
    if isinstance(layer, (IBN, FusedIBN, DepthwiseSeparable)):
        hidden = layer.hidden(cin)
        text = f"dw{hidden}" if isinstance(layer, DepthwiseSeparable) else str(hidden)
        return text + (f"; SE{round_channels(hidden, layer.se)}" if layer.se else "")
    if isinstance(layer, Tucker):
        return "{}>{}".format(*layer.ranks(cin))
    if isinstance(layer, (ShuffleBlock, XceptionBlock)):
        return f"mid {layer.mid()}"
    return "-"


def _options(layer) -> str:
    parts = []
    if hasattr(layer, "expansion"):
        parts.append(f"e{layer.expansion}")
    if hasattr(layer, "in_ratio"):
        parts.append(f"({layer.in_ratio:g},{layer.out_ratio:g})")
    if getattr(layer, "se", 0):
        parts.append(f"se{layer.se:g}")
    act = getattr(layer, "act", None)
    if act and act != layer.default_act:
        parts.append(act)
    return " ".join(parts) or "-"


def layer_rows(arch, hw, width_multiplier: float) -> list[list[object]]:
    """One row per layer (columns: `LAYER_HEADERS`) of `arch` at input `hw`."""
    endpoint_at = {info.layer_index: info.name for info in arch.features(width_multiplier)}
    rows = []
    for index, (config, (b, _, layer)) in enumerate(zip(arch.trace(hw, width_multiplier), arch.layers())):
        cost = layer_cost(config)
        rows.append([index, b, config.layer.token(), layer.title, getattr(layer, "kernel", "-"), config.stride,
                     _options(layer), f"{config.in_channels}>{config.out_channels}", _inner(config),
                     "yes" if config.residual else "", "{}x{}".format(*config.out_hw), endpoint_at.get(index, ""),
                     f"{cost.madds / 1e6:.1f}", f"{cost.params / 1e3:.1f}"])
    return rows
