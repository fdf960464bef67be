"""The FBNet search space (Wu et al., CVPR 2019) as a categorical space, in the CIFAR geometry
that HW-NAS-Bench and HELP measured end-to-end latencies on.

22 searchable layers in blocks of 1, 4, 4, 4, 4, 4, 1 with output widths 16, 24, 32, 64, 112,
184, 352 and (CIFAR) strides 1, 1, 2, 2, 1, 2, 1 after a 3x3 stem of 16 channels at stride 1
on a 32x32 input; the first layer of a block carries its stride and width change. Each layer is
one of 9 blocks (the HW-NAS-Bench `PRIMITIVES` order, which HELP's genomes index):

    k{3,5}_e{1,3,6}   1x1 conv to in*e -> kxk depthwise (stride) -> 1x1 conv to out, residual
                      when stride 1 and in == out
    k{3,5}_e1_g2      the same with both 1x1 convs in 2 groups and a channel shuffle
    skip              identity; a 1x1 conv (stride, BN, ReLU) where stride or width changes

Not in the language of `tdbnas.spaces.arch` (no grouped 1x1 convs, CIFAR geometry), so each
choice carries its ops as numeric attributes `<op kind>.<quantity>`: kinds `conv1x1`,
`gconv1x1` (grouped), `dwconv3x3`, `dwconv5x5`, `add`, `shuffle`; quantities `count`, `madds`,
`params` (weights) and `activations` (elements read + written). The fixed stem, 1x1 head conv
and classifier are the same in every member and carry none.
"""

from __future__ import annotations

from tdbnas.spaces.categorical import CategoricalSpace

BLOCK_LAYERS = (1, 4, 4, 4, 4, 4, 1)
BLOCK_WIDTHS = (16, 24, 32, 64, 112, 184, 352)
CIFAR_STRIDES = (1, 1, 2, 2, 1, 2, 1)
STEM_WIDTH = 16
INPUT_SIZE = 32

#: The 9 blocks, in HW-NAS-Bench / HELP index order: name -> (kernel, expansion, groups); None is skip.
CHOICES: dict[str, tuple[int, int, int] | None] = {
    "k3_e1": (3, 1, 1), "k3_e1_g2": (3, 1, 2), "k3_e3": (3, 3, 1), "k3_e6": (3, 6, 1),
    "k5_e1": (5, 1, 1), "k5_e1_g2": (5, 1, 2), "k5_e3": (5, 3, 1), "k5_e6": (5, 6, 1), "skip": None,
}


def layer_geometry() -> list[tuple[int, int, int, int]]:
    """(input channels, output channels, stride, input size) of each of the 22 layers."""
    layers, cin, size = [], STEM_WIDTH, INPUT_SIZE
    for count, width, stride in zip(BLOCK_LAYERS, BLOCK_WIDTHS, CIFAR_STRIDES):
        for index in range(count):
            s = stride if index == 0 else 1
            layers.append((cin, width, s, size))
            cin, size = width, size // s
    return layers


def _add(attributes: dict[str, float], kind: str, madds: float = 0, params: float = 0,
         activations: float = 0) -> None:
    for quantity, value in (("count", 1), ("madds", madds), ("params", params), ("activations", activations)):
        if value:
            key = f"{kind}.{quantity}"
            attributes[key] = attributes.get(key, 0.0) + value


def choice_attributes(choice: str, cin: int, cout: int, stride: int, size: int) -> dict[str, float]:
    """The op-kind attributes of one block at one place of the network."""
    out = size // stride
    attributes: dict[str, float] = {}
    params = CHOICES[choice]
    if params is None:
        if stride != 1 or cin != cout:
            _add(attributes, "conv1x1", out * out * cin * cout, cin * cout, cin * size * size + cout * out * out)
        return attributes
    kernel, expansion, groups = params
    mid = cin * expansion
    pointwise = "gconv1x1" if groups > 1 else "conv1x1"
    _add(attributes, pointwise, size * size * cin * mid / groups, cin * mid / groups, (cin + mid) * size * size)
    if groups > 1:
        _add(attributes, "shuffle", activations=2 * mid * size * size)
    _add(attributes, f"dwconv{kernel}x{kernel}", out * out * mid * kernel * kernel, mid * kernel * kernel,
         mid * size * size + mid * out * out)
    _add(attributes, pointwise, out * out * mid * cout / groups, mid * cout / groups, (mid + cout) * out * out)
    if stride == 1 and cin == cout:
        _add(attributes, "add", activations=3 * cout * out * out)
    return attributes


def fbnet_space() -> CategoricalSpace:
    slots, attributes = [], []
    for index, (cin, cout, stride, size) in enumerate(layer_geometry(), start=1):
        slots.append((f"l{index}", tuple(CHOICES)))
        attributes.append([choice_attributes(choice, cin, cout, stride, size) for choice in CHOICES])
    return CategoricalSpace("fbnet", slots, attributes,
                            "FBNet, 22 layers x 9 blocks, CIFAR geometry (HW-NAS-Bench / HELP latency data)")


__all__ = ["CHOICES", "choice_attributes", "fbnet_space", "layer_geometry"]
