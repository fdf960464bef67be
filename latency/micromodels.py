"""Micro-models: one full-integer int8 `.tflite` per latency unit, built with export's lowering.

A unit (backbone layer, SSDLite extra layer, predictor, pyramid part; see
`tdbnas.latency.units`) becomes a Keras model whose only content is that unit, lowered by the
same functions the full export uses (`tdbnas.export.keras_layers.apply_layer / apply_extra /
apply_predictor`, `tdbnas.export.keras_pyramid`) and converted by the same converter settings
(`tdbnas.export.tflite.convert`, int8 in and out, as every tensor inside an int8 detector is),
so a table entry measures exactly what will ship. A merging cell's micro-model has one input per
map it merges or absorbs.

Models are cached on disk by key: the file name hashes the unit key together with the lowering
version and the TensorFlow version, so a changed lowering or converter never reuses a stale file.
Files are written atomically; a killed build leaves no truncated model.

Where the time goes (`benchmarks/latency_profile_space.py`): one conversion costs ~0.25 s on
this CPU. Batching several units into one multi-signature conversion was measured 1.33x slower
than converting them one by one (`benchmarks/results/export_convert.md`), so units are converted
one at a time; `workers > 1` converts in parallel processes, each paying TensorFlow's start-up
once.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from tdbnas.latency.units import DEFAULT_HEAD, HeadExtra, HeadPredictor, Unit
from tdbnas.spaces import ArchSpec, LayerConfig, SSDLiteHead, as_hw
from tdbnas.spaces.pyramid_layout import PyramidCell, PyramidDownConv, PyramidLateral, PyramidResample

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

#: Bump when the lowering of a unit changes in a way that changes its latency.
LOWERING_VERSION = 2  # 2: pyramid upsampling without RESIZE_NEAREST_NEIGHBOR
#: Calibration inputs per micro-model: its timing does not depend on the quantization scales.
CALIBRATION_SAMPLES = 4


@dataclass(frozen=True)
class MicroModel:
    key: str
    path: Path
    signature: str | None = None


def unit_input_shape(unit: Unit) -> tuple[int, int, int, int]:
    """NHWC input shape (batch 1) of a unit's micro-model (of each input, for a merging cell)."""
    return (1, unit.in_hw[0], unit.in_hw[1], unit.in_channels)


def unit_input_shapes(unit: Unit) -> list[tuple[int, int, int, int]]:
    """One shape per input: a merging cell takes its two merged maps and the absorbed ones."""
    return [unit_input_shape(unit)] * (unit.num_inputs if isinstance(unit, PyramidCell) else 1)


def _representative(unit: Unit, count: int):
    from tdbnas.export.tflite import random_representative_data

    shapes = unit_input_shapes(unit)
    if len(shapes) == 1:
        return random_representative_data(shapes[0], count)
    per_input = [random_representative_data(shape, count, seed=index) for index, shape in enumerate(shapes)]
    return [list(sample) for sample in zip(*per_input)]


def build_unit_keras(unit: Unit):
    """A Keras model holding exactly one unit, lowered as in the full detector."""
    import keras

    from tdbnas.export.keras_layers import apply_extra, apply_layer, apply_predictor
    from tdbnas.export.keras_pyramid import apply_cell, apply_lateral, apply_pyramid_conv, apply_resample

    if isinstance(unit, PyramidCell):
        cell_inputs = [keras.Input(batch_shape=shape, name=f"x{index}")
                       for index, shape in enumerate(unit_input_shapes(unit))]
        gate = None if unit.op == "sum" else 0  # both inputs have the cell's shape: which one gates costs the same
        outputs = apply_cell(cell_inputs, unit.op, gate, unit.separable, name="unit")
        return keras.Model(cell_inputs, outputs, name="micromodel")
    inputs = keras.Input(batch_shape=unit_input_shape(unit), name="x")
    if isinstance(unit, PyramidLateral):
        outputs = apply_lateral(inputs, unit.out_channels, name="unit")
    elif isinstance(unit, PyramidResample):
        outputs = apply_resample(inputs, unit.levels, unit.target_hw, name="unit")
    elif isinstance(unit, PyramidDownConv):
        outputs = apply_pyramid_conv(inputs, 2, unit.separable, name="unit")
    elif isinstance(unit, LayerConfig):
        outputs = apply_layer(inputs, unit, name="unit")
    elif isinstance(unit, HeadExtra):
        outputs = apply_extra(inputs, unit.mid, unit.out, name="unit")
    elif isinstance(unit, HeadPredictor):
        outputs = apply_predictor(inputs, unit.out_channels, unit.kernel, name="unit")
    else:
        raise TypeError(f"no micro-model for a {type(unit).__name__}")
    return keras.Model(inputs, outputs, name="micromodel")


def _fingerprint(key: str) -> str:
    import tensorflow as tf

    text = f"{key}|lowering {LOWERING_VERSION}|tf {tf.__version__}"
    return hashlib.sha1(text.encode()).hexdigest()[:20]


def cached_path(unit: Unit, cache_dir: str | Path) -> Path:
    return Path(cache_dir) / f"{_fingerprint(unit.key)}.tflite"


def _build_one(unit: Unit, path: Path) -> Path:
    """Build, convert and atomically save one unit's micro-model (runs in a worker process too)."""
    from tdbnas.export.tflite import convert, save_tflite

    model = build_unit_keras(unit)
    data = convert(model, precision="int8", representative_data=_representative(unit, CALIBRATION_SAMPLES),
                   num_samples=CALIBRATION_SAMPLES)
    return save_tflite(path, data)


def build_micromodels(units: Iterable[Unit], cache_dir: str | Path, *, workers: int = 1,
                      compile_edgetpu: bool = False) -> dict[str, MicroModel]:
    """The micro-model of every unit, building only those not in the cache.

    With `compile_edgetpu`, each is also compiled by `edgetpu_compiler` (an Edge TPU runs only
    compiled models; an uncompiled int8 model would silently run on the host CPU).
    """
    cache = Path(cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    units = list({unit.key: unit for unit in units}.values())
    paths = {unit.key: cached_path(unit, cache) for unit in units}
    todo = [unit for unit in units if not paths[unit.key].exists()]
    if workers > 1 and len(todo) > 1:
        with ProcessPoolExecutor(max_workers=min(workers, len(todo))) as pool:
            list(pool.map(_build_one, todo, [paths[u.key] for u in todo]))
    else:
        for unit in todo:
            _build_one(unit, paths[unit.key])
    if compile_edgetpu:
        paths = {key: edgetpu_compiled(path) for key, path in paths.items()}
    return {key: MicroModel(key, path) for key, path in paths.items()}


def edgetpu_compiled(path: Path) -> Path:
    """The `edgetpu_compiler` output of a model, compiled once and cached beside it."""
    from tdbnas.export.edgetpu import compile_model

    out_dir = path.parent / "edgetpu"
    compiled = out_dir / f"{path.stem}_edgetpu.tflite"
    if not compiled.exists():
        report = compile_model(path, out_dir)
        if report.compiled is None:
            raise RuntimeError(f"edgetpu_compiler wrote no model for {path}:\n{report.log[-500:]}")
    return compiled


def build_detector_tflite(arch: ArchSpec, resolution: int | Sequence[int], path: str | Path, *,
                          head: SSDLiteHead = DEFAULT_HEAD, width_multiplier: float = 1.0,
                          compile_edgetpu: bool = False) -> Path:
    """A whole int8 SSDLite detector (raw outputs, no post-processing op) for end-to-end timing.

    Random weights: latency does not depend on them. The same lowering and converter settings
    as the units, so the sum of unit entries and this model measure the same graph.
    """
    from tdbnas.export.keras_detector import build_detector
    from tdbnas.export.tflite import convert, random_representative_data, save_tflite

    hw = as_hw(resolution)
    model = build_detector(arch, hw, num_classes=head.num_classes, head=head, width_multiplier=width_multiplier)
    data = convert(model, precision="int8", representative_data=random_representative_data(
        (1, hw[0], hw[1], 3), CALIBRATION_SAMPLES), num_samples=CALIBRATION_SAMPLES)
    if not compile_edgetpu:
        return save_tflite(path, data)
    # The caller times `path`: put the compiled model there (built beside it first).
    plain = save_tflite(Path(path).with_suffix(".int8.tflite"), data)
    Path(edgetpu_compiled(plain)).replace(path)
    return Path(path)
