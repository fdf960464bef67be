"""Running the host-side tools of the remote runners (adb, ssh, scp): argument lists only, never a
shell string; a missing tool or a hung device becomes a one-line error instead of a traceback."""

from __future__ import annotations

import shlex
import shutil
import subprocess
from collections.abc import Callable, Sequence
from typing import Any

from tdbnas.latency.runners.base import RunnerUnavailable

#: subprocess.run's signature, injectable so tests can check the exact argument lists.
RunFn = Callable[..., Any]


def find_tool(name: str, how_to_get: str) -> str:
    """The absolute path of `name` on PATH (or `name` itself when it is a path), else
    `RunnerUnavailable` saying how to get it."""
    found = shutil.which(name)
    if found is None:
        raise RunnerUnavailable(f"{name} not found on PATH: {how_to_get}")
    return found


def remote_command(argv: Sequence[str]) -> str:
    """One command line for a remote shell (`adb shell`, `ssh host`), every argument quoted."""
    return shlex.join(str(a) for a in argv)


def run_tool(run: RunFn, argv: Sequence[str], *, timeout: float, what: str) -> subprocess.CompletedProcess:
    """Run `argv` (a list), capture text output, never raise on a non-zero exit status: callers
    read the status and the output, which say more than a CalledProcessError would."""
    try:
        return run(list(argv), capture_output=True, text=True, timeout=timeout, check=False)
    except FileNotFoundError:
        raise RunnerUnavailable(f"{argv[0]} not found ({what})") from None
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"{what} did not finish within {timeout:g} s: {remote_command(argv)}") from None


def tail(text: str | None, lines: int = 6) -> str:
    """The last lines of a tool's output, for error messages."""
    kept = [line.rstrip() for line in (text or "").strip().splitlines() if line.strip()]
    return " | ".join(kept[-lines:]) if kept else "(no output)"
