"""Channel arithmetic shared by every consumer of a spec (costs, torch, Keras, latency).

The rounding rule is the one of the TF Object Detection API MobileDet code
(`_scale_filters` in `ssd_mobiledet_feature_extractor.py`): round *half up* to a
multiple of 8, never below 8. Python's `round` rounds half to even, so it is not used.
"""

from __future__ import annotations

CHANNEL_BASE = 8


def round_channels(channels: float, multiplier: float = 1.0, base: int = CHANNEL_BASE) -> int:
    """Scale `channels` by `multiplier`, round half up to a multiple of `base`, minimum `base`.

    >>> round_channels(16 * 0.25)          # the SE width of MobileDet-CPU's first layer
    8
    >>> round_channels(12), round_channels(20), round_channels(120, 0.75)
    (16, 24, 88)
    """
    # int() of the product first, as TF does (`int(filters) * multiplier`).
    rounded = int(int(channels) * multiplier / base + 0.5) * base
    return max(rounded, base)


def same_output_size(size: int, stride: int) -> int:
    """Output length of a TF 'SAME' convolution or pooling: ceil(size / stride)."""
    return -(-size // stride)


def as_hw(resolution: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    """Normalise a resolution given as `320` or `(320, 640)` to an (H, W) tuple of ints."""
    if isinstance(resolution, bool):
        raise ValueError(f"resolution must be an int or (height, width), got {resolution!r}")
    if isinstance(resolution, int):
        hw = (resolution, resolution)
    else:
        try:
            hw = tuple(int(v) for v in resolution)
        except (TypeError, ValueError):
            raise ValueError(f"resolution must be an int or (height, width), got {resolution!r}") from None
        if len(hw) != 2:
            raise ValueError(f"resolution must be an int or (height, width), got {resolution!r}")
    if min(hw) < 1:
        raise ValueError(f"resolution must be positive, got {resolution!r}")
    return hw  # type: ignore[return-value]
