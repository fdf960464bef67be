"""Choices whose weights are slices of one shared tensor: the optional, smaller supernet.

Per-choice weights (DetNAS/SPOS, the default) give every (op, in-width, out-width) of a layer
position its own module. For the MobileDets `tdb` space that is 420 M backbone parameters
(`tdbnas supernet size --space tdb`; fused IBNs with expansion 8 at 144-384 channels
dominate), so `Supernet(weight_sharing="in" | "width")` lets the choices of one op at one
position share weights instead, as channel-elastic supernets do (OFA, Cai et al. 2020;
BigNAS, Yu et al. 2020): a member's tensors are the leading slices `t[:c0, :c1, ...]` of one
tensor per name whose shape is the elementwise maximum over the members.

A member is still the module `build_layer` makes for the stand-alone network, built on the
`meta` device as a shape-only template and run with `torch.func.functional_call` on the
sliced views, so its output equals the extracted stand-alone layer's. The templates are not
registered submodules: `.to()`, `state_dict()` and the optimizer see only the shared tensors.
Batch-norm statistics are sliced too; running statistics updated in train mode write through
the views into the shared buffers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

import torch
from torch import nn
from torch.func import functional_call


def leading_slice(tensor: torch.Tensor, shape: torch.Size | tuple[int, ...]) -> torch.Tensor:
    """The view `tensor[:shape[0], :shape[1], ...]` (a 0-d tensor is returned as is)."""
    if tensor.dim() == 0:
        return tensor
    return tensor[tuple(slice(0, size) for size in shape)]


class SlicedChoice(nn.Module):
    """Several choices of one layer position whose weights are slices of shared tensors.

    `builders` maps a member key to a function building (and initialising) that member's
    module. Members must have the same parameter and buffer names (same op kind); shapes may
    differ. Shared tensors are initialised with the members' own initialisation, smallest
    member first, so each slice starts from its largest user's initial values.
    """

    def __init__(self, builders: Mapping[str, Callable[[], nn.Module]]):
        super().__init__()
        if not builders:
            raise ValueError("a SlicedChoice needs at least one member")
        templates: dict[str, nn.Module] = {}
        for key, build in builders.items():
            with torch.device("meta"):
                templates[key] = build()
        first_key = next(iter(templates))
        names = _tensor_names(templates[first_key])
        for key, template in templates.items():
            if _tensor_names(template) != names:
                raise ValueError(f"members {first_key!r} and {key!r} have different parameters; only choices "
                                 "of one op kind can share weights")
        # Plain attributes, not submodules: shape templates on `meta`, never moved or saved.
        object.__setattr__(self, "_templates", templates)
        self.member_keys: tuple[str, ...] = tuple(templates)
        parameter_names = {name for name, _ in templates[first_key].named_parameters()}
        union: dict[str, list[int]] = {}
        dtypes: dict[str, torch.dtype] = {}
        for template in templates.values():
            for name, tensor in _tensors(template):
                shape = union.setdefault(name, list(tensor.shape))
                union[name] = [max(a, b) for a, b in zip(shape, tensor.shape)]
                dtypes[name] = tensor.dtype
        for name, shape in union.items():
            owner, leaf = self._container(name)
            tensor = torch.zeros(shape, dtype=dtypes[name])
            if name in parameter_names:
                owner.register_parameter(leaf, nn.Parameter(tensor))
            else:
                owner.register_buffer(leaf, tensor)
        self._initialise(builders, templates)

    # ---- construction ----------------------------------------------------------------------
    def _container(self, name: str) -> tuple[nn.Module, str]:
        """The (created on demand) empty submodule that holds tensor `name`, mirroring the
        member's module tree so state-dict names read like the stand-alone layer's."""
        *path, leaf = name.split(".")
        owner: nn.Module = self
        for part in path:
            child = owner._modules.get(part)
            if child is None:
                child = nn.Module()
                owner.add_module(part, child)
            owner = child
        return owner, leaf

    @torch.no_grad()
    def _initialise(self, builders: Mapping[str, Callable[[], nn.Module]], templates: Mapping[str, nn.Module]) -> None:
        shared = self.shared_tensors()
        by_size = sorted(templates, key=lambda key: sum(t.numel() for _, t in _tensors(templates[key])))
        for key in by_size:
            member = builders[key]()
            for name, tensor in _tensors(member):
                leading_slice(shared[name], tensor.shape).copy_(tensor)

    # ---- access ----------------------------------------------------------------------------
    def shared_tensors(self) -> dict[str, torch.Tensor]:
        """Every shared parameter and buffer by its member-relative name (`expand.conv.weight`)."""
        return dict(_tensors(self))

    def template(self, key: str) -> nn.Module:
        """The shape-only (meta) module of member `key`; its batch norms are the ones that run."""
        try:
            return self._templates[key]  # type: ignore[attr-defined]
        except KeyError:
            raise KeyError(f"no member {key!r}; members: {list(self.member_keys)}") from None

    def member_tensors(self, key: str) -> dict[str, torch.Tensor]:
        """Views of the shared tensors with member `key`'s shapes (its state dict, by reference)."""
        shared = self.shared_tensors()
        return {name: leading_slice(shared[name], tensor.shape) for name, tensor in _tensors(self.template(key))}

    def forward(self, x: torch.Tensor, key: str) -> torch.Tensor:
        template = self.template(key)
        template.train(self.training)  # not a submodule: train()/eval() do not reach it
        return functional_call(template, self.member_tensors(key), (x,))


def _tensors(module: nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    yield from module.named_parameters()
    yield from module.named_buffers()


def _tensor_names(module: nn.Module) -> list[str]:
    return sorted(name for name, _ in _tensors(module))
