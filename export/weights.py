"""Copy a torch model's weights into its Keras lowering, by name.

Names pair because the lowering names every Keras layer after its torch module path with
`.` -> `_` (`backbone.blocks.3.1.expand.conv.weight` -> layer `backbone_blocks_3_1_expand_conv`,
variable `kernel`). Pairing by name, never by order, means a lowering that drifts from the
torch model fails here, listing what did not pair, instead of exporting a silently wrong
network. Nothing is copied unless everything pairs.

Layouts: conv OIHW -> HWIO; depthwise (C, 1, kh, kw) -> HWCM (kh, kw, C, 1); batch norm
weight/bias/running_mean/running_var -> gamma/beta/moving_mean/moving_variance.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np

from tdbnas.export.keras_layers import keras_name

# torch parameter/buffer name -> Keras variable attribute, per Keras layer type.
_CONV_SLOTS = {"weight": "kernel", "bias": "bias"}
_BN_SLOTS = {"weight": "gamma", "bias": "beta", "running_mean": "moving_mean", "running_var": "moving_variance"}
# Torch bookkeeping with no counterpart in an inference graph.
_IGNORED_SUFFIXES = (".num_batches_tracked",)
_LISTED = 25  # names shown per side in an error; the count says how many more


@dataclass(frozen=True)
class TransferReport:
    copied: tuple[str, ...]  # torch names, in state-dict order
    ignored: tuple[str, ...]  # torch bookkeeping left out (num_batches_tracked)


class WeightTransferError(ValueError):
    """Some torch tensors or Keras variables did not pair; nothing was copied."""

    def __init__(self, message: str, unmatched_torch: list[str], unmatched_keras: list[str],
                 mismatched_shapes: list[str]):
        super().__init__(message)
        self.unmatched_torch, self.unmatched_keras = unmatched_torch, unmatched_keras
        self.mismatched_shapes = mismatched_shapes


def transfer_weights(source: Any, keras_model: keras.Model) -> TransferReport:
    """Copy every torch parameter and BN running statistic of `source` into `keras_model`.

    `source`: a torch module, a state dict, or a path to a `model.pt` / training checkpoint
    (loaded with `weights_only=True`). Raises `WeightTransferError` listing the unmatched names
    on both sides and any shape mismatch; on error the Keras model is left untouched.
    """
    state = _state_dict(source)
    layers = dict(_weighted_layers(keras_model))
    plan: list[tuple[Any, np.ndarray]] = []
    copied, ignored, unmatched_torch, mismatched = [], [], [], []
    filled: set[str] = set()
    for torch_name, value in state.items():
        if torch_name.endswith(_IGNORED_SUFFIXES):
            ignored.append(torch_name)
            continue
        module, _, slot = torch_name.rpartition(".")
        layer = layers.get(keras_name(module))
        attribute = _slots(layer).get(slot) if layer is not None else None
        variable = getattr(layer, attribute, None) if attribute else None
        if variable is None:
            unmatched_torch.append(torch_name)
            continue
        filled.add(variable.path)  # paired by name: a wrong shape is reported as such, not as unmatched
        array = _keras_layout(layer, slot, _to_numpy(value))
        if tuple(array.shape) != tuple(variable.shape):
            mismatched.append(f"{torch_name} {tuple(_to_numpy(value).shape)} -> {variable.path} "
                              f"expects {tuple(variable.shape)} (after layout change {tuple(array.shape)})")
            continue
        plan.append((variable, array))
        copied.append(torch_name)
    unmatched_keras = [v.path for _, layer in layers.items() for v in layer.weights if v.path not in filled]
    if unmatched_torch or unmatched_keras or mismatched:
        raise WeightTransferError(_message(unmatched_torch, unmatched_keras, mismatched),
                                  unmatched_torch, unmatched_keras, mismatched)
    for variable, array in plan:
        variable.assign(array.astype(variable.dtype, copy=False))
    return TransferReport(tuple(copied), tuple(ignored))


def _state_dict(source: Any) -> Mapping[str, Any]:
    if isinstance(source, (str, Path)):
        from tdbnas.detection.train import load_weights  # torch.load(weights_only=True)

        return load_weights(source)
    if callable(getattr(source, "state_dict", None)):
        return source.state_dict()
    if isinstance(source, Mapping):
        return source
    raise ValueError(f"transfer_weights takes a torch module, a state dict or a weights path, "
                     f"got {type(source).__name__}")


def _weighted_layers(model: keras.Model) -> Iterator[tuple[str, Any]]:
    """Every layer that owns variables, nested models included, by name."""
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _weighted_layers(layer)
        elif layer.weights:
            yield layer.name, layer


def _slots(layer: Any) -> dict[str, str]:
    if isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)):
        return _CONV_SLOTS
    if isinstance(layer, keras.layers.BatchNormalization):
        return _BN_SLOTS
    return {}


def _keras_layout(layer: Any, slot: str, array: np.ndarray) -> np.ndarray:
    if slot != "weight" or array.ndim != 4 or isinstance(layer, keras.layers.BatchNormalization):
        return array
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        return array.transpose(2, 3, 0, 1)  # (C, 1, kh, kw) -> (kh, kw, C, 1)
    return array.transpose(2, 3, 1, 0)  # (O, I, kh, kw) -> (kh, kw, I, O)


def _to_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor; no torch import needed
        value = value.detach().cpu().float().numpy()
    return np.asarray(value, dtype=np.float32)


def _message(unmatched_torch: list[str], unmatched_keras: list[str], mismatched: list[str]) -> str:
    def listing(title: str, names: list[str]) -> str:
        shown = "\n  ".join(names[:_LISTED])
        more = f"\n  ... and {len(names) - _LISTED} more" if len(names) > _LISTED else ""
        return f"{title} ({len(names)}):\n  {shown}{more}"

    parts = [listing(title, names) for title, names in (
        ("torch tensors with no Keras variable", unmatched_torch),
        ("Keras variables with no torch tensor", unmatched_keras),
        ("shape mismatches", mismatched)) if names]
    return ("torch and Keras models do not pair by name; nothing was copied. Were both built from the same "
            "architecture, head, class count and width multiplier?\n" + "\n".join(parts))


__all__ = ["TransferReport", "WeightTransferError", "transfer_weights"]
