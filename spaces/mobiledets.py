"""MobileDets (Xiong, Liu et al., CVPR 2021, arXiv 2004.14525): the TDB search spaces and the
four released backbones.

Skeleton (TuNAS `_proxylessnas_search_base`, as the released models follow it): a 3x3
stride-2 stem, then blocks of 1, 4, 4, 4, 4, 4 and 1 layers with strides 1, 2, 2, 2, 1, 2, 1.
The first layer of blocks 2-6 carries the stride and is never skipped; the other three may
be skipped. Each block chooses one output width.

Layer choices (the option sets of the released models): IBN and fused IBN with k in {3, 5}
and expansion in {4, 8}; Tucker with k = 3 and (input, output) ratios in {0.25, 0.75}^2;
the IBN without expansion only in block 1 (as in MobileDet-CPU and -DSP).

Flavours: the accelerator spaces use ReLU6 and no squeeze-excite (EdgeTPU, DSP, GPU
models); the CPU space uses hard-swish and SE 0.25 on every IBN (MobileDet-CPU).

Width choices are per block, picked so that the released models are members:
MobileDet-EdgeTPU, -DSP and -GPU of `tdb`, MobileDet-CPU of `ibn-cpu`. The paper's exact
per-space definitions and filter multipliers were not available (reference §1.1, §7).
"""

from __future__ import annotations

from typing import Any

from tdbnas.spaces.layers import format_number

STRIDES = (2, 1, 2, 2, 2, 1, 2, 1)  # stem, blocks 1..7
LAYERS = (1, 1, 4, 4, 4, 4, 4, 1)
BLOCK_NAMES = ("stem", "b1", "b2", "b3", "b4", "b5", "b6", "b7")

# Union of the released accelerator models' widths (EdgeTPU / DSP / GPU) per block.
ACCELERATOR_WIDTHS = ((32,), (16, 24), (16, 32), (40, 64), (72, 120, 128), (96, 128, 144),
                      (120, 128, 160), (240, 384))
# MobileDet-CPU's widths (16, 8, 16, 32, 72, 72, 104, 144) and one wider choice per block.
CPU_WIDTHS = ((16,), (8, 16), (16, 24), (32, 40), (64, 72), (72, 96), (104, 128), (144, 192))

# One width per block: MobileDet-EdgeTPU's (stem 32, then 16, 16, 40, 72, 96, 120, 384).
LITE_WIDTHS = ((32,), (16,), (16,), (40,), (72,), (96,), (120,), (384,))

KERNELS = (3, 5)
EXPANSIONS = (4, 8)
TUCKER_RATIOS = (0.25, 0.75)


def ibn_ops(suffix: str = "") -> list[str]:
    return [f"ir_k{k}_e{e}{suffix}" for k in KERNELS for e in EXPANSIONS]


def fused_ops(suffix: str = "") -> list[str]:
    return [f"er_k{k}_e{e}{suffix}" for k in KERNELS for e in EXPANSIONS]


def tucker_ops() -> list[str]:
    return [f"tk_k3_i{format_number(i)}_o{format_number(o)}" for i in TUCKER_RATIOS for o in TUCKER_RATIOS]


def mobiledet_description(name: str, ops: list[str], widths: tuple[tuple[int, ...], ...], *,
                          cpu_flavour: bool = False, description: str = "") -> dict[str, Any]:
    """The MobileDets skeleton with `ops` in every searchable layer (plus the no-expansion IBN
    in block 1)."""
    suffix = "_se0.25_hs" if cpu_flavour else ""
    stem = "conv_k3_hs" if cpu_flavour else "conv_k3"
    first_block_ops = [f"ds_k{k}{suffix}" for k in KERNELS] + ops
    blocks = []
    for index, (block, layers, stride, block_widths) in enumerate(zip(BLOCK_NAMES, LAYERS, STRIDES, widths)):
        block_ops = [stem] if index == 0 else first_block_ops if index == 1 else ops
        blocks.append({"name": block, "layers": layers, "stride": stride, "widths": list(block_widths),
                       "ops": block_ops, "skippable": 2 <= index <= 6})
    return {"name": name, "description": description, "blocks": blocks}


def space_descriptions() -> list[dict[str, Any]]:
    return [
        mobiledet_description("ibn", ibn_ops(), ACCELERATOR_WIDTHS,
                              description="MobileDets IBN-only space (ReLU6, no SE)"),
        mobiledet_description("ibn-fused", ibn_ops() + fused_ops(), ACCELERATOR_WIDTHS,
                              description="MobileDets IBN + fused IBN space (ReLU6, no SE)"),
        mobiledet_description("tdb", ibn_ops() + fused_ops() + tucker_ops(), ACCELERATOR_WIDTHS,
                              description="MobileDets TDB space: IBN + fused IBN + Tucker (ReLU6, no SE); "
                                          "holds MobileDet-EdgeTPU, -DSP and -GPU"),
        mobiledet_description("ibn-cpu", ibn_ops("_se0.25_hs"), CPU_WIDTHS, cpu_flavour=True,
                              description="MobileDets IBN space, CPU flavour (hard-swish, SE 0.25); "
                                          "holds MobileDet-CPU"),
        mobiledet_description("tdb-lite", ["ir_k3_e4", "ir_k5_e4", "er_k3_e4", "tk_k3_i0.25_o0.75"],
                              LITE_WIDTHS,
                              description="TDB space for minutes-long CPU runs (the default of `tdbnas run`): "
                                          "one width per block (MobileDet-EdgeTPU's), IBN k3/k5 e4, fused k3 e4, "
                                          "Tucker 0.25/0.75, skips"),
    ]


def _blocks(*blocks: list[str]) -> str:
    return "/".join(",".join(block) for block in blocks)


_CPU = "_se0.25_hs"
MOBILEDET_CPU = _blocks(
    ["conv_k3_s2_c16_hs"],
    [f"ds_k3_c8{_CPU}"],
    [f"ir_k3_s2_e4_c16{_CPU}", "skip", "skip", "skip"],
    [f"ir_k3_s2_e8_c32{_CPU}"] + [f"ir_k3_e4_c32{_CPU}"] * 3,
    [f"ir_k5_s2_e8_c72{_CPU}", f"ir_k3_e8_c72{_CPU}", f"ir_k5_e4_c72{_CPU}", f"ir_k3_e4_c72{_CPU}"],
    [f"ir_k3_e8_c72{_CPU}"] * 4,
    [f"ir_k5_s2_e8_c104{_CPU}", f"ir_k5_e4_c104{_CPU}", f"ir_k5_e4_c104{_CPU}", f"ir_k3_e4_c104{_CPU}"],
    [f"ir_k3_e8_c144{_CPU}"],
)

MOBILEDET_EDGETPU = _blocks(
    ["conv_k3_s2_c32"],
    ["tk_k3_i0.25_o0.75_c16"],
    ["er_k3_s2_e8_c16", "er_k3_e4_c16", "er_k3_e8_c16", "er_k3_e4_c16"],
    ["er_k5_s2_e8_c40"] + ["er_k3_e4_c40"] * 3,
    ["ir_k3_s2_e8_c72", "ir_k3_e8_c72", "er_k3_e4_c72", "er_k3_e4_c72"],
    ["ir_k5_e8_c96", "ir_k5_e8_c96", "ir_k3_e8_c96", "ir_k3_e8_c96"],
    ["ir_k5_s2_e8_c120", "ir_k3_e8_c120", "ir_k5_e4_c120", "ir_k3_e8_c120"],
    ["ir_k5_e8_c384"],
)

MOBILEDET_DSP = _blocks(
    ["conv_k3_s2_c32"],
    ["ds_k3_c24"],
    ["er_k3_s2_e4_c32", "er_k3_e4_c32", "ir_k3_e4_c32", "tk_k3_i0.25_o0.75_c32"],
    ["er_k3_s2_e8_c64", "ir_k3_e4_c64", "er_k3_e4_c64", "er_k3_e4_c64"],
    ["er_k3_s2_e8_c120", "ir_k3_e4_c120", "ir_k3_e8_c120", "ir_k3_e8_c120"],
    ["er_k3_e8_c144"] + ["ir_k3_e8_c144"] * 3,
    ["ir_k3_s2_e4_c160", "ir_k3_e4_c160", "er_k3_e4_c160", "tk_k3_i0.75_o0.75_c160"],
    ["ir_k3_e8_c240"],
)

MOBILEDET_GPU = _blocks(
    ["conv_k3_s2_c32"],
    ["tk_k3_i0.25_o0.25_c16"],
    ["er_k3_s2_e8_c32"] + ["tk_k3_i0.25_o0.25_c32"] * 3,
    ["er_k3_s2_e8_c64", "er_k3_e8_c64", "er_k3_e8_c64", "er_k3_e4_c64"],
    ["er_k3_s2_e8_c128"] + ["er_k3_e4_c128"] * 3,
    ["er_k3_e8_c128"] * 4,
    ["er_k3_s2_e4_c128"] + ["er_k3_e4_c128"] * 3,
    ["ir_k3_e8_c384"],
)

# MobileNetV2 (Sandler et al. 2018) as SSDLite uses it. The TF OD API taps C4 at
# `layer_15/expansion_output`: the 1x1 expansion (96 -> 576) of the first stride-2 layer of
# the 160-channel stage. Written as `conv_k1_c576` ending block 5 followed by `ds_k3_s2_c160`
# (depthwise + linear projection), that IBN is split exactly at the tap, so the derived C4 is
# the 576-channel map with no extra syntax. C5 is the final 1x1 conv to 1280.
MOBILENET_V2 = _blocks(
    ["conv_k3_s2_c32"],
    ["ds_k3_c16"],
    ["ir_k3_s2_e6_c24", "ir_k3_e6_c24"],
    ["ir_k3_s2_e6_c32"] + ["ir_k3_e6_c32"] * 2,
    ["ir_k3_s2_e6_c64"] + ["ir_k3_e6_c64"] * 3,
    ["ir_k3_e6_c96"] * 3 + ["conv_k1_c576"],
    ["ds_k3_s2_c160"] + ["ir_k3_e6_c160"] * 2,
    ["ir_k3_e6_c320"],
    ["conv_k1_c1280"],
)
