"""The one-shot supernet: every choice of a `BlockSpace` with its own weights, one path at a time.

DetNAS (Chen et al., NeurIPS 2019) after Single Path One-Shot (Guo et al., ECCV 2020): the
supernet holds, for every layer position, one module per choice it can meet, and each
training step runs a single path drawn uniformly from the space (reference §2). Here a
position's choices are (op, input width, output width): the first layer of a block meets every
width of the previous block, and every layer meets every width of its own block. Each module
is built with the same `build_layer` as the stand-alone network, so a path's weights are the
state dict of a plain `SSDLite(arch)` under the same names:

    supernet                                         SSDLite(arch)
    backbone.blocks.3.0.er_k5_s2_e8_c64__in32.*  ->  backbone.blocks.3.0.*
    extras.0.in384.*                             ->  extras.0.*          (per C5 width)
    box_heads.0.in96.* / class_heads.0.in96.*    ->  box_heads.0.* / class_heads.0.*  (per C4 width)
    extras.1.*, box_heads.2.*, ...               ->  the same name       (shared by every path)

Head modules whose input is a backbone endpoint (the first extra layer, the predictors on C4
and C5) exist once per endpoint width; the rest of the head is shared by every path.

`weight_sharing` trades fidelity for size (`supernet_size`): "none" (default, per-choice
weights as DetNAS), "in" (choices differing only in input width share sliced weights) or
"width" (all widths of an op at a position share sliced weights, OFA-style); see `sharing.py`.

Every member of a `BlockSpace` has the same strides, so the feature-map sizes and anchors of
the detector do not depend on the path: `anchors(resolution)` serves the whole supernet, and
the detection loss and `evaluate_model` work on it unchanged once a path is active.

Over a `PyramidSearchSpace` (backbone + searchable feature pyramid) the supernet also holds the
pyramid with weight-sharing cells: a cell position's ReLU -> conv -> BN has the same shape
whatever its inputs, level and binary op, so one module per (stack, cell) serves every wiring
(like the shared operations of a cell-based one-shot model, ENAS / DARTS), and a path runs the
wiring of its architecture through the same `pyramid_forward` as the stand-alone network.
Laterals exist per endpoint width; every pyramid level has the pyramid width, so the head is
shared by every path:

    pyramid.lateral.0.in40.*   ->  pyramid.lateral.0.*     (per C3 width that differs from the pyramid's)
    pyramid.cells.0.3.*        ->  pyramid.cells.0.3.*     (shared by every wiring)
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from tdbnas.search.sharing import SlicedChoice
from tdbnas.spaces import (
    ArchSpec,
    BlockSpace,
    LayerConfig,
    PyramidSearchSpace,
    SSDLiteHead,
    as_hw,
    resolve_arch,
    round_channels,
)
from tdbnas.spaces.nn import build_layer, init_weights
from tdbnas.spaces.nn.ops import DEFAULT_NORM, ConvBNAct, NormSettings
from tdbnas.spaces.nn.pyramid import MaxPool2x2, PyramidConv, pyramid_forward

if TYPE_CHECKING:
    from tdbnas.detection.model import SSDLite

WEIGHT_SHARING = ("none", "in", "width")
FINGERPRINT = "space_fingerprint"


@dataclass(frozen=True)
class PathStep:
    """One module run by a path: its name in the stand-alone SSDLite (`child`), the supernet
    module that holds its weights, and the member key when that module is a `SlicedChoice`."""

    child: str
    module: nn.Module
    member: str | None


@dataclass(frozen=True)
class PathPlan:
    """The modules a member runs: backbone layers in order (None for `skip`), the pyramid's
    laterals (None: the identity), extra levels and cells, then the head."""

    arch: ArchSpec
    backbone: tuple[PathStep | None, ...]
    extras: tuple[PathStep, ...]
    box_heads: tuple[PathStep, ...]
    class_heads: tuple[PathStep, ...]
    laterals: tuple[PathStep | None, ...] = ()
    pyramid_extras: tuple[PathStep, ...] = ()
    cells: tuple[tuple[PathStep, ...], ...] = ()

    def steps(self) -> Iterator[PathStep]:
        yield from (step for step in self.backbone if step is not None)
        yield from (step for step in self.laterals if step is not None)
        yield from self.pyramid_extras
        yield from (step for row in self.cells for step in row)
        yield from self.extras
        yield from self.box_heads
        yield from self.class_heads


def choice_key(config: LayerConfig) -> str:
    """Module name of a placed layer in its position: `ir_k3_s2_e4_c32__in16` (dots -> `p`,
    since module names cannot hold dots)."""
    return _safe(f"{config.layer.token()}__in{config.in_channels}")


def sample_path(space: BlockSpace, step: int, seed: int = 0) -> ArchSpec:
    """The path trained at `step`: uniform over the space (SPOS), a pure function of
    (seed, step), so a resumed or distributed run trains exactly the same paths. Respects the
    space's feasibility predicate when one is set."""
    return space.sample(random.Random(f"tdbnas.supernet:{seed}:{step}"))


def space_fingerprint(space: BlockSpace | PyramidSearchSpace) -> bytes:
    """SHA-256 of the space's name and blocks (and pyramid frame): weights remember which space
    they belong to."""
    description = space.to_description()
    if "pyramid" in description:
        content = {"name": description["name"], "blocks": description["backbone"]["blocks"],
                   "pyramid": description["pyramid"]}
    else:
        content = {"name": description["name"], "blocks": description["blocks"]}
    canonical = json.dumps(content, sort_keys=True)
    return hashlib.sha256(canonical.encode()).digest()


class Supernet(nn.Module):
    """SSDLite over every member of `space`; `forward` runs the active path (`set_active`)."""

    def __init__(self, space: BlockSpace | PyramidSearchSpace, *, num_classes: int = 90,
                 head: SSDLiteHead | None = None,
                 width_multiplier: float = 1.0, weight_sharing: str = "none",
                 backbone_norm: NormSettings = DEFAULT_NORM, head_norm: NormSettings | None = None):
        super().__init__()
        from tdbnas.detection.model import HEAD_NORM

        if not isinstance(space, (BlockSpace, PyramidSearchSpace)):
            raise TypeError(f"a supernet needs a BlockSpace (blocks of layer slots), got {type(space).__name__}")
        if weight_sharing not in WEIGHT_SHARING:
            raise ValueError(f"weight_sharing must be one of {WEIGHT_SHARING}, got {weight_sharing!r}")
        head = head or SSDLiteHead(num_classes=num_classes)
        if head.num_classes != num_classes:
            head = dataclasses.replace(head, num_classes=num_classes)
        self.space, self.width_multiplier = space, width_multiplier
        self.blocks_space = space.backbone if isinstance(space, PyramidSearchSpace) else space
        self.weight_sharing = weight_sharing
        self._backbone_norm, self._head_norm = backbone_norm, head_norm or HEAD_NORM
        # Strides are fixed per block, so endpoints sit at the same layers in every member (and
        # every member of a pyramid space has the same pyramid frame, hence the same head).
        self.reference = space.decode((0,) * len(space.slots))
        self.head_spec = head = head.resolve(self.reference)
        features = {info.name: info for info in self.reference.features(width_multiplier)}
        if self.reference.pyramid is None:
            taps = list(head.from_features)
        else:
            taps = [info.name for info in self.reference.pyramid_inputs(width_multiplier)]
        missing = [name for name in taps if name not in features]
        if missing:
            raise ValueError(f"the head reads {missing}, which members of space {space.name!r} lack; "
                             f"they have {list(features)}")
        self._taps = {features[name].layer_index: slot for slot, name in enumerate(taps)}
        self._last_tap = max(self._taps)
        self._positions = _block_positions(self.blocks_space)
        self.register_buffer(FINGERPRINT, torch.tensor(list(space_fingerprint(space)), dtype=torch.uint8))
        self.backbone = nn.Module()
        self.backbone.blocks = self._build_backbone()
        self._build_head()
        self._path: PathPlan | None = None

    # ---- construction ------------------------------------------------------------------------
    def _group(self, member: str, config: LayerConfig | None) -> str:
        """Which module a member lives in: itself, or the op's slice group under sharing."""
        if self.weight_sharing == "none":
            return member
        if config is None:  # a head module: its only variable is the input width
            return "sliced"
        layer = config.layer
        return _safe(layer.token() if self.weight_sharing == "in" else layer.signature())

    def _container(self, builders: dict[str, tuple[Callable[[], nn.Module], LayerConfig | None]]) -> nn.ModuleDict:
        """A ModuleDict of groups: a member alone in its group is a plain module; several
        members of one group share a `SlicedChoice`."""
        groups: dict[str, dict[str, Callable[[], nn.Module]]] = {}
        for member, (build, config) in builders.items():
            groups.setdefault(self._group(member, config), {})[member] = build
        container = nn.ModuleDict()
        for group, members in groups.items():
            container[group] = next(iter(members.values()))() if len(members) == 1 else SlicedChoice(members)
        return container

    def _build_backbone(self) -> nn.ModuleList:
        norm, wm = self._backbone_norm, self.width_multiplier
        blocks = nn.ModuleList()
        in_widths: tuple[int, ...] = (3,)
        for b, block in enumerate(self.blocks_space.blocks):
            widths = tuple(round_channels(w, wm) for w in block.widths)
            layers = nn.ModuleList()
            for i in range(block.layers):
                if self._positions[b] + i > self._last_tap:
                    break
                stride = block.stride if i == 0 else 1
                builders: dict[str, tuple[Callable[[], nn.Module], LayerConfig | None]] = {}
                for template in block.choices(i):
                    if template.is_skip:
                        continue
                    for width in widths:
                        layer = template.build(out=width, stride=stride)
                        for cin in in_widths if i == 0 else (width,):
                            residual = layer.residual_capable and i > 0 and stride == 1 and cin == width
                            config = LayerConfig(layer, cin, (1, 1), residual)
                            builders[choice_key(config)] = (_layer_builder(config, norm), config)
                layers.append(self._container(builders))
            if len(layers):
                blocks.append(layers)
            in_widths = widths
        return blocks

    def _endpoint_widths(self, name: str) -> tuple[int, ...]:
        """Every channel count endpoint `name` can have: the widths of the block holding it."""
        index = next(info.layer_index for info in self.reference.features(self.width_multiplier) if info.name == name)
        block = max(b for b, start in enumerate(self._positions) if start <= index)
        return tuple(round_channels(w, self.width_multiplier) for w in self.blocks_space.blocks[block].widths)

    def _build_pyramid(self) -> int:
        """The pyramid's modules (see the module docstring); returns the pyramid width."""
        spec, norm = self.reference.pyramid, self._head_norm
        width = spec.scaled_width(self.width_multiplier)
        inputs = self.reference.pyramid_inputs(self.width_multiplier)
        self.pyramid = nn.Module()
        self.pyramid.lateral = nn.ModuleList(
            self._per_width([w for w in self._endpoint_widths(info.name) if w != width],
                            lambda c: _initialised(ConvBNAct(c, width, 1, act=None, norm=norm)))
            for info in inputs)
        self.pyramid.extra = nn.ModuleList(
            MaxPool2x2() if spec.extra == "pool" else _initialised(PyramidConv(width, 2, spec.separable, norm))
            for _ in range(spec.num_levels - len(inputs)))
        self.pyramid.cells = nn.ModuleList(
            nn.ModuleList(_initialised(PyramidConv(width, 1, spec.separable, norm)) for _ in spec.cells)
            for _ in range(spec.stack))
        return width

    def _build_head(self) -> None:
        from tdbnas.detection.model import ExtraLayer

        head, norm = self.head_spec, self._head_norm
        anchors = head.anchors_per_location()
        self.pyramid = None
        if self.reference.pyramid is None:
            endpoint_widths = [self._endpoint_widths(name) for name in head.from_features]
            channels: list[int | None] = [None] * len(head.from_features)  # None: depends on the path
        else:  # every pyramid level has the pyramid width: the head is shared by every path
            width = self._build_pyramid()
            endpoint_widths = [(width,)] * len(head.from_features)
            channels = [width] * len(head.from_features)
        self.extras = nn.ModuleList()
        previous = channels[-1]
        for depth in head.extra_depths:
            mid, out = head.extra_widths(depth, self.width_multiplier)
            if previous is None:
                self.extras.append(self._per_width(endpoint_widths[-1], lambda c, mid=mid, out=out: _initialised(
                    ExtraLayer(c, mid, out, norm))))
            else:
                self.extras.append(_initialised(ExtraLayer(previous, mid, out, norm)))
            previous = out
            channels.append(out)
        self.box_heads, self.class_heads = nn.ModuleList(), nn.ModuleList()
        for index, (width, count) in enumerate(zip(channels, anchors)):
            box = lambda c, count=count: _predictor(c, count * 4, head.kernel, norm)
            cls = lambda c, count=count: _predictor(c, count * head.class_slots, head.kernel, norm, class_bias=True)
            if width is None:
                self.box_heads.append(self._per_width(endpoint_widths[index], box))
                self.class_heads.append(self._per_width(endpoint_widths[index], cls))
            else:
                self.box_heads.append(box(width))
                self.class_heads.append(cls(width))

    def _per_width(self, widths: Sequence[int], build: Callable[[int], nn.Module]) -> nn.ModuleDict:
        return self._container({f"in{w}": (lambda w=w: build(w), None) for w in widths})

    # ---- paths ---------------------------------------------------------------------------------
    def path(self, arch: ArchSpec | str) -> PathPlan:
        """The modules `arch` runs; `NotInSpaceError` (a ValueError) if the space lacks it."""
        arch = resolve_arch(arch) if isinstance(arch, str) else arch
        self.space.encode(arch)  # raises NotInSpaceError naming the block, layer and choices
        configs = arch.trace(1, self.width_multiplier)
        backbone: list[PathStep | None] = []
        for flat, (b, i, _) in enumerate(arch.layers()):
            if flat > self._last_tap:
                break
            config = configs[flat]
            if config.layer.is_skip:
                backbone.append(None)
            else:
                backbone.append(self._step(f"backbone.blocks.{b}.{i}", self.backbone.blocks[b][i], choice_key(config),
                                           config))
        if arch.pyramid is not None:
            return self._pyramid_path(arch, tuple(backbone))
        widths = {info.name: info.channels for info in arch.features(self.width_multiplier)}
        endpoints = [widths[name] for name in self.head_spec.from_features]
        extras = [self._step("extras.0", self.extras[0], f"in{endpoints[-1]}", None) if index == 0
                  else PathStep(f"extras.{index}", module, None) for index, module in enumerate(self.extras)]
        heads = []
        for kind in ("box_heads", "class_heads"):
            modules = getattr(self, kind)
            heads.append(tuple(self._step(f"{kind}.{index}", module, f"in{endpoints[index]}", None)
                               if index < len(endpoints) else PathStep(f"{kind}.{index}", module, None)
                               for index, module in enumerate(modules)))
        return PathPlan(arch, tuple(backbone), tuple(extras), heads[0], heads[1])

    def _pyramid_path(self, arch: ArchSpec, backbone: tuple[PathStep | None, ...]) -> PathPlan:
        width = arch.pyramid.scaled_width(self.width_multiplier)
        laterals = tuple(None if info.channels == width else
                         self._step(f"pyramid.lateral.{j}", self.pyramid.lateral[j], f"in{info.channels}", None)
                         for j, info in enumerate(arch.pyramid_inputs(self.width_multiplier)))
        pyramid_extras = tuple(PathStep(f"pyramid.extra.{j}", module, None)
                               for j, module in enumerate(self.pyramid.extra))
        cells = tuple(tuple(PathStep(f"pyramid.cells.{r}.{i}", module, None) for i, module in enumerate(row))
                      for r, row in enumerate(self.pyramid.cells))
        shared = {kind: tuple(PathStep(f"{kind}.{index}", module, None)
                              for index, module in enumerate(getattr(self, kind)))
                  for kind in ("extras", "box_heads", "class_heads")}
        return PathPlan(arch, backbone, shared["extras"], shared["box_heads"], shared["class_heads"], laterals,
                        pyramid_extras, cells)

    def _step(self, child: str, container: nn.ModuleDict, member: str, config: LayerConfig | None) -> PathStep:
        module = container[self._group(member, config)]
        return PathStep(child, module, member if isinstance(module, SlicedChoice) else None)

    def set_active(self, arch: ArchSpec | str | None) -> None:
        """Make `arch` the path `forward` runs (None: no path)."""
        self._path = None if arch is None else self.path(arch)

    @contextlib.contextmanager
    def activated(self, arch: ArchSpec | str) -> Iterator[Supernet]:
        """`with supernet.activated(arch): ...` runs `arch`, then restores the previous path."""
        previous = self._path
        self.set_active(arch)
        try:
            yield self
        finally:
            self._path = previous

    @property
    def arch(self) -> ArchSpec | None:
        """The active path's architecture."""
        return None if self._path is None else self._path.arch

    def sample_path(self, step: int, seed: int = 0) -> ArchSpec:
        """`sample_path(self.space, step, seed)`: the path of training step `step`."""
        return sample_path(self.space, step, seed)

    # ---- the detector interface (what the loss, trainer and evaluator use) --------------------
    @property
    def num_classes(self) -> int:
        return self.head_spec.num_classes

    @property
    def class_slots(self) -> int:
        return self.head_spec.class_slots

    def anchors(self, resolution: int | Sequence[int]) -> np.ndarray:
        """Anchors of every member (they share strides, hence feature-map sizes)."""
        from tdbnas.detection.anchors import detector_anchors

        return detector_anchors(self.reference, as_hw(resolution), self.head_spec, self.width_multiplier)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        path = self._path
        if path is None:
            raise RuntimeError("the supernet has no active path: call set_active(arch) or use activated(arch)")
        x, maps = images, [None] * len(self._taps)
        for index, step in enumerate(path.backbone):
            if step is not None:
                x = _run(step, x)
            slot = self._taps.get(index)
            if slot is not None:
                maps[slot] = x
        spec = path.arch.pyramid
        if spec is not None:
            levels = pyramid_forward(spec, maps,
                                     lambda j, y: y if path.laterals[j] is None else _run(path.laterals[j], y),
                                     lambda j, y: _run(path.pyramid_extras[j], y),
                                     lambda r, i, y: _run(path.cells[r][i], y))
            maps = [levels[int(name[1:]) - spec.min_level] for name in self.head_spec.from_features]
        for step in path.extras:
            maps.append(_run(step, maps[-1]))
        n = images.shape[0]
        boxes = [_flatten(_run(step, m), n, 4) for step, m in zip(path.box_heads, maps)]
        classes = [_flatten(_run(step, m), n, self.class_slots) for step, m in zip(path.class_heads, maps)]
        return torch.cat(boxes, dim=1), torch.cat(classes, dim=1)

    # ---- extraction ----------------------------------------------------------------------------
    def child_state_dict(self, arch: ArchSpec | str | None = None) -> dict[str, torch.Tensor]:
        """The state dict of `SSDLite(arch)` (default: the active path), copied out of the supernet."""
        path = self._require_path(arch)
        state: dict[str, torch.Tensor] = {}
        for step in path.steps():
            tensors = step.module.member_tensors(step.member) if step.member is not None else step.module.state_dict()
            for name, tensor in tensors.items():
                state[f"{step.child}.{name}"] = tensor.detach().clone()
        return state

    def extract(self, arch: ArchSpec | str | None = None) -> SSDLite:
        """A stand-alone `SSDLite(arch)` with the path's weights and BN statistics."""
        from tdbnas.detection.model import SSDLite

        path = self._require_path(arch)
        child = SSDLite(path.arch, num_classes=self.num_classes, head=self.head_spec,
                        width_multiplier=self.width_multiplier, backbone_norm=self._backbone_norm,
                        head_norm=self._head_norm)
        child.load_state_dict(self.child_state_dict(path.arch))
        device = self.space_fingerprint.device
        return child.to(device).train(self.training)

    def path_parameters(self, arch: ArchSpec | str | None = None) -> list[nn.Parameter]:
        """The parameters a path trains (for shared weights: the whole shared tensors)."""
        path = self._require_path(arch)
        unique: dict[int, nn.Parameter] = {}
        for step in path.steps():
            for param in step.module.parameters():
                unique[id(param)] = param
        return list(unique.values())

    def active_batchnorms(self) -> list[nn.modules.batchnorm._BatchNorm]:
        """The batch norms the active path runs (for shared weights: the members' templates,
        which read and update slices of the shared statistics while they run)."""
        path = self._require_path(None)
        norms = []
        for step in path.steps():
            module = step.module.template(step.member) if step.member is not None else step.module
            norms += [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        return norms

    def set_bn_momentum(self, momentum: float | None) -> None:
        """Set every batch norm's momentum, the shared-weight templates' included."""
        for module in self._all_modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.momentum = momentum

    def _all_modules(self) -> Iterator[nn.Module]:
        for module in self.modules():
            yield module
            if isinstance(module, SlicedChoice):
                for key in module.member_keys:
                    yield from module.template(key).modules()

    def _require_path(self, arch: ArchSpec | str | None) -> PathPlan:
        if arch is not None:
            return self.path(arch)
        if self._path is None:
            raise RuntimeError("no architecture given and the supernet has no active path")
        return self._path

    # ---- loading ---------------------------------------------------------------------------------
    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs) -> None:
        key = prefix + FINGERPRINT
        theirs = state_dict.get(key)
        if theirs is not None and not torch.equal(theirs.cpu(), self.space_fingerprint.cpu()):
            raise ValueError(f"these weights belong to a supernet over another search space than {self.space.name!r} "
                             "(space fingerprints differ: a different space, or its description changed since "
                             "training); load them with the space they were trained on")
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)


def supernet_size(space: BlockSpace | PyramidSearchSpace, *, num_classes: int = 90, head: SSDLiteHead | None = None,
                  width_multiplier: float = 1.0, weight_sharing: str = "none") -> dict[str, Any]:
    """Parameter counts and memory of a supernet, built on the `meta` device (no memory used).

    `train_bytes` counts fp32 weights plus SGD momentum (every weight is on some path, so every
    weight eventually has a momentum buffer): what training holds besides one path's gradients
    and activations, and about the size of a checkpoint.
    """
    with torch.device("meta"):
        net = Supernet(space, num_classes=num_classes, head=head, width_multiplier=width_multiplier,
                       weight_sharing=weight_sharing)
    parameters = sum(p.numel() for p in net.parameters())
    backbone = sum(p.numel() for p in net.backbone.parameters())
    buffers = sum(b.numel() * b.element_size() for b in net.buffers())
    return {"space": space.name, "weight_sharing": weight_sharing, "parameters": parameters,
            "backbone_parameters": backbone, "head_parameters": parameters - backbone,
            "weight_bytes": parameters * 4, "buffer_bytes": buffers, "train_bytes": parameters * 8 + buffers,
            "modules": sum(len(m) for m in net.modules() if isinstance(m, nn.ModuleDict))}


def _block_positions(space: BlockSpace) -> list[int]:  # the backbone's BlockSpace
    """Flat index of the first layer of each block."""
    starts, total = [], 0
    for block in space.blocks:
        starts.append(total)
        total += block.layers
    return starts


def _safe(name: str) -> str:
    return name.replace(".", "p")


def _layer_builder(config: LayerConfig, norm: NormSettings) -> Callable[[], nn.Module]:
    return lambda: _initialised(build_layer(config, norm))


def _initialised(module: nn.Module) -> nn.Module:
    """The TF initialisation the stand-alone network gets (`Backbone`, `SSDLite` call it too)."""
    init_weights(module)
    return module


def _predictor(channels: int, outputs: int, kernel: int, norm: NormSettings, class_bias: bool = False) -> nn.Module:
    from tdbnas.detection.model import CLASS_BIAS_INIT, Predictor

    predictor = _initialised(Predictor(channels, outputs, kernel, norm))
    if class_bias:
        nn.init.constant_(predictor.pointwise.bias, CLASS_BIAS_INIT)
    return predictor


def _run(step: PathStep, x: torch.Tensor) -> torch.Tensor:
    return step.module(x) if step.member is None else step.module(x, step.member)


def _flatten(prediction: torch.Tensor, batch: int, width: int) -> torch.Tensor:
    """[N, anchors * width, H, W] -> [N, H * W * anchors, width], as `SSDLite` flattens (NHWC order)."""
    return prediction.permute(0, 2, 3, 1).reshape(batch, -1, width)
