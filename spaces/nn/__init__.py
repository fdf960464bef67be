"""Torch modules for every layer kind, a backbone built from any spec, and the feature pyramid.

Imports torch; the specs in `tdbnas.spaces` never import this subpackage.
"""

from tdbnas.spaces.nn.backbone import Backbone
from tdbnas.spaces.nn.blocks import BLOCKS, build_layer
from tdbnas.spaces.nn.ops import Conv2dSame, ConvBNAct, NormSettings, SqueezeExcite, init_weights, same_padding
from tdbnas.spaces.nn.pyramid import Pyramid, pyramid_forward

__all__ = ["BLOCKS", "Backbone", "Conv2dSame", "ConvBNAct", "NormSettings", "Pyramid", "SqueezeExcite", "build_layer",
           "init_weights", "pyramid_forward", "same_padding"]
