"""Time models with this machine's TFLite interpreter (LiteRT, XNNPACK by default).

The interpreter comes from `tdbnas.export.litert` (the same loader export verification uses) and
the timing loop from `tdbnas.latency.device_agent` (the same loop the ssh runner runs on a
board), so "local" and "ssh" numbers differ only by the machine.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tdbnas.latency import device_agent
from tdbnas.latency.runners.base import Runner, RunnerUnavailable, Timing


def backend_label(xnnpack: bool, delegate: str | os.PathLike[str] | None) -> str:
    """`xnnpack`, `builtin`, or either plus `+<delegate library>`: the kernel set that ran."""
    label = "xnnpack" if xnnpack else "builtin"
    return f"{label}+{Path(delegate).name}" if delegate else label


class LocalRunner(Runner):
    """Times a `.tflite` in this process.

    Each `timing` call (one attempt of the protocol) builds a fresh interpreter (not timed),
    sets random inputs of the right dtype and shape once, and times `invoke` alone. An external
    delegate is loaded once and reused by the successive interpreters, one at a time.
    """

    name = "local"

    def __init__(self, threads: int = 1, xnnpack: bool = True, delegate: str | os.PathLike[str] | None = None,
                 delegate_options: Mapping[str, Any] | None = None, *, interpreter: str | None = None,
                 seed: int = 0) -> None:
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        self.threads = int(threads)
        self.xnnpack = bool(xnnpack)
        self.delegate = None if delegate is None else os.fspath(delegate)
        self.delegate_options = dict(delegate_options or {})
        self.seed = seed
        from tdbnas.export import litert

        try:
            self._runtime = litert.interpreter_runtime(interpreter)
        except litert.InterpreterUnavailable as exc:
            raise RunnerUnavailable(f"the local runner needs a TFLite interpreter: {exc}") from None
        self._delegate_obj: Any = None
        self._environment: dict[str, Any] | None = None

    def _delegate(self) -> Any:
        """The delegate, loaded once: loading libedgetpu opens the device, which is slow."""
        if self.delegate is not None and self._delegate_obj is None:
            from tdbnas.export import litert

            try:
                self._delegate_obj = litert.load_delegate(self.delegate, self.delegate_options, runtime=self._runtime)
            except litert.InterpreterUnavailable as exc:
                raise RunnerUnavailable(str(exc)) from None
        return self._delegate_obj

    def _interpreter(self, model: Path) -> Any:
        from tdbnas.export import litert

        delegate = self._delegate()
        try:
            return litert.make_interpreter(model, threads=self.threads, xnnpack=self.xnnpack, runtime=self._runtime,
                                           delegates=() if delegate is None else (delegate,))
        except litert.InterpreterUnavailable as exc:
            raise RunnerUnavailable(str(exc)) from None

    def time_model(self, model: Path, *, warmup: int, runs: int, signature: str | None = None) -> list[float]:
        return list(self.timing(model, warmup=warmup, runs=runs, signature=signature).samples_ms)

    def timing(self, model: Path, *, warmup: int, runs: int, min_seconds: float = 0.0, max_runs: int | None = None,
               signature: str | None = None) -> Timing:
        model = Path(model)
        if not model.is_file():
            raise FileNotFoundError(f"no TFLite model at {model}")
        interpreter = self._interpreter(model)
        invoke, how = device_agent.prepare_invoke(interpreter, signature, self.seed)
        before = device_agent.conditions()
        samples = device_agent.timed_runs(invoke, warmup, runs, min_seconds, max_runs)
        return Timing(tuple(samples), details={"invoke": how, "conditions": before})

    def environment(self) -> dict[str, Any]:
        if self._environment is None:
            host = device_agent.host_environment()
            env: dict[str, Any] = {
                "runtime_version": f"{self._runtime.describe()} {backend_label(self.xnnpack, self.delegate)}",
                "runtime": self._runtime.name, "version": self._runtime.version,
                "threads": self.threads, "xnnpack": self.xnnpack,
                "delegate": None if self.delegate is None else Path(self.delegate).name,
                "cpu": host.pop("cpu"), "machine": host.pop("machine"), **host,
            }
            if self.delegate_options:
                env["delegate_options"] = {str(k): str(v) for k, v in sorted(self.delegate_options.items())}
            self._environment = env
        return dict(self._environment)

    def close(self) -> None:
        self._delegate_obj = None
