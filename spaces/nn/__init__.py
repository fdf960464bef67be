"""Torch modules for every layer kind and a backbone built from any spec.

Imports torch; the specs in `tdbnas.spaces` never import this subpackage.
"""

from tdbnas.spaces.nn.backbone import Backbone
from tdbnas.spaces.nn.blocks import BLOCKS, build_layer
from tdbnas.spaces.nn.ops import Conv2dSame, ConvBNAct, NormSettings, SqueezeExcite, init_weights, same_padding

__all__ = ["BLOCKS", "Backbone", "Conv2dSame", "ConvBNAct", "NormSettings", "SqueezeExcite", "build_layer",
           "init_weights", "same_padding"]
