"""tdbnas.spaces: the architecture language, search spaces, reference architectures and
cost counting. Framework-free: importing it loads neither torch nor TensorFlow.

    >>> from tdbnas.spaces import ArchSpec, get_space, get_reference, detector_cost
    >>> arch = get_reference("mobiledet-edgetpu").arch
    >>> get_space("tdb").contains(arch)
    True
    >>> ArchSpec.parse(arch.encode()) == arch
    True

Torch modules for the layers live in `tdbnas.spaces.nn` (imported on demand).
"""

from tdbnas.spaces.arch import ArchSpec, ArchStringError, FeatureInfo, LayerConfig
from tdbnas.spaces.catalog import (
    ARCHS,
    PYRAMIDS,
    SPACES,
    NamedPyramid,
    ReferenceArch,
    get_reference,
    get_space,
    register_arch,
    register_pyramid,
    register_space,
    resolve_arch,
    resolve_pyramid,
)
from tdbnas.spaces.categorical import CATEGORICAL_SPACES, CategoricalSpace, resolve_genome_space
from tdbnas.spaces.channels import as_hw, round_channels
from tdbnas.spaces.costs import Cost, DetectorCost, backbone_cost, detector_cost, layer_cost
from tdbnas.spaces.head import FeatureMap, SSDLiteHead
from tdbnas.spaces.layers import (
    IBN,
    Conv,
    DepthwiseSeparable,
    FusedIBN,
    Layer,
    LayerTemplate,
    ShuffleBlock,
    Skip,
    Tucker,
    XceptionBlock,
    parse_layer,
)
from tdbnas.spaces.primitives import Primitive, head_primitives, layer_primitives
from tdbnas.spaces.pyramid import MergeCell, PyramidSpec, PyramidStringError
from tdbnas.spaces.pyramid_space import PyramidChoices, PyramidSearchSpace, pyramid_space
from tdbnas.spaces.space import (
    BlockChoices,
    BlockSpace,
    GenomeSpace,
    InfeasibleError,
    NotInSpaceError,
    SearchSpace,
    Slot,
)

__all__ = [
    "ARCHS", "ArchSpec", "ArchStringError", "BlockChoices", "BlockSpace", "CATEGORICAL_SPACES", "CategoricalSpace",
    "Conv", "Cost", "DepthwiseSeparable", "DetectorCost", "FeatureInfo", "FeatureMap", "FusedIBN", "GenomeSpace",
    "IBN", "InfeasibleError", "Layer", "LayerConfig",
    "LayerTemplate", "MergeCell", "NamedPyramid", "NotInSpaceError", "PYRAMIDS", "Primitive", "PyramidChoices",
    "PyramidSearchSpace", "PyramidSpec", "PyramidStringError", "ReferenceArch", "SPACES", "SSDLiteHead",
    "SearchSpace", "ShuffleBlock", "Skip", "Slot", "Tucker", "XceptionBlock", "as_hw", "backbone_cost",
    "detector_cost", "get_reference", "get_space", "head_primitives", "layer_cost", "layer_primitives",
    "parse_layer", "pyramid_space", "register_arch", "register_pyramid", "register_space", "resolve_arch",
    "resolve_genome_space", "resolve_pyramid", "round_channels",
]
