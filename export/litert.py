"""Load a `.tflite` model into whichever TFLite interpreter this machine has.

Export verification and the latency runners both run TFLite models; they get their interpreter
here so that both agree on which runtime (and which version of it) ran a model, and so that a
missing runtime or delegate library fails with one sentence saying what to install.

Three packages ship the same interpreter, tried in this order:

* `ai_edge_litert.interpreter` (pip `ai-edge-litert`): the current LiteRT package;
* `tflite_runtime.interpreter` (pip `tflite-runtime`): its old name, still what many boards
  (Coral Dev Board, Raspberry Pi images) have;
* `tensorflow.lite` (pip `tensorflow`): deprecated, slow to import, last resort.

Options: the thread count; XNNPACK on or off (on by default in all three: it is applied as a
*default delegate* at `allocate_tensors`, and the op resolver `BUILTIN_WITHOUT_DEFAULT_DELEGATES`
turns it off); and an external delegate loaded from a shared library with string options, e.g.
the Edge TPU (`libedgetpu.so.1`, options such as `{"device": "usb:0"}`), Qualcomm QNN
(`libQnnTFLiteDelegate.so`, `{"backend_type": "htp"}`), or the GPU delegate
(`libtensorflowlite_gpu_delegate.so`).
"""

from __future__ import annotations

import ctypes
import importlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

#: (module, pip distribution) in order of preference.
INTERPRETER_MODULES: tuple[tuple[str, str], ...] = (
    ("ai_edge_litert.interpreter", "ai-edge-litert"),
    ("tflite_runtime.interpreter", "tflite-runtime"),
    ("tensorflow.lite", "tensorflow"),
)

INSTALL_HINT = ("install a TFLite interpreter: pip install ai-edge-litert (or tflite-runtime on boards that only "
                "have that; or tensorflow)")

#: What to install when a well-known delegate library cannot be loaded (matched on the file name).
DELEGATE_HINTS: dict[str, str] = {
    "libedgetpu": "install the Edge TPU runtime (Debian: apt-get install libedgetpu1-std from "
                  "https://coral.ai/software/#edgetpu-runtime) and plug in the Coral device",
    "libqnntflitedelegate": "copy libQnnTFLiteDelegate.so and the QNN backend libraries (libQnnHtp.so ...) from "
                            "the Qualcomm AI Engine Direct SDK next to the model and set LD_LIBRARY_PATH / "
                            "ADSP_LIBRARY_PATH",
    "libhexagon": "copy libhexagon_interface.so and the libhexagon_nn_skel*.so files for this SoC to the device",
    "libtensorflowlite_gpu_delegate": "build it from TensorFlow: bazel build -c opt "
                                      "//tensorflow/lite/delegates/gpu:libtensorflowlite_gpu_delegate.so",
}


class InterpreterUnavailable(RuntimeError):
    """No usable interpreter, delegate library or option here; the message says what to install."""


@dataclass(frozen=True)
class InterpreterRuntime:
    """One importable TFLite interpreter package."""

    name: str               # pip distribution: ai-edge-litert, tflite-runtime, tensorflow
    version: str
    module: str             # the module the classes came from
    interpreter_class: Any  # Interpreter
    load_delegate_fn: Any   # load_delegate(library, options)
    op_resolver_type: Any   # the OpResolverType enum, or None where this version lacks it

    def describe(self) -> str:
        """`ai-edge-litert 2.3.0`: the runtime part of a latency table's runtime version."""
        return f"{self.name} {self.version}"


def _version_of(name: str, module: Any) -> str:
    version = getattr(module, "__version__", None)
    if isinstance(version, str) and version:
        return version
    candidates = (name, "tensorflow-cpu", "tensorflow-intel", "tf-nightly") if name == "tensorflow" else (name,)
    for distribution in candidates:
        try:
            return metadata.version(distribution)
        except metadata.PackageNotFoundError:
            continue
    return "unknown"


def _load(module_name: str, name: str) -> InterpreterRuntime:
    if module_name == "tensorflow.lite":
        tf = importlib.import_module("tensorflow")
        lite = tf.lite
        return InterpreterRuntime(name, _version_of(name, tf), module_name, lite.Interpreter,
                                  lite.experimental.load_delegate, getattr(lite.experimental, "OpResolverType", None))
    module = importlib.import_module(module_name)
    package = importlib.import_module(module_name.split(".")[0])
    return InterpreterRuntime(name, _version_of(name, package), module_name, module.Interpreter,
                              module.load_delegate, getattr(module, "OpResolverType", None))


_CACHE: dict[str | None, InterpreterRuntime] = {}


def interpreter_runtime(prefer: str | None = None) -> InterpreterRuntime:
    """The first importable interpreter package (or exactly `prefer`, a module or pip name).

    Raises `InterpreterUnavailable` (a `RuntimeError`) naming what to install when none can be
    imported.
    """
    if prefer in _CACHE:
        return _CACHE[prefer]
    candidates = [(m, n) for m, n in INTERPRETER_MODULES if prefer in (None, m, n, m.split(".")[0])]
    if not candidates:
        known = ", ".join(n for _, n in INTERPRETER_MODULES)
        raise ValueError(f"unknown TFLite interpreter {prefer!r} (known: {known})")
    failures = []
    for module_name, name in candidates:
        try:
            runtime = _load(module_name, name)
        except ImportError as exc:  # absent, or present but broken (e.g. a missing shared library)
            failures.append(f"{module_name}: {exc}")
            continue
        _CACHE[prefer] = runtime
        return runtime
    raise InterpreterUnavailable(f"no TFLite interpreter can be imported ({'; '.join(failures)}); {INSTALL_HINT}")


def runtime_info(prefer: str | None = None) -> dict[str, str]:
    """Name, version and module of the interpreter `make_interpreter` would use."""
    runtime = interpreter_runtime(prefer)
    return {"name": runtime.name, "version": runtime.version, "module": runtime.module}


def delegate_hint(library: str | os.PathLike[str]) -> str:
    """What to install for a delegate library, when it is a well-known one."""
    base = Path(library).name.lower()
    for prefix, hint in DELEGATE_HINTS.items():
        if base.startswith(prefix):
            return hint
    return "check the path, the library's architecture (this machine's CPU), and that its own dependencies are found"


def load_delegate(library: str | os.PathLike[str], options: Mapping[str, Any] | None = None, *,
                  runtime: InterpreterRuntime | None = None) -> Any:
    """An external delegate from a shared library (`tflite_plugin_create_delegate` interface).

    Options are passed as strings, as the external-delegate interface requires. Raises
    `InterpreterUnavailable` (a `RuntimeError`) naming the library and what to install when it
    cannot be loaded.
    """
    runtime = runtime or interpreter_runtime()
    text = {str(k): str(v) for k, v in (options or {}).items()}
    try:
        # Open it first: the interpreter's own loader leaves a half-built object that complains
        # on deletion when the library is missing.
        ctypes.CDLL(os.fspath(library))
        return runtime.load_delegate_fn(os.fspath(library), text or None)
    except (ValueError, OSError, AttributeError) as exc:
        detail = " ".join(str(exc).split())
        raise InterpreterUnavailable(f"cannot load the TFLite delegate library {os.fspath(library)!r} with "
                                     f"{runtime.describe()} ({detail}); {delegate_hint(library)}") from None


def make_interpreter(model: str | os.PathLike[str] | bytes, *, threads: int | None = 1, xnnpack: bool = True,
                     delegate: str | os.PathLike[str] | None = None,
                     delegate_options: Mapping[str, Any] | None = None, delegates: Sequence[Any] = (),
                     runtime: InterpreterRuntime | None = None, allocate: bool = True) -> Any:
    """A TFLite interpreter for `model` (a path or the flatbuffer bytes), tensors allocated.

    `xnnpack=False` disables the default delegates (XNNPACK) so the builtin kernels run; an
    external `delegate` library is applied on top of either. `delegates` are delegates already
    loaded with `load_delegate`, for callers that build many interpreters (loading libedgetpu
    opens the device, which is slow).
    """
    runtime = runtime or interpreter_runtime()
    kwargs: dict[str, Any] = {}
    if isinstance(model, (bytes, bytearray)):
        kwargs["model_content"] = bytes(model)
    else:
        path = Path(model)
        if not path.is_file():
            raise FileNotFoundError(f"no TFLite model at {path}")
        kwargs["model_path"] = str(path)
    if threads is not None:
        kwargs["num_threads"] = int(threads)
    if not xnnpack:
        if runtime.op_resolver_type is None:
            raise InterpreterUnavailable(f"{runtime.describe()} cannot disable XNNPACK (no OpResolverType); "
                                         "upgrade: pip install -U ai-edge-litert")
        kwargs["experimental_op_resolver_type"] = runtime.op_resolver_type.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    loaded = list(delegates)
    if delegate is not None:
        loaded.append(load_delegate(delegate, delegate_options, runtime=runtime))
    if loaded:
        kwargs["experimental_delegates"] = loaded
    try:
        interpreter = runtime.interpreter_class(**kwargs)
    except TypeError as exc:  # an old interpreter without some keyword
        raise InterpreterUnavailable(f"{runtime.describe()} does not support these interpreter options ({exc}); "
                                     "upgrade: pip install -U ai-edge-litert") from None
    if allocate:
        interpreter.allocate_tensors()
    return interpreter
