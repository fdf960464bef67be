"""Edge TPU: a compatibility report from the documented op table, and the `edgetpu_compiler` hook.

The Edge TPU runs only fully 8-bit models compiled by `edgetpu_compiler`, and only the ops in
Coral's supported-operations table (coral.ai/docs/edgetpu/models-intro/#supported-operations).
The compiler partitions a model once: "the unsupported operator and every operator after it
runs on the CPU" (Coral model requirements). `compatibility(model)` applies these rules to a
.tflite's op list without the compiler, so a user sees which ops would fall back and where the
single CPU/TPU split lands; `compile_model` runs the real compiler when it is installed (x86-64
Linux only) and parses its log (ops mapped, on-chip parameter cache used, off-chip streaming).

Not in the table for our detectors: HARD_SWISH (google-coral/edgetpu#272; MobileDet-CPU's
activation), the float QUANTIZE/DEQUANTIZE at a float model edge, and the custom
`TFLite_Detection_PostProcess`, which runs on the CPU by design after the accelerated graph.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tdbnas.export.tflite_inspect import OpInfo, list_ops

#: TFLite builtin ops in Coral's supported-operations table (op names as in the TFLite schema).
SUPPORTED_OPS = frozenset({
    "ADD", "AVERAGE_POOL_2D", "CONCATENATION", "CONV_2D", "DEPTHWISE_CONV_2D", "EXPAND_DIMS",
    "FULLY_CONNECTED", "L2_NORMALIZATION", "LOGISTIC", "MAXIMUM", "MAX_POOL_2D", "MEAN", "MINIMUM", "MUL",
    "PACK", "PAD", "PRELU", "QUANTIZE", "REDUCE_MAX", "REDUCE_MIN", "RELU", "RELU6", "RELU_N1_TO_1", "RESHAPE",
    "RESIZE_BILINEAR", "RESIZE_NEAREST_NEIGHBOR", "RSQRT", "SLICE", "SOFTMAX", "SPACE_TO_DEPTH", "SPLIT",
    "SQUARED_DIFFERENCE", "SQUEEZE", "STRIDED_SLICE", "SUB", "SUM", "TANH", "TRANSPOSE", "TRANSPOSE_CONV",
})
#: Ops that run on the CPU by design at the end of a detector; they do not count as a split.
CPU_BY_DESIGN = frozenset({"CUSTOM:TFLite_Detection_PostProcess"})
COMPILER = "edgetpu_compiler"
INSTALL_HINT = ("edgetpu_compiler is not on PATH: it runs on x86-64 Linux only; install it from Coral's apt "
                "repository (`sudo apt-get install edgetpu-compiler`, see coral.ai/docs/edgetpu/compiler)")


@dataclass(frozen=True)
class Compatibility:
    """What the documented rules say about one model."""

    ops: int
    on_tpu: int
    unsupported: tuple[OpInfo, ...]   # ops not in the table (or not 8-bit)
    first_cpu_op: OpInfo | None       # where the single CPU/TPU split lands
    cpu_after_split: int              # ops from the split to the end (all run on the CPU)

    @property
    def fully_mapped(self) -> bool:
        return self.first_cpu_op is None

    def summary(self) -> str:
        if self.fully_mapped:
            by_design = self.ops - self.on_tpu
            tail = f"; the {by_design} post-processing ops after them run on the CPU by design" if by_design else ""
            return f"all {self.on_tpu} ops of the network can run on the Edge TPU (by the documented op table){tail}"
        first = self.first_cpu_op
        names = sorted({op.op for op in self.unsupported})
        return (f"{self.on_tpu} of {self.ops} ops on the Edge TPU; the split lands at op #{first.index} "
                f"{first.op}: it and the {self.cpu_after_split - 1} ops after it run on the CPU "
                f"(unsupported: {', '.join(names)})")


def _supported(op: OpInfo) -> bool:
    return op.op in SUPPORTED_OPS and op.is_int8


def compatibility(model: bytes | str | Path) -> Compatibility:
    """Apply the supported-op table and the single-split rule to a .tflite (main subgraph)."""
    ops = list_ops(model)
    main = [op for op in ops if op.subgraph == ops[0].subgraph] if ops else []
    accelerated = [op for op in main if op.op not in CPU_BY_DESIGN]
    # The DEQUANTIZE ops that hand the post-processing op float inputs sit right before it
    # (see detection_tflite._defer_dequantize) and run on the CPU with it, by design.
    while accelerated and accelerated[-1].op == "DEQUANTIZE" and len(accelerated) < len(main):
        accelerated = accelerated[:-1]
    unsupported = tuple(op for op in accelerated if not _supported(op))
    first = unsupported[0] if unsupported else None
    if first is None:
        return Compatibility(len(main), len(accelerated), (), None, 0)
    position = accelerated.index(first)
    return Compatibility(len(main), position, unsupported, first, len(accelerated) - position)


@dataclass
class CompileReport:
    """What `edgetpu_compiler` reported: `compiled` is the path of the `_edgetpu.tflite`."""

    compiled: Path | None
    log: str
    subgraphs: int | None = None
    ops_on_tpu: int | None = None
    ops_on_cpu: int | None = None
    on_chip_used: str | None = None
    on_chip_remaining: str | None = None
    off_chip_streamed: str | None = None
    unmapped: list[str] = field(default_factory=list)


_PATTERNS = {
    "subgraphs": r"Number of Edge TPU subgraphs:\s*(\d+)",
    "ops_on_tpu": r"Number of operations that will run on Edge TPU:\s*(\d+)",
    "ops_on_cpu": r"Number of operations that will run on CPU:\s*(\d+)",
    "on_chip_used": r"On-chip memory used for caching model parameters:\s*([\d.]+\s*\w+)",
    "on_chip_remaining": r"On-chip memory remaining for caching model parameters:\s*([\d.]+\s*\w+)",
    "off_chip_streamed": r"Off-chip memory used for streaming uncached model parameters:\s*([\d.]+\s*\w+)",
}


def parse_compiler_log(log: str) -> CompileReport:
    """The numbers of an `edgetpu_compiler -s` log (the per-op table lines that are not mapped too)."""
    report = CompileReport(None, log)
    for name, pattern in _PATTERNS.items():
        match = re.search(pattern, log)
        if match:
            value = match.group(1)
            setattr(report, name, int(value) if value.isdigit() else value)
    for line in log.splitlines():
        if "Mapped to Edge TPU" not in line and re.match(r"^\s*[A-Z_0-9]+\s+\d+\s+\S", line):
            report.unmapped.append(re.sub(r"\s+", " ", line.strip()))
    return report


def compile_model(model: str | Path, out_dir: str | Path | None = None, *, compiler: str = COMPILER,
                  extra_args: Sequence[str] = (), timeout: float = 600.0) -> CompileReport:
    """Run `edgetpu_compiler -s` on a .tflite; `RuntimeError` saying what to install when missing."""
    executable = shutil.which(compiler)
    if executable is None:
        raise RuntimeError(INSTALL_HINT)
    model = Path(model)
    out = Path(out_dir) if out_dir else model.parent
    out.mkdir(parents=True, exist_ok=True)
    command = [executable, "-s", "-o", str(out), *extra_args, str(model)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    log = result.stdout + result.stderr
    if result.returncode != 0:
        tail = "\n".join(log.strip().splitlines()[-5:])
        raise RuntimeError(f"edgetpu_compiler failed on {model} (exit {result.returncode}):\n{tail}")
    report = parse_compiler_log(log)
    compiled = out / f"{model.stem}_edgetpu.tflite"
    report.compiled = compiled if compiled.exists() else None
    return report


def compiler_available(compiler: str = COMPILER) -> bool:
    return shutil.which(compiler) is not None
