"""An SSDLite detector as a deployable .tflite: the standard detection post-processing op, the
output order apps expect, and metadata inside the file.

`TFLite_Detection_PostProcess` is a TFLite custom op (built into every TFLite / LiteRT runtime)
with no TensorFlow kernel. The TF Object Detection API gets it into a model by wrapping a dummy
`tf.function` with `experimental_implements=<op signature>`; the MLIR converter replaces the call
by the op. The same here: raw box deltas, `sigmoid(class logits)` (background column first) and
the anchors (yc, xc, h, w) go in; boxes [1, N, 4] (ymin, xmin, ymax, xmax, normalised), classes
[1, N] (0-based, background excluded), scores [1, N] and the count [1] come out, in that order
and under the TF1 names (`TFLite_Detection_PostProcess`, `:1`, `:2`, `:3`) that existing
detection apps read. This route needs a SavedModel (the concrete-function route inlines the
dummy), whose signature orders outputs by name, so the subgraph's outputs are reordered in the
flatbuffer afterwards.

Found while verifying (ai-edge-litert 2.3): with `num_threads > 1` the interpreter's *regular*
NMS drops whole classes (a class's detections vanish, others fill the slots); one thread gives
exactly the torch post-processor's result (`tests/export/test_detection_export.py` checks it).
Verification therefore runs exported detectors single-threaded.

Metadata (labels, input normalisation, anchor settings, architecture string, post-processing
settings) travels inside the model as a named metadata buffer (`tdbnas`) readable with
`read_metadata`, and is also written beside it as JSON by the export pipeline.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tdbnas.export.tflite import _calibration, _quiet, _run, _settings

METADATA_NAME = "tdbnas"
POSTPROCESS_OUTPUTS = ("detection_boxes", "detection_classes", "detection_scores", "num_detections")
TF1_OUTPUT_NAMES = ("TFLite_Detection_PostProcess", "TFLite_Detection_PostProcess:1",
                    "TFLite_Detection_PostProcess:2", "TFLite_Detection_PostProcess:3")
RAW_OUTPUTS = ("box_deltas", "class_logits")


@dataclass(frozen=True)
class PostprocessOp:
    """Settings of `TFLite_Detection_PostProcess`. Defaults follow the MobileDets eval config
    (per-class NMS at IoU 0.6, 100 detections); mobile apps often take `max_detections=10` and
    `use_regular_nms=False` (fast NMS over each anchor's best class), the TF export defaults."""

    max_detections: int = 100
    max_classes_per_detection: int = 1
    detections_per_class: int = 100
    use_regular_nms: bool = True
    score_threshold: float = 1e-8
    iou_threshold: float = 0.6
    scales: tuple[float, float, float, float] = (10.0, 10.0, 5.0, 5.0)  # y, x, h, w: the box coder's

    def __post_init__(self) -> None:
        if self.max_detections < 1 or self.detections_per_class < 1 or self.max_classes_per_detection < 1:
            raise ValueError("max_detections, detections_per_class and max_classes_per_detection must be >= 1")
        if not 0 < self.iou_threshold <= 1:
            raise ValueError(f"iou_threshold must be in (0, 1], got {self.iou_threshold}")

    def signature(self, num_classes: int) -> str:
        """The `experimental_implements` string the converter turns into the op."""
        y, x, h, w = self.scales
        attrs = [("max_detections", "i", self.max_detections),
                 ("max_classes_per_detection", "i", self.max_classes_per_detection),
                 ("detections_per_class", "i", self.detections_per_class),
                 ("use_regular_nms", "b", "true" if self.use_regular_nms else "false"),
                 ("nms_score_threshold", "f", f"{self.score_threshold:.9g}"),
                 ("nms_iou_threshold", "f", f"{self.iou_threshold:.9g}"),
                 ("y_scale", "f", f"{y:f}"), ("x_scale", "f", f"{x:f}"), ("h_scale", "f", f"{h:f}"),
                 ("w_scale", "f", f"{w:f}"), ("num_classes", "i", num_classes)]
        return " ".join(['name: "TFLite_Detection_PostProcess"'] +
                        [f'attr {{ key: "{key}" value {{ {kind}: {value} }} }}' for key, kind, value in attrs])


def convert_detector(model: Any, anchors: np.ndarray, *, num_classes: int, postprocess: PostprocessOp | None,
                     precision: str = "int8", representative_data: Any = None, num_samples: int = 100,
                     input_type: str = "int8", output_type: str = "float32", allow_float_fallback: bool = False,
                     metadata: dict[str, Any] | None = None) -> bytes:
    """Keras SSDLite (raw outputs) -> .tflite bytes, with the post-processing op unless `postprocess`
    is None (then the raw `box_deltas`, `class_logits`; `output_type` applies to them only: the
    op's outputs are float by definition)."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    settings = _settings(precision, input_type, output_type if postprocess is None else "float32", num_samples)
    shape = tuple(model.inputs[0].shape)
    if None in shape:
        raise ValueError(f"export needs a fixed input shape (batch 1), got {shape}")
    spec = tf.TensorSpec(shape, tf.float32, name="images")
    samples = _calibration(representative_data, spec, num_samples, "the detector") if precision == "int8" else None
    traced = tf.function(lambda x: model(x, training=False), input_signature=[spec], autograph=False)
    frozen = convert_variables_to_constants_v2(traced.get_concrete_function(), lower_control_flow=False)
    anchors = np.asarray(anchors, dtype=np.float32)
    if anchors.ndim != 2 or anchors.shape[1] != 4:
        raise ValueError(f"anchors must be [A, 4] (yc, xc, h, w), got {anchors.shape}")

    if postprocess is None:
        def serve(images):
            box_deltas, class_logits = frozen(images)
            return {"box_deltas": box_deltas, "class_logits": class_logits}
        outputs = RAW_OUTPUTS
    else:
        @tf.function(experimental_implements=postprocess.signature(num_classes))
        def detection_postprocess(box_encodings, class_predictions, anchor_boxes):
            # Never executed: the converter replaces this call by the TFLite op.
            return tuple(tf.constant(0.0, name=name) for name in ("boxes", "classes", "scores", "count"))

        def serve(images):
            box_deltas, class_logits = frozen(images)
            boxes, classes, scores, count = detection_postprocess(box_deltas, tf.sigmoid(class_logits),
                                                                  tf.constant(anchors))
            return dict(zip(POSTPROCESS_OUTPUTS, (boxes, classes, scores, count)))
        outputs = POSTPROCESS_OUTPUTS

    function = tf.function(serve, input_signature=[spec], autograph=False)
    with tempfile.TemporaryDirectory(prefix="tdbnas-export-") as directory:
        concrete = function.get_concrete_function()
        with _quiet():
            tf.saved_model.save(tf.Module(), directory, signatures={"serving_default": concrete})
            converter = tf.lite.TFLiteConverter.from_saved_model(directory)
        converter.allow_custom_ops = postprocess is not None
        dataset = None if samples is None else (lambda: ({"images": s} for s in samples))
        data = _run(converter, settings, dataset, allow_float_fallback)
    names = TF1_OUTPUT_NAMES if postprocess is not None else outputs
    return finalize(data, outputs, names, metadata)


def finalize(data: bytes, signature_outputs: tuple[str, ...], tensor_names: tuple[str, ...],
             metadata: dict[str, Any] | None) -> bytes:
    """Order the subgraph outputs as `signature_outputs`, name their tensors, embed metadata."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromObj(schema.Model.GetRootAs(data, 0))
    graph = model.subgraphs[0]
    by_name = {t.name.decode(): t.tensorIndex for t in model.signatureDefs[0].outputs}
    missing = [name for name in signature_outputs if name not in by_name]
    if missing:
        raise RuntimeError(f"the converted model lacks outputs {missing} (it has {sorted(by_name)})")
    graph.outputs = [by_name[name] for name in signature_outputs]
    _defer_dequantize(model, graph)
    for index, name in zip(graph.outputs, tensor_names):
        graph.tensors[index].name = name.encode()
    if metadata is not None:
        buffer = schema.BufferT()
        buffer.data = np.frombuffer(json.dumps(metadata, sort_keys=True).encode(), dtype=np.uint8)
        model.buffers.append(buffer)
        entry = schema.MetadataT()
        entry.name, entry.buffer = METADATA_NAME.encode(), len(model.buffers) - 1
        model.metadata = [m for m in (model.metadata or []) if m.name != METADATA_NAME.encode()] + [entry]
    builder = flatbuffers.Builder(len(data) + 1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _defer_dequantize(model, graph) -> None:
    """Move each DEQUANTIZE that only feeds the post-processing op to just before it.

    The converter may place the box branch's DEQUANTIZE before the last class-head ops; the Edge
    TPU compiler runs the first op it cannot map and *every op after it* on the CPU, so that
    order would push the class head off the accelerator. Moving a DEQUANTIZE later keeps the
    order topological: its input is produced earlier, its only consumer comes after."""
    def name(op) -> str:
        code = model.operatorCodes[op.opcodeIndex]
        builtin = max(code.builtinCode, code.deprecatedBuiltinCode)
        return "CUSTOM:" + code.customCode.decode() if code.customCode else str(builtin)

    from ai_edge_litert import schema_py_generated as schema

    ops = list(graph.operators)
    post = [i for i, op in enumerate(ops) if name(op) == "CUSTOM:TFLite_Detection_PostProcess"]
    if not post:
        return
    post_inputs = set(int(t) for t in ops[post[0]].inputs)
    consumers: dict[int, int] = {}
    for op in ops:
        for t in op.inputs:
            consumers[int(t)] = consumers.get(int(t), 0) + 1
    deferred = [op for op in ops if name(op) == str(schema.BuiltinOperator.DEQUANTIZE)
                and all(int(t) in post_inputs and consumers.get(int(t), 0) == 1 for t in op.outputs)]
    rest = [op for op in ops if all(op is not d for d in deferred)]
    index = next(i for i, op in enumerate(rest) if name(op) == "CUSTOM:TFLite_Detection_PostProcess")
    graph.operators = rest[:index] + deferred + rest[index:]


def read_metadata(model: bytes | str | Path) -> dict[str, Any] | None:
    """The tdbnas metadata embedded in a .tflite, or None."""
    from ai_edge_litert import schema_py_generated as schema

    data = Path(model).read_bytes() if isinstance(model, (str, Path)) else model
    root = schema.Model.GetRootAs(data, 0)
    for i in range(root.MetadataLength()):
        entry = root.Metadata(i)
        if entry.Name() and entry.Name().decode() == METADATA_NAME:
            raw = root.Buffers(entry.Buffer()).DataAsNumpy()
            return json.loads(bytes(raw).decode())
    return None


def postprocess_settings_json(op: PostprocessOp | None) -> dict[str, Any] | None:
    return None if op is None else asdict(op)
