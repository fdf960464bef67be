"""Shared by the benchmark scripts: machine info, robust summaries, atomic result files.

Every result file records the machine and the exact command that produced it, so numbers in
README and issue notes can be traced and re-run. This machine is shared and noisy: compare
ratios measured in one run, keep the raw samples, report medians.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def machine_info() -> dict:
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    for package in ("tdbnas", "torch", "numpy", "tensorflow-cpu", "ai-edge-litert", "onnxruntime"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[package] = metadata.version(package)
    governor = None
    with contextlib.suppress(OSError):
        governor = Path("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor").read_text().strip()
    return {"cpu": cpu, "cores": os.cpu_count(), "governor": governor, "platform": platform.platform(),
            "python": platform.python_version(), "versions": versions,
            "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}


def command_line() -> str:
    return "python " + " ".join(shlex.quote(a) for a in [os.path.relpath(sys.argv[0])] + sys.argv[1:])


def summary(samples: list[float]) -> dict:
    ordered = sorted(samples)
    return {"median": statistics.median(ordered), "min": ordered[0], "max": ordered[-1], "n": len(ordered),
            "samples": samples}


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def write_results(name: str, record: dict, markdown: str) -> tuple[Path, Path]:
    """`results/<name>.json` (machine, command, data) and `results/<name>.md` (the same, readable)."""
    record = {"benchmark": name, "command": command_line(), "machine": machine_info(), **record}
    json_path, md_path = RESULTS / f"{name}.json", RESULTS / f"{name}.md"
    write_atomic(json_path, json.dumps(record, indent=2) + "\n")
    machine = record["machine"]
    header = (f"# {name}\n\ncommand: `{record['command']}`  \nmachine: {machine['cpu']}, {machine['cores']} cores, "
              f"Python {machine['python']}, {machine['date']}\n\n")
    write_atomic(md_path, header + markdown.rstrip() + "\n")
    return json_path, md_path
