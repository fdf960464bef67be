"""DetNAS (Chen et al., NeurIPS 2019, arXiv 1903.10979): ShuffleNetV2 search spaces.

As in the official code (`megvii-model/DetNAS`, `detnasnet.py` and `shuffle_blocks.py`):
a 3x3 stride-2 conv + BN + ReLU stem, then four stages whose first block has stride 2;
every block chooses one of ShuffleNetV2 3x3 / 5x5 / 7x7 or Xception 3x3 (choice indices
0..3 in that order). The detection backbone has no max-pool and no final 1x1 conv: the
stage outputs are C2..C5 (strides 4..32).

  small (DetNAS-300M):  stages of 4, 4, 8, 4 blocks, widths 64/160/320/640, stem 16
  large (DetNAS-1.3G):  stages of 8, 8, 16, 8 blocks, widths 96/240/480/960, stem 48
"""

from __future__ import annotations

from typing import Any

CHOICES = ("sh_k3", "sh_k5", "sh_k7", "xc_k3")  # DetNAS `blocks_key` order

SMALL = {"stem": 16, "repeats": (4, 4, 8, 4), "widths": (64, 160, 320, 640)}
LARGE = {"stem": 48, "repeats": (8, 8, 16, 8), "widths": (96, 240, 480, 960)}

# Searched architectures from `detnasnet.py` (choice index per block).
DETNAS_300M = (2, 1, 2, 0, 2, 1, 1, 2, 3, 3, 1, 3, 0, 0, 3, 1, 3, 1, 3, 2)
DETNAS_RETINANET_300M = (2, 3, 1, 1, 3, 2, 1, 3, 3, 1, 1, 1, 3, 3, 2, 0, 3, 3, 3, 3)
DETNAS_1_3G = (0, 0, 3, 1, 2, 1, 0, 2, 0, 3, 1, 2, 3, 3, 2, 0, 2, 1, 1, 3,
               2, 0, 2, 2, 2, 1, 3, 1, 0, 3, 3, 3, 1, 3, 3, 3, 3, 3, 3, 3)


def detnas_description(name: str, stem: int, repeats: tuple[int, ...], widths: tuple[int, ...],
                       description: str) -> dict[str, Any]:
    blocks: list[dict[str, Any]] = [
        {"name": "stem", "layers": 1, "stride": 2, "widths": [stem], "ops": ["conv_k3_re"]}]
    for stage, (layers, width) in enumerate(zip(repeats, widths), start=1):
        blocks.append({"name": f"stage{stage}", "layers": layers, "stride": 2, "widths": [width],
                       "ops": list(CHOICES)})
    return {"name": name, "description": description, "blocks": blocks}


def space_descriptions() -> list[dict[str, Any]]:
    return [
        detnas_description("detnas-small", **SMALL,
                           description="DetNAS ShuffleNetV2 space, 20 blocks (DetNAS-300M)"),
        detnas_description("detnas-large", **LARGE,
                           description="DetNAS ShuffleNetV2 space, 40 blocks (DetNAS-1.3G)"),
    ]
