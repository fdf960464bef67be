"""Time models on an Android device with TensorFlow Lite's `benchmark_model` over adb.

The runner pushes the `benchmark_model` binary once and each model when it is first timed,
runs `benchmark_model --graph ... --num_threads ... --warmup_runs ... --num_runs ... --min_secs ...`
(plus the delegate flags), and parses what it prints. `benchmark_model` prints no per-run times,
only aggregates of the warm-up and of the timed runs, e.g.

    count=50 first=119212 curr=118055 min=113737 max=124776 avg=119375 std=1948
    Inference timings in us: Init: 870557, First inference: 130565, Warmup (avg): 122373, Inference (avg): 119375

(microseconds; builds with `StatWithPercentiles` append `p5=... median=... p95=...`), so a
`Timing` from this runner has a summary and no samples; the measurement protocol combines
attempts from their summaries (the minimum is exact).

Get the binary from TensorFlow's nightly builds (`android_aarch64_benchmark_model`, link in
`BENCHMARK_MODEL_URL`) or build it: `bazel build -c opt --config=android_arm64
//tensorflow/lite/tools/benchmark:benchmark_model`. Its sha256 is part of the runtime version:
two builds of one TFLite version can differ by 1.5x (nn-Meter issue #83).
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tdbnas.latency.runners._command import RunFn, find_tool, remote_command, run_tool, tail
from tdbnas.latency.runners.base import Runner, RunnerUnavailable, Timing

BENCHMARK_MODEL_URL = ("https://storage.googleapis.com/tensorflow-nightly-public/prod/tensorflow/release/lite/tools/"
                       "nightly/latest/android_aarch64_benchmark_model")
BINARY_ENV = "TDBNAS_BENCHMARK_MODEL"
ADB_HINT = ("install Android platform-tools (https://developer.android.com/tools/releases/platform-tools, "
            "or apt-get install adb) and put adb on PATH")
BINARY_HINT = (f"download the prebuilt android_aarch64_benchmark_model from {BENCHMARK_MODEL_URL} (or build "
               "//tensorflow/lite/tools/benchmark:benchmark_model with --config=android_arm64) and pass "
               f"benchmark_binary=PATH or set {BINARY_ENV}")
#: getprop keys read into the environment (first present wins for each field)
PROPS = {
    "model": ("ro.product.model",),
    "manufacturer": ("ro.product.manufacturer",),
    "android": ("ro.build.version.release",),
    "sdk": ("ro.build.version.sdk",),
    "soc": ("ro.soc.model", "ro.board.platform", "ro.hardware"),
    "soc_manufacturer": ("ro.soc.manufacturer",),
    "machine": ("ro.product.cpu.abi",),
    "build": ("ro.build.fingerprint",),
}


# ---- parsing benchmark_model's output --------------------------------------------------------
_NUMBER = r"[-+]?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?"
_PAIR = re.compile(rf"\b(count|first|curr|min|max|avg|std|p5|median|p95)=({_NUMBER})")
_RUNNING = re.compile(r"Running benchmark for (?:at least )?\d+ iterations")
_SUMMARY = re.compile(r"Inference timings in us: (.*)$")
_DELEGATION = re.compile(r"(Explicitly applied .*delegate.*|Replacing \d+ out of \d+ node\(s\) with delegate.*|"
                         r".*will not be executed by the delegate.*)")
_SUMMARY_KEYS = {"Init": "init", "First inference": "first_inference", "Warmup (avg)": "warmup_avg",
                 "Inference (avg)": "inference_avg"}
STATISTICS = ("min", "max", "avg", "std", "p5", "median", "p95")


class BenchmarkOutputError(RuntimeError):
    """benchmark_model's output holds no timed runs (it failed; the message has its last lines)."""


@dataclass(frozen=True)
class BenchmarkOutput:
    """The numbers one `benchmark_model` run printed, in microseconds as printed."""

    inference_us: dict[str, float]                      # count, first, curr, min, max, avg, std[, p5, median, p95]
    warmup_us: dict[str, float] = field(default_factory=dict)
    summary_us: dict[str, float] = field(default_factory=dict)  # init, first_inference, warmup_avg, inference_avg
    delegation: tuple[str, ...] = ()

    def timing(self) -> Timing:
        stats = self.inference_us
        summary = {name: stats[name] / 1e3 for name in STATISTICS if name in stats}
        details: dict[str, Any] = {"tool": "benchmark_model"}
        if "first" in stats:
            details["first_run_ms"] = stats["first"] / 1e3
        details.update({f"{k}_ms": v / 1e3 for k, v in self.summary_us.items()})
        if self.warmup_us:
            details["warmup_runs"] = int(self.warmup_us["count"])
        if self.delegation:
            details["delegation"] = list(self.delegation)
        return Timing(summary_ms=summary, count=int(stats["count"]), details=details)


def _stats(line: str) -> dict[str, float]:
    stats = {key: float(value) for key, value in _PAIR.findall(line)}
    if "min" not in stats and "curr" in stats:  # "count=1 curr=3512391" / "(all same)": one value
        stats.update(min=stats["curr"], max=stats["curr"], avg=stats["curr"], std=0.0)
    return stats


def parse_benchmark_output(text: str) -> BenchmarkOutput:
    """Parse `benchmark_model`'s stdout/stderr (or its logcat lines, any per-line prefix).

    The statistics line after each "Running benchmark for at least N iterations" line belongs to
    that phase: the first is the warm-up, the last the timed runs. Op-profiling tables also have
    `count=` lines ("Timings (microseconds): count=..."); they follow no such line and are ignored.
    """
    blocks: list[dict[str, float]] = []
    fallback: list[dict[str, float]] = []
    summary: dict[str, float] = {}
    delegation: list[str] = []
    pending = False
    for raw in text.splitlines():
        line = raw.strip()
        if _RUNNING.search(line):
            pending = True
            continue
        if "count=" in line and _PAIR.search(line):
            stats = _stats(line)
            if pending:
                blocks.append(stats)
                pending = False
            elif "Timings (" not in line and "Memory (" not in line:
                fallback.append(stats)
            continue
        match = _SUMMARY.search(line)
        if match:
            for part in match.group(1).split(","):
                key, _, value = part.partition(":")
                if key.strip() in _SUMMARY_KEYS and re.fullmatch(_NUMBER, value.strip()):
                    summary[_SUMMARY_KEYS[key.strip()]] = float(value)
            continue
        found = _DELEGATION.search(line)
        if found:
            delegation.append(found.group(1).strip())
    blocks = blocks or fallback
    if not blocks or "count" not in blocks[-1] or "min" not in blocks[-1]:
        raise BenchmarkOutputError(f"benchmark_model printed no timed runs: {tail(text)}")
    return BenchmarkOutput(blocks[-1], blocks[0] if len(blocks) > 1 else {}, summary, tuple(delegation))


def parse_getprop(text: str) -> dict[str, str]:
    """`adb shell getprop` output (`[key]: [value]` lines) as a dict."""
    props = {}
    for match in re.finditer(r"^\[([^\]]+)\]: \[(.*)\]\s*$", text, re.MULTILINE):
        props[match.group(1)] = match.group(2)
    return props


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# ---- the runner ------------------------------------------------------------------------------
class AdbRunner(Runner):
    """`benchmark_model` on an Android device.

    Delegates: `use_gpu`, `use_nnapi` (with `nnapi_accelerator`, e.g. "qti-dsp"), `use_hexagon`
    (with `hexagon_lib_path` on the device), `xnnpack=False` for the builtin CPU kernels, or an
    external delegate library already on the device (`external_delegate` path, options as a
    mapping). `taskset` pins the process to a CPU mask (e.g. "f0" for big cores), as the TFLite
    docs advise for low variance.
    """

    name = "adb"

    def __init__(self, serial: str | None = None, benchmark_binary: str | os.PathLike[str] | None = None,
                 device_dir: str = "/data/local/tmp/tdbnas", threads: int = 1, *, use_gpu: bool = False,
                 use_nnapi: bool = False, nnapi_accelerator: str | None = None, use_hexagon: bool = False,
                 hexagon_lib_path: str | None = None, xnnpack: bool = True, external_delegate: str | None = None,
                 external_delegate_options: Mapping[str, Any] | None = None, taskset: str | None = None,
                 extra_flags: Sequence[str] = (), adb: str = "adb", timeout: float = 600.0,
                 run: RunFn | None = None) -> None:
        import subprocess

        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        if not posixpath.isabs(device_dir):
            raise ValueError(f"device_dir must be an absolute path on the device, got {device_dir!r}")
        self.serial, self.threads, self.device_dir = serial, int(threads), device_dir.rstrip("/")
        self.use_gpu, self.use_nnapi, self.nnapi_accelerator = use_gpu, use_nnapi, nnapi_accelerator
        self.use_hexagon, self.hexagon_lib_path, self.xnnpack = use_hexagon, hexagon_lib_path, xnnpack
        self.external_delegate = external_delegate
        self.external_delegate_options = dict(external_delegate_options or {})
        self.taskset, self.extra_flags, self.timeout = taskset, tuple(extra_flags), timeout
        self._run = run or subprocess.run
        self.adb = find_tool(adb, ADB_HINT) if run is None else adb
        binary = benchmark_binary or os.environ.get(BINARY_ENV)
        if not binary:
            raise RunnerUnavailable(f"benchmark_model is needed on the device: {BINARY_HINT}")
        self.benchmark_binary = Path(binary)
        if not self.benchmark_binary.is_file():
            raise RunnerUnavailable(f"benchmark_model not found at {self.benchmark_binary}: {BINARY_HINT}")
        self._binary_sha = _sha256(self.benchmark_binary)
        self._remote_binary = posixpath.join(self.device_dir, "benchmark_model")
        self._binary_pushed = False
        self._dir_made = False
        self._model: tuple[str, str] | None = None  # (content hash, remote path) of the model on the device
        self._environment: dict[str, Any] | None = None

    # ---- commands (argument lists) ----
    def adb_args(self, *args: str) -> list[str]:
        return [self.adb, *(["-s", self.serial] if self.serial else []), *args]

    def shell_args(self, argv: Sequence[str]) -> list[str]:
        """`adb shell` with one quoted command line: adb joins its arguments with spaces and the
        device's shell re-splits them, so each argument is quoted here."""
        return self.adb_args("shell", remote_command(argv))

    def delegate_flags(self) -> list[str]:
        flags = []
        if self.use_gpu:
            flags.append("--use_gpu=true")
        if self.use_nnapi:
            flags.append("--use_nnapi=true")
            if self.nnapi_accelerator:
                flags.append(f"--nnapi_accelerator_name={self.nnapi_accelerator}")
        if self.use_hexagon:
            flags.append("--use_hexagon=true")
            if self.hexagon_lib_path:
                flags.append(f"--hexagon_lib_path={self.hexagon_lib_path}")
        if not self.xnnpack:
            flags.append("--use_xnnpack=false")  # explicitly false: builtin kernels, no default XNNPACK
        if self.external_delegate:
            flags.append(f"--external_delegate_path={self.external_delegate}")
            if self.external_delegate_options:
                text = ";".join(f"{k}:{v}" for k, v in self.external_delegate_options.items())
                flags.append(f"--external_delegate_options={text}")
        return flags

    def benchmark_argv(self, remote_model: str, *, warmup: int, runs: int, min_seconds: float = 0.0,
                       signature: str | None = None) -> list[str]:
        """The device-side command line (before quoting)."""
        argv = ["taskset", self.taskset] if self.taskset else []
        argv += [self._remote_binary, f"--graph={remote_model}", f"--num_threads={self.threads}",
                 f"--warmup_runs={int(warmup)}", f"--num_runs={int(runs)}", f"--min_secs={float(min_seconds):g}"]
        if signature:
            argv.append(f"--signature_to_run_for={signature}")
        return argv + self.delegate_flags() + list(self.extra_flags)

    # ---- device operations ----
    def _adb(self, args: Sequence[str], what: str) -> str:
        result = run_tool(self._run, args, timeout=self.timeout, what=what)
        output = (result.stdout or "") + (result.stderr or "")
        if result.returncode != 0:
            raise self._device_error(output, what)
        return result.stdout or ""

    def _device_error(self, output: str, what: str) -> Exception:
        where = f"device {self.serial}" if self.serial else "the adb device"
        lowered = output.lower()
        if "no devices" in lowered or ("device '" in lowered and "not found" in lowered):
            return RunnerUnavailable(f"{what}: no Android device reachable ({tail(output, 2)}); connect one with USB "
                                     "debugging enabled, check `adb devices`, pass serial= if several are attached")
        if "unauthorized" in lowered:
            return RunnerUnavailable(f"{what}: {where} is unauthorized: accept the USB debugging prompt on the phone")
        if "more than one device" in lowered:
            return RunnerUnavailable(f"{what}: several devices attached; pass serial= (see `adb devices`)")
        if "not executable" in lowered or "exec format error" in lowered or "cannot execute" in lowered:
            return RunnerUnavailable(f"{what}: benchmark_model does not run on {where} ({tail(output, 2)}); use the "
                                     "build for its ABI (android_aarch64_benchmark_model for arm64-v8a, "
                                     "android_arm_benchmark_model for armeabi-v7a)")
        if "offline" in lowered:
            return RunnerUnavailable(f"{what}: {where} is offline; reconnect it (adb reconnect)")
        return RuntimeError(f"{what} failed on {where}: {tail(output)}")

    def _ensure_dir(self) -> None:
        if not self._dir_made:
            self._adb(self.shell_args(["mkdir", "-p", self.device_dir]), "creating the device directory")
            self._dir_made = True

    def _ensure_binary(self) -> None:
        if not self._binary_pushed:
            self._ensure_dir()
            self._adb(self.adb_args("push", str(self.benchmark_binary), self._remote_binary), "pushing benchmark_model")
            self._adb(self.shell_args(["chmod", "755", self._remote_binary]), "making benchmark_model executable")
            self._binary_pushed = True

    def _ensure_model(self, model: Path) -> str:
        """The model's path on the device, pushed under its content hash; the previous model is
        removed first, so at most one model at a time takes space on the device."""
        digest = _sha256(model)[:16]
        if self._model is not None and self._model[0] == digest:
            return self._model[1]
        self._ensure_dir()
        if self._model is not None:
            self._adb(self.shell_args(["rm", "-f", self._model[1]]), "removing the previous model")
            self._model = None
        remote = posixpath.join(self.device_dir, f"{digest}.tflite")
        self._adb(self.adb_args("push", str(model), remote), f"pushing {model.name}")
        self._model = (digest, remote)
        return remote

    # ---- Runner ----
    def time_model(self, model: Path, *, warmup: int, runs: int, signature: str | None = None) -> list[float]:
        raise NotImplementedError("benchmark_model prints no per-run times, only aggregates: use timing() "
                                  "(tdbnas.latency.measure.measure does)")

    def timing(self, model: Path, *, warmup: int, runs: int, min_seconds: float = 0.0, max_runs: int | None = None,
               signature: str | None = None) -> Timing:
        model = Path(model)
        if not model.is_file():
            raise FileNotFoundError(f"no TFLite model at {model}")
        self._ensure_binary()
        remote = self._ensure_model(model)
        argv = self.benchmark_argv(remote, warmup=warmup, runs=runs, min_seconds=min_seconds, signature=signature)
        result = run_tool(self._run, self.shell_args(argv), timeout=self.timeout, what="benchmark_model")
        output = (result.stdout or "") + "\n" + (result.stderr or "")
        try:
            parsed = parse_benchmark_output(output)
        except BenchmarkOutputError:
            if result.returncode != 0:
                raise self._device_error(output, f"benchmark_model on {model.name}") from None
            raise
        return parsed.timing()

    def environment(self) -> dict[str, Any]:
        if self._environment is None:
            props = parse_getprop(self._adb(self.adb_args("shell", "getprop"), "reading device properties"))
            env: dict[str, Any] = {}
            for name, keys in PROPS.items():
                value = next((props[k] for k in keys if props.get(k)), None)
                if value is not None:
                    env[name] = value
            cpu = self._adb(self.adb_args("shell", "cat /sys/devices/system/cpu/cpu[0-9]*/cpufreq/scaling_governor "
                                          "2>/dev/null; echo; cat /sys/devices/system/cpu/possible"),
                            "reading CPU governors")
            governors = [line.strip() for line in cpu.splitlines() if line.strip() and not line[0].isdigit()]
            if governors:
                env["governor"] = governors[0] if len(set(governors)) == 1 else ",".join(governors)
            possible = [line.strip() for line in cpu.splitlines() if line.strip()[:1].isdigit()]
            if possible:
                env["cores"] = _count_cpus(possible[-1])
            backend = "+".join(self._backends()) or "cpu"
            env.update({
                "runtime_version": f"benchmark_model sha256:{self._binary_sha[:12]} {backend}",
                "runtime": "benchmark_model", "binary_sha256": self._binary_sha,
                "threads": self.threads, "delegate": "+".join(self._backends()[1:]) or None,
                "cpu": env.get("soc", "unknown"), "serial": self.serial or props.get("ro.serialno"),
                "taskset": self.taskset,
            })
            self._environment = env
        return dict(self._environment)

    def _backends(self) -> list[str]:
        names = ["xnnpack"] if self.xnnpack else ["builtin"]
        if self.use_gpu:
            names.append("gpu")
        if self.use_nnapi:
            names.append(f"nnapi:{self.nnapi_accelerator}" if self.nnapi_accelerator else "nnapi")
        if self.use_hexagon:
            names.append("hexagon")
        if self.external_delegate:
            names.append(posixpath.basename(self.external_delegate))
        return names

    def close(self) -> None:
        """Remove what this runner pushed (its files only; the directory only if it is left empty)."""
        if not self._dir_made:
            return
        files = [self._remote_binary] if self._binary_pushed else []
        if self._model is not None:
            files.append(self._model[1])
        try:
            if files:
                self._adb(self.shell_args(["rm", "-f", *files]), "cleaning up")
            self._adb(self.adb_args("shell", remote_command(["rmdir", self.device_dir]) + " 2>/dev/null; true"),
                      "cleaning up")
        except (RuntimeError, RunnerUnavailable):
            pass  # a device unplugged meanwhile keeps its temporary files; nothing to fail for
        self._binary_pushed = self._dir_made = False
        self._model = None


def _count_cpus(text: str) -> int | None:
    """`/sys/devices/system/cpu/possible` ("0-7", "0-3,6") as a CPU count."""
    count = 0
    for part in text.split(","):
        low, _, high = part.strip().partition("-")
        if not low.isdigit() or (high and not high.isdigit()):
            return None
        count += int(high) - int(low) + 1 if high else 1
    return count
