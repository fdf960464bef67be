"""Reading a .tflite: which operators it has and whether they are int8, and running it on
float inputs (quantizing and dequantizing at the edges) to compare it with the float model.

Operators are read from the flatbuffer schema that ships with LiteRT, so listing needs no
interpreter, no delegate and no TensorFlow.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

_EIGHT_BIT = frozenset({"INT8", "UINT8"})


@dataclass(frozen=True)
class OpInfo:
    """One operator of a .tflite: its subgraph (signature key when there is one), position,
    builtin name, and the element types of the tensors it reads (constants excluded: int32
    biases, shapes and axes are normal in an int8 model) and writes."""

    subgraph: str
    index: int
    op: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]

    @property
    def is_int8(self) -> bool:
        """Every activation it reads and writes is 8-bit integer (int8, or uint8 at an edge)."""
        return all(t in _EIGHT_BIT for t in (*self.inputs, *self.outputs))

    def __str__(self) -> str:
        return f"{self.subgraph}#{self.index} {self.op}({', '.join(self.inputs)}) -> {', '.join(self.outputs)}"


def list_ops(model: bytes | str | Path) -> list[OpInfo]:
    """Every operator of a .tflite (bytes or path), read from the flatbuffer schema without
    running anything."""
    from ai_edge_litert import schema_py_generated as schema

    data = _model_bytes(model)
    if len(data) < 8 or data[4:8] != b"TFL3":  # the flatbuffer file identifier of every .tflite
        raise ValueError("not a readable .tflite model (no TFL3 file identifier)")
    try:
        root = schema.Model.GetRootAs(data, 0)
        op_names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
        type_names = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
        codes = [root.OperatorCodes(i) for i in range(root.OperatorCodesLength())]
        signatures = {root.SignatureDefs(i).SubgraphIndex(): root.SignatureDefs(i).SignatureKey().decode()
                      for i in range(root.SignatureDefsLength())}
        ops = []
        for g in range(root.SubgraphsLength()):
            graph = root.Subgraphs(g)
            label = signatures.get(g) or (graph.Name() or b"").decode() or f"subgraph{g}"
            for j in range(graph.OperatorsLength()):
                op = graph.Operators(j)
                code = codes[op.OpcodeIndex()]
                builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
                name = op_names.get(builtin, str(builtin))
                if name == "CUSTOM":
                    name = f"CUSTOM:{(code.CustomCode() or b'').decode()}"
                inputs = tuple(type_names.get(graph.Tensors(t).Type(), "?") for t in op.InputsAsNumpy()
                               if t >= 0 and not _is_constant(root, graph.Tensors(t)))
                outputs = tuple(type_names.get(graph.Tensors(t).Type(), "?") for t in op.OutputsAsNumpy() if t >= 0)
                ops.append(OpInfo(label, j, name, inputs, outputs))
    except Exception as exc:  # noqa: BLE001 - any malformed flatbuffer gets one clear message
        raise ValueError(f"not a readable .tflite model ({type(exc).__name__}: {exc})") from None
    return ops


def non_int8_ops(model: bytes | str | Path) -> list[OpInfo]:
    """The operators that read or write anything but 8-bit integer activations (float
    fallbacks, and QUANTIZE / DEQUANTIZE at float edges). Empty for a full-int8 model."""
    return [op for op in list_ops(model) if not op.is_int8]


def run_tflite(model: bytes | str | Path, inputs: np.ndarray, *, signature: str | None = None,
               num_threads: int = 1) -> dict[str, np.ndarray]:
    """Run a .tflite on float inputs [N, H, W, C] (quantized on the way in when the input is
    integer; run in chunks of the model's batch size) and return float outputs
    (dequantized), by output name in the model's order."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=_model_bytes(model), num_threads=num_threads)
    if signature is None:
        if interpreter.get_signature_list() and len(interpreter.get_signature_list()) > 1:
            raise ValueError(f"this model has signatures {list(interpreter.get_signature_list())}; pass one")
        interpreter.allocate_tensors()
        input_details, output_details = interpreter.get_input_details(), interpreter.get_output_details()
    else:
        runner = interpreter.get_signature_runner(signature)
        input_details = list(runner.get_input_details().values())
        output_details = [{**d, "name": n} for n, d in runner.get_output_details().items()]
    if len(input_details) != 1:
        raise ValueError(f"run_tflite runs single-input models; this one has {len(input_details)} inputs")
    detail = input_details[0]
    batch = int(detail["shape"][0]) or 1
    inputs = np.asarray(inputs, dtype=np.float32)
    if inputs.ndim != 4 or tuple(inputs.shape[1:]) != tuple(int(v) for v in detail["shape"][1:]):
        raise ValueError(f"inputs must be [N, {', '.join(str(int(v)) for v in detail['shape'][1:])}] (NHWC), "
                         f"got {inputs.shape}")
    if len(inputs) % batch:
        raise ValueError(f"the model runs batches of {batch}; {len(inputs)} inputs is not a multiple")
    results: dict[str, list[np.ndarray]] = {d["name"]: [] for d in output_details}
    for start in range(0, len(inputs), batch):
        x = _quantize(inputs[start:start + batch], detail)
        if signature is None:
            interpreter.set_tensor(detail["index"], x)
            interpreter.invoke()
            raw = {d["name"]: interpreter.get_tensor(d["index"]) for d in output_details}
        else:
            raw = runner(**{next(iter(runner.get_input_details())): x})
        for d in output_details:
            results[d["name"]].append(_dequantize(raw[d["name"]], d))
    return {name: np.concatenate(parts) for name, parts in results.items()}


# ---- helpers ------------------------------------------------------------------------------
def _model_bytes(model: bytes | str | Path) -> bytes:
    if isinstance(model, (bytes, bytearray)):
        return bytes(model)
    path = Path(model)
    if not path.is_file():
        raise ValueError(f"{path} is not a .tflite file")
    return path.read_bytes()


def _is_constant(root: Any, tensor: Any) -> bool:
    index = tensor.Buffer()
    if index <= 0 or index >= root.BuffersLength():
        return False
    buffer = root.Buffers(index)
    return buffer.DataLength() > 0 or buffer.Offset() > 1


def _quantize(x: np.ndarray, detail: dict) -> np.ndarray:
    dtype = detail["dtype"]
    if dtype == np.float32:
        return x.astype(np.float32)
    scale, zero = detail["quantization"]
    info = np.iinfo(dtype)
    return np.clip(np.round(x / scale + zero), info.min, info.max).astype(dtype)


def _dequantize(y: np.ndarray, detail: dict) -> np.ndarray:
    if y.dtype == np.float32:
        return y
    scale, zero = detail["quantization"]
    return (y.astype(np.float32) - zero) * scale


__all__ = ["OpInfo", "list_ops", "non_int8_ops", "run_tflite"]
