"""The export pipeline: a searched architecture and its trained weights -> deployable files.

    torch SSDLite (weights) -> Keras (weights transferred, outputs checked against torch)
      -> .tflite (full int8 from real training images, or float; the detection post-processing
         op or raw outputs) + metadata inside and beside it
      -> reports: ops that are not int8, Edge TPU compatibility / compiler log
      -> optional ONNX (+ ORT check, + static int8), optional verification on a val split.

Every file is written atomically; the resolved settings and all reports are saved beside the
model as `<name>.json`.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tdbnas.export.detection_tflite import PostprocessOp
from tdbnas.spaces.atomic import write_json_atomic


@dataclass
class ExportSettings:
    arch: str
    weights: str
    out: str
    data: str | None = None
    calibration_split: str = "train"
    calibration_images: int = 100
    verify_split: str = "val"
    resolution: int | None = None
    num_classes: int | None = None
    width_multiplier: float = 1.0
    head: dict[str, Any] | None = None  # SSDLite head settings (default: the training run's config.json)
    resize: str | None = None          # stretch | letterbox (default: the training run's, else stretch)
    precision: str = "int8"            # int8 | float32
    input_type: str = "int8"           # int8 | uint8 | float32
    output_type: str = "float32"       # raw outputs only: int8 | float32
    postprocess: bool = True
    postprocess_op: PostprocessOp = field(default_factory=PostprocessOp)
    onnx: bool = False
    onnx_int8: bool = False
    verify: bool = False
    verify_images: int | None = None
    edgetpu_compile: bool = True       # run edgetpu_compiler when it is installed
    progress: bool = True


def _run_config(weights: Path) -> dict[str, Any]:
    path = weights.parent / "config.json"
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except json.JSONDecodeError:
        return {}


def _resolve(settings: ExportSettings) -> ExportSettings:
    """Fill resolution, data and class count from the training run's config.json when not given."""
    run = _run_config(Path(settings.weights))
    if settings.resolution is None:
        settings.resolution = int(run.get("resolution", 320))
    if settings.data is None and run.get("data"):
        settings.data = run["data"]
    if settings.width_multiplier == 1.0 and run.get("width_multiplier"):
        settings.width_multiplier = float(run["width_multiplier"])
    if settings.head is None:
        settings.head = dict(run.get("head") or {})
    if settings.resize is None:
        settings.resize = run.get("resize", "stretch")
    return settings


def preprocessing_note(resize: str, hw: tuple[int, int]) -> dict[str, Any]:
    """How an app turns a photo of any size into this model's input, and boxes back (metadata)."""
    from tdbnas.detection.data.transforms import PAD_VALUE

    if resize == "letterbox":
        return {"mode": "letterbox", "pad_value": PAD_VALUE,
                "how": (f"scale the image by s = min({hw[0]} / height, {hw[1]} / width), round its size to whole "
                        f"pixels (h', w'), resize bilinearly, paste it at (top, left) = (({hw[0]} - h') // 2, "
                        f"({hw[1]} - w') // 2) on a {hw[1]}x{hw[0]} canvas of pixel value {PAD_VALUE}"),
                "boxes": (f"a normalised output box maps to the image as y_image = (y * {hw[0]} - top) / h', "
                          f"x_image = (x * {hw[1]} - left) / w' (then times the image height / width)")}
    return {"mode": "stretch", "how": f"resize the whole image bilinearly to {hw[1]}x{hw[0]} (aspect ratio not kept)",
            "boxes": "normalised output boxes are normalised image coordinates: times the image height / width"}


def _normalised_images(dataset, count: int) -> np.ndarray:
    """The first `count` images of a dataset as the detector sees them: float32 NHWC."""
    return np.stack([dataset[i][0].permute(1, 2, 0).numpy() for i in range(min(count, len(dataset)))])


def export_detector(settings: ExportSettings) -> dict[str, Any]:
    """Run the pipeline; returns the report (also written as `<out>.json`)."""
    import torch

    from tdbnas.detection.data import INPUT_OFFSET, INPUT_SCALE, build_dataset
    from tdbnas.detection.model import SSDLite
    from tdbnas.detection.train import TrainConfig, head_settings, load_weights
    from tdbnas.export.detection_tflite import convert_detector, postprocess_settings_json
    from tdbnas.export.edgetpu import compatibility, compile_model, compiler_available
    from tdbnas.export.keras_detector import build_detector
    from tdbnas.export.tflite import non_int8_ops, save_tflite
    from tdbnas.export.weights import transfer_weights
    from tdbnas.spaces import resolve_arch

    settings = _resolve(settings)
    out = Path(settings.out)
    if out.suffix != ".tflite":
        raise ValueError(f"--out must name a .tflite file, got {out}")
    arch = resolve_arch(settings.arch)
    state = load_weights(settings.weights)
    needs_data = settings.precision == "int8" or settings.verify
    if needs_data and not settings.data:
        raise ValueError("int8 calibration and verification need images: pass --data DIR (a COCO-format dataset, "
                         "e.g. the one the model was trained on)")
    calibration_set = build_dataset(settings.data, settings.calibration_split, size=settings.resolution,
                                    resize=settings.resize) if settings.data else None
    labels = calibration_set.class_names if calibration_set else None
    num_classes = settings.num_classes or (calibration_set.num_classes if calibration_set else None)
    if num_classes is None:
        raise ValueError("the class count is unknown: pass --num-classes N or --data DIR")
    head = head_settings(TrainConfig(head=settings.head), num_classes)
    model = SSDLite(arch, num_classes=num_classes, head=head, width_multiplier=settings.width_multiplier).eval()
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise ValueError(f"{settings.weights} does not fit {arch.encode()} with {num_classes} classes: "
                         f"{str(exc).splitlines()[0]}") from None
    report: dict[str, Any] = {"settings": {**asdict(settings), "postprocess_op": asdict(settings.postprocess_op)}}
    hw = (settings.resolution, settings.resolution)

    started = time.perf_counter()
    keras_model = build_detector(arch, hw, num_classes=num_classes, head=model.head_spec,
                                 width_multiplier=settings.width_multiplier)
    transfer_weights(model, keras_model)
    probe = _normalised_images(calibration_set, 2) if calibration_set else \
        np.random.default_rng(0).uniform(-1, 1, (2, *hw, 3)).astype(np.float32)
    with torch.no_grad():
        expected = [t.numpy() for t in model(torch.from_numpy(probe).permute(0, 3, 1, 2).contiguous())]
    outputs = [keras_model(image[None], training=False) for image in probe]  # the Keras model has batch 1
    actual = [np.concatenate([np.asarray(o[k]) for o in outputs]) for k in range(2)]
    report["keras_vs_torch_max_abs"] = {name: float(np.abs(a - e).max())
                                        for name, a, e in zip(("box_deltas", "class_logits"), actual, expected)}
    representative = _normalised_images(calibration_set, settings.calibration_images) \
        if settings.precision == "int8" else None
    postprocess = settings.postprocess_op if settings.postprocess else None
    anchors = model.anchors(hw)
    metadata = {"format": "tdbnas.detector", "version": 1, "arch": arch.encode(), "resolution": list(hw),
                "num_classes": num_classes, "labels": labels, "width_multiplier": settings.width_multiplier,
                "input": {"layout": "NHWC", "channels": "RGB", "normalisation": {"scale": INPUT_SCALE,
                                                                                "offset": INPUT_OFFSET},
                          "meaning": "float input = pixel * scale + offset (pixels 0..255)",
                          "type": settings.input_type if settings.precision == "int8" else "float32",
                          "resize": preprocessing_note(settings.resize, hw)},
                "anchors": {"generator": "ssd_anchor_generator", "count": int(len(anchors)),
                            "head": {k: v for k, v in asdict(model.head_spec).items()}},
                "box_coder": {"order": "yxhw", "scales": [10.0, 10.0, 5.0, 5.0]},
                "postprocess": postprocess_settings_json(postprocess),
                "outputs": ("boxes [1,N,4] ymin,xmin,ymax,xmax normalised; classes [1,N] 0-based; scores [1,N]; "
                            "count [1]") if postprocess else "box_deltas [1,A,4] (yxhw codes); class_logits [1,A,C+1]"}
    data = convert_detector(keras_model, anchors, num_classes=num_classes, postprocess=postprocess,
                            precision=settings.precision, representative_data=representative,
                            num_samples=settings.calibration_images, input_type=settings.input_type
                            if settings.precision == "int8" else "float32",
                            output_type=settings.output_type if settings.precision == "int8" else "float32",
                            metadata=metadata)
    save_tflite(out, data)
    report["convert_seconds"] = round(time.perf_counter() - started, 2)
    report["tflite"] = {"path": str(out), "bytes": len(data)}
    non_int8 = non_int8_ops(data)
    report["non_int8_ops"] = [str(op) for op in non_int8]
    report["non_int8_outside_postprocess"] = [str(op) for op in non_int8 if not _feeds_postprocess(op, non_int8)]
    edge = compatibility(data)
    report["edgetpu"] = {"summary": edge.summary(), "fully_mapped": edge.fully_mapped,
                         "first_cpu_op": None if edge.first_cpu_op is None else str(edge.first_cpu_op)}
    if settings.precision == "int8" and settings.edgetpu_compile:
        if compiler_available():
            compiled = compile_model(out)
            report["edgetpu"]["compiler"] = {k: v for k, v in vars(compiled).items() if k != "log"}
            report["edgetpu"]["compiler"]["compiled"] = str(compiled.compiled)
        else:
            report["edgetpu"]["compiler"] = "skipped: edgetpu_compiler is not on PATH (x86-64 Linux only; " \
                                            "sudo apt-get install edgetpu-compiler)"
    if settings.onnx:
        report["onnx"] = _export_onnx(model, hw, out, calibration_set, settings)
    if settings.verify:
        verify_set = build_dataset(settings.data, settings.verify_split, size=settings.resolution,
                                   resize=settings.resize)
        from tdbnas.export.verify import verify

        report["verify"] = {"split": settings.verify_split,
                            **verify(out, model, verify_set, max_images=settings.verify_images,
                                     progress=settings.progress)}
    report["metadata"] = metadata
    write_json_atomic(out.with_suffix(".json"), report)
    return report


def _feeds_postprocess(op, non_int8) -> bool:
    """The post-processing op and the DEQUANTIZEs right before it run on the CPU by design."""
    if op.op == "CUSTOM:TFLite_Detection_PostProcess":
        return True
    return op.op == "DEQUANTIZE" and any(o.op == "CUSTOM:TFLite_Detection_PostProcess" for o in non_int8)


def _export_onnx(model, hw, out: Path, calibration_set, settings: ExportSettings) -> dict[str, Any]:
    from tdbnas.export.onnx_export import compare_with_torch, export_onnx, quantize_onnx_static

    path = export_onnx(model, hw, out.with_suffix(".onnx"))
    images = _normalised_images(calibration_set, 4).transpose(0, 3, 1, 2) if calibration_set else \
        np.random.default_rng(0).uniform(-1, 1, (2, 3, *hw)).astype(np.float32)
    result: dict[str, Any] = {"path": str(path), "vs_torch": compare_with_torch(path, model, images)}
    if settings.onnx_int8:
        calibration = _normalised_images(calibration_set, settings.calibration_images).transpose(0, 3, 1, 2) \
            if calibration_set else images
        int8 = quantize_onnx_static(path, out.with_name(out.stem + ".int8.onnx"), calibration)
        result["int8"] = {"path": str(int8), "vs_torch": compare_with_torch(int8, model, images)}
    return result
