"""Device-side timing agent: time one `.tflite` on this machine and print one JSON line.

The ssh runner copies this single file to a Linux board (a Coral Dev Board, a Raspberry Pi, a
Jetson) and runs it there, so it must stand alone: the standard library, numpy and a TFLite
interpreter (`tflite_runtime`, `ai_edge_litert` or `tensorflow`), nothing from tdbnas. It also
keeps to what old board images have (Python 3.7, numpy 1.16: no `default_rng`, no walrus).

The local runner imports the same timing loop (`prepare_invoke`, `timed_runs`) so a model timed
here and on a board is timed the same way.

    python3 device_agent.py --model m.tflite --warmup 20 --runs 100 --threads 1
    python3 device_agent.py --model m.tflite --delegate libedgetpu.so.1 --delegate-option device=usb:0
    python3 device_agent.py --describe          # runtime and environment only

Output (stdout, one line): {"tdbnas_agent": 1, "samples_ms": [...], "runtime": {...},
"environment": {...}, ...}; on failure {"tdbnas_agent": 1, "error": "...", "unavailable": true|false}
and a non-zero exit status (3: something is missing on the board, 1: the run failed).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import sys
import time

AGENT_VERSION = 1
RESULT_KEY = "tdbnas_agent"
#: exit status when the board lacks something (interpreter, delegate library, model file)
EXIT_UNAVAILABLE = 3

_INTERPRETERS = (
    ("ai_edge_litert.interpreter", "ai-edge-litert"),
    ("tflite_runtime.interpreter", "tflite-runtime"),
    ("tensorflow.lite", "tensorflow"),
)


class Unavailable(RuntimeError):
    """Something this board lacks; the message says what to install."""


# ---- interpreter -----------------------------------------------------------------------------
def _version(name, module):
    version = getattr(module, "__version__", None)
    if version:
        return str(version)
    try:
        from importlib import metadata
    except ImportError:  # Python 3.7
        return "unknown"
    for dist in (name, "tensorflow-cpu") if name == "tensorflow" else (name,):
        try:
            return metadata.version(dist)
        except Exception:  # noqa: BLE001 - PackageNotFoundError, or no metadata at all
            continue
    return "unknown"


def load_interpreter_api(prefer=None):
    """(Interpreter class, load_delegate, OpResolverType or None, runtime dict) of the first
    importable interpreter package."""
    import importlib

    failures = []
    for module_name, name in _INTERPRETERS:
        if prefer and prefer not in (module_name, name):
            continue
        try:
            if module_name == "tensorflow.lite":
                tf = importlib.import_module("tensorflow")
                api, package = tf.lite, tf
                load_delegate, resolver = api.experimental.load_delegate, getattr(api.experimental,
                                                                                  "OpResolverType", None)
            else:
                api = importlib.import_module(module_name)
                package = importlib.import_module(module_name.split(".")[0])
                load_delegate, resolver = api.load_delegate, getattr(api, "OpResolverType", None)
        except ImportError as exc:
            failures.append(f"{module_name}: {exc}")
            continue
        runtime = {"name": name, "version": _version(name, package), "module": module_name}
        return api.Interpreter, load_delegate, resolver, runtime
    raise Unavailable(f"no TFLite interpreter on this machine ({'; '.join(failures)}); install one: "
                      "pip3 install tflite-runtime (or ai-edge-litert)")


def make_interpreter(model, threads=1, xnnpack=True, delegate=None, delegate_options=None, prefer=None):
    """(interpreter with tensors allocated, runtime dict)."""
    interpreter_class, load_delegate, resolver, runtime = load_interpreter_api(prefer)
    if not os.path.isfile(model):
        raise Unavailable(f"no model file at {model}")
    kwargs = {"model_path": model, "num_threads": int(threads)}
    if not xnnpack:
        if resolver is None:
            raise Unavailable(f"{runtime['name']} {runtime['version']} cannot disable XNNPACK; upgrade the interpreter")
        kwargs["experimental_op_resolver_type"] = resolver.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    if delegate:
        options = {str(k): str(v) for k, v in (delegate_options or {}).items()}
        try:
            import ctypes

            ctypes.CDLL(delegate)  # fail cleanly before the interpreter's loader does
            kwargs["experimental_delegates"] = [load_delegate(delegate, options or None)]
        except (ValueError, OSError) as exc:
            hint = ("install the Edge TPU runtime: apt-get install libedgetpu1-std "
                    "(https://coral.ai/software/#edgetpu-runtime)" if "edgetpu" in delegate else
                    "check that the library exists on the board and matches its CPU")
            detail = " ".join(str(exc).split())
            raise Unavailable(f"cannot load delegate {delegate} ({detail}); {hint}") from None
    interpreter = interpreter_class(**kwargs)
    interpreter.allocate_tensors()
    return interpreter, runtime


# ---- inputs and the timing loop --------------------------------------------------------------
def random_input(detail, rng):
    """Random values of the input's dtype and shape: the full range of small integer types (what
    int8 models see), small non-negative values for int32/int64 (indices), normal floats."""
    import numpy as np

    dtype, shape = np.dtype(detail["dtype"]), tuple(int(d) for d in detail["shape"])
    if dtype == np.bool_:
        return rng.randint(0, 2, size=shape).astype(np.bool_)
    if dtype.kind in "iu" and dtype.itemsize <= 2:
        info = np.iinfo(dtype)
        return rng.randint(int(info.min), int(info.max) + 1, size=shape).astype(dtype)
    if dtype.kind in "iu":
        return rng.randint(0, 8, size=shape).astype(dtype)
    if dtype.kind == "f":
        return rng.standard_normal(size=shape).astype(dtype)
    raise ValueError(f"cannot make random input of dtype {dtype} for {detail.get('name')}")


def prepare_invoke(interpreter, signature=None, seed=0):
    """Fill the inputs with random data once and return (invoke, how): a no-argument callable
    that runs the model (or one signature of it) and nothing else, so the timed loop measures
    inference, not input copies.

    With a signature, the subgraph is invoked through the signature runner's wrapper when this
    interpreter version exposes it; otherwise every call goes through the signature runner,
    which also copies inputs and outputs (reported as how="signature_call").
    """
    import numpy as np

    rng = np.random.RandomState(seed)
    if signature is None:
        for detail in interpreter.get_input_details():
            interpreter.set_tensor(detail["index"], random_input(detail, rng))
        return interpreter.invoke, "invoke"
    try:
        runner = interpreter.get_signature_runner(signature)
    except ValueError as exc:
        names = sorted(interpreter.get_signature_list())
        raise ValueError(f"no signature {signature!r} in the model (signatures: {', '.join(names)}): {exc}") from None
    inputs = {name: random_input(detail, rng) for name, detail in sorted(runner.get_input_details().items())}
    runner(**inputs)  # resizes, allocates and sets the inputs of that subgraph
    wrapper, index = getattr(runner, "_interpreter_wrapper", None), getattr(runner, "_subgraph_index", None)
    if wrapper is not None and index is not None and hasattr(wrapper, "Invoke"):
        return (lambda: wrapper.Invoke(index)), "subgraph"
    return (lambda: runner(**inputs)), "signature_call"


def timed_runs(invoke, warmup, runs, min_seconds=0.0, max_runs=None):
    """`warmup` untimed calls, then at least `runs` timed ones and until `min_seconds` of timed
    calls have passed (never more than `max_runs`): each timed call's wall time in ms. The same
    rule as benchmark_model's --num_runs / --min_secs.

    The garbage collector is paused meanwhile: a collection inside a timed call is not the
    model's latency.
    """
    for _ in range(int(warmup)):
        invoke()
    runs = int(runs)
    cap = max(runs, int(max_runs)) if max_runs else None
    budget_ns = int(float(min_seconds) * 1e9)
    samples = []
    clock = time.perf_counter_ns
    enabled = gc.isenabled()
    gc.disable()
    try:
        spent = 0
        while len(samples) < runs or (spent < budget_ns and (cap is None or len(samples) < cap)):
            start = clock()
            invoke()
            elapsed = clock() - start
            spent += elapsed
            samples.append(elapsed / 1e6)
    finally:
        if enabled:
            gc.enable()
    return samples


# ---- environment -----------------------------------------------------------------------------
def _read(path):
    try:
        with open(path) as handle:
            return handle.read().strip("\x00 \n")
    except OSError:
        return None


def cpu_model():
    """The CPU's name as /proc/cpuinfo gives it (x86 "model name"; ARM "Hardware" or the part)."""
    text = _read("/proc/cpuinfo") or ""
    fields = {}
    for line in text.splitlines():
        if ":" in line:
            key, value = line.split(":", 1)
            fields.setdefault(key.strip(), value.strip())
    for key in ("model name", "Hardware", "Processor", "cpu model"):
        if fields.get(key):
            return fields[key]
    if fields.get("CPU part"):
        return f"ARM implementer {fields.get('CPU implementer', '?')} part {fields['CPU part']}"
    return platform.processor() or platform.machine()


def host_environment():
    """What a latency on this machine depends on besides the model; all fields best effort."""
    env = {"cpu": cpu_model(), "cores": os.cpu_count(), "machine": platform.machine(),
           "system": platform.system(), "kernel": platform.release(), "python": platform.python_version()}
    if hasattr(os, "sched_getaffinity"):
        env["cores_usable"] = len(os.sched_getaffinity(0))
    governor = _read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor")
    if governor:
        env["governor"] = governor
    board = _read("/proc/device-tree/model")
    if board:
        env["board"] = board
    return env


def conditions():
    """Conditions at measurement time (they change between measurements, unlike the environment)."""
    out = {}
    if hasattr(os, "getloadavg"):
        out["load1"] = round(os.getloadavg()[0], 2)
    temp = _read("/sys/class/thermal/thermal_zone0/temp")
    if temp and temp.lstrip("-").isdigit():
        out["temperature_c"] = int(temp) / 1000.0
    freq = _read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_cur_freq")
    if freq and freq.isdigit():
        out["cpu0_khz"] = int(freq)
    return out


# ---- command line ----------------------------------------------------------------------------
def _options(pairs):
    options = {}
    for pair in pairs or ():
        if "=" not in pair:
            raise ValueError(f"--delegate-option wants key=value, got {pair!r}")
        key, value = pair.split("=", 1)
        options[key] = value
    return options


def run(args):
    if args.describe:
        _, _, _, runtime = load_interpreter_api(args.interpreter)
        return {RESULT_KEY: AGENT_VERSION, "runtime": runtime, "environment": host_environment()}
    if not args.model:
        raise ValueError("--model is required unless --describe")
    interpreter, runtime = make_interpreter(args.model, args.threads, not args.no_xnnpack, args.delegate,
                                            _options(args.delegate_option), args.interpreter)
    invoke, how = prepare_invoke(interpreter, args.signature, args.seed)
    samples = timed_runs(invoke, args.warmup, args.runs, args.min_seconds, args.max_runs)
    return {RESULT_KEY: AGENT_VERSION, "samples_ms": samples, "runtime": runtime, "invoke": how,
            "environment": host_environment(), "conditions": conditions(), "threads": args.threads,
            "xnnpack": not args.no_xnnpack, "delegate": args.delegate, "signature": args.signature}


def parser():
    p = argparse.ArgumentParser(description="Time a TFLite model on this machine; print one JSON line.")
    p.add_argument("--model", help="the .tflite file")
    p.add_argument("--warmup", type=int, default=10, help="untimed runs first (default 10)")
    p.add_argument("--runs", type=int, default=100, help="timed runs (default 100)")
    p.add_argument("--min-seconds", type=float, default=0.0, help="keep timing until this long (default 0)")
    p.add_argument("--max-runs", type=int, help="never more timed runs than this")
    p.add_argument("--threads", type=int, default=1, help="interpreter threads (default 1)")
    p.add_argument("--signature", help="signature to run in a multi-signature model")
    p.add_argument("--no-xnnpack", action="store_true", help="builtin kernels only (no default delegates)")
    p.add_argument("--delegate", help="external delegate library, e.g. libedgetpu.so.1")
    p.add_argument("--delegate-option", action="append", metavar="KEY=VALUE", help="delegate option (repeatable)")
    p.add_argument("--interpreter", help="force one interpreter package (ai-edge-litert, tflite-runtime, tensorflow)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random inputs")
    p.add_argument("--describe", action="store_true", help="print the runtime and environment only")
    return p


def main(argv=None):
    args = parser().parse_args(argv)
    try:
        record, status = run(args), 0
    except Unavailable as exc:
        record, status = {RESULT_KEY: AGENT_VERSION, "error": str(exc), "unavailable": True}, EXIT_UNAVAILABLE
    except ImportError as exc:  # numpy, or a broken interpreter install
        record = {RESULT_KEY: AGENT_VERSION, "error": f"{exc}; install it on this machine (pip3 install numpy "
                  "tflite-runtime)", "unavailable": True}
        status = EXIT_UNAVAILABLE
    except Exception as exc:  # noqa: BLE001 - report any failure as one JSON line, not a traceback
        record = {RESULT_KEY: AGENT_VERSION, "error": f"{type(exc).__name__}: {exc}", "unavailable": False}
        status = 1
    sys.stdout.write(json.dumps(record) + "\n")
    sys.stdout.flush()
    return status


if __name__ == "__main__":
    sys.exit(main())
