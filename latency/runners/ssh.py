"""Time models on a Linux board over ssh with the device agent (`tdbnas.latency.device_agent`).

The runner copies the agent (one file: numpy and a TFLite interpreter are all it needs on the
board) and each model with scp, runs `python3 device_agent.py --model ... --warmup ... --runs ...`
over ssh and parses the one JSON line it prints: per-run samples, the runtime (name and
version) and the board's environment. A Coral Dev Board times on the Edge TPU with
`delegate="libedgetpu.so.1"` (models compiled with `edgetpu_compiler`).

ssh runs non-interactively (`BatchMode=yes`): set up key-based login first (`ssh-copy-id`).
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tdbnas.latency import device_agent
from tdbnas.latency.runners._command import RunFn, find_tool, remote_command, run_tool, tail
from tdbnas.latency.runners.base import Runner, RunnerUnavailable, Timing

SSH_HINT = "install an OpenSSH client (apt-get install openssh-client)"
#: remote paths are put on scp command lines, which the remote side may parse with its shell
#: (legacy scp) or not (SFTP mode): only characters that mean the same in both are allowed.
SAFE_PATH = re.compile(r"^[A-Za-z0-9_./~-]+$")
EXIT_SSH_FAILED = 255


def parse_agent_output(stdout: str) -> dict[str, Any]:
    """The agent's JSON record: the last stdout line that is a JSON object with its marker (login
    banners or interpreter messages may come first). Raises ValueError when there is none."""
    for line in reversed((stdout or "").splitlines()):
        line = line.strip()
        if line.startswith("{") and device_agent.RESULT_KEY in line:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and device_agent.RESULT_KEY in record:
                return record
    raise ValueError(f"no result line from the device agent in: {tail(stdout)}")


class SshRunner(Runner):
    """The device agent on a Linux board, reached with ssh/scp."""

    name = "ssh"

    def __init__(self, host: str, user: str | None = None, port: int | None = None, python: str = "python3",
                 remote_dir: str = "/tmp/tdbnas-agent", threads: int = 1, delegate: str | None = None, *,
                 delegate_options: Mapping[str, Any] | None = None, xnnpack: bool = True,
                 interpreter: str | None = None, ssh: str = "ssh", scp: str = "scp",
                 ssh_options: Sequence[str] = (), connect_timeout: int = 10, timeout: float = 600.0,
                 run: RunFn | None = None) -> None:
        import subprocess

        if "@" in host and user is None:
            user, host = host.split("@", 1)
        if not host:
            raise ValueError("SshRunner needs a host")
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        if not SAFE_PATH.match(remote_dir):
            raise ValueError(f"remote_dir {remote_dir!r} may only contain letters, digits and _ . / ~ -")
        self.host, self.user, self.port, self.python = host, user, port, python
        self.remote_dir = remote_dir.rstrip("/")
        self.threads, self.delegate, self.xnnpack = int(threads), delegate, xnnpack
        self.delegate_options = dict(delegate_options or {})
        self.interpreter, self.timeout = interpreter, timeout
        self.ssh_options = ["-o", "BatchMode=yes", "-o", f"ConnectTimeout={int(connect_timeout)}", *ssh_options]
        self._run = run or subprocess.run
        self.ssh = find_tool(ssh, SSH_HINT) if run is None else ssh
        self.scp = find_tool(scp, SSH_HINT) if run is None else scp
        self._remote_agent = posixpath.join(self.remote_dir, "device_agent.py")
        self._agent_copied = False
        self._model: tuple[str, str] | None = None
        self._environment: dict[str, Any] | None = None

    @property
    def destination(self) -> str:
        return f"{self.user}@{self.host}" if self.user else self.host

    # ---- commands (argument lists) ----
    def ssh_args(self, argv: Sequence[str]) -> list[str]:
        """ssh with one quoted remote command line (ssh hands it to the remote shell)."""
        port = ["-p", str(self.port)] if self.port else []
        return [self.ssh, *self.ssh_options, *port, self.destination, remote_command(argv)]

    def scp_args(self, local: str | os.PathLike[str], remote: str) -> list[str]:
        if not SAFE_PATH.match(remote):
            raise ValueError(f"unsafe remote path {remote!r}")
        port = ["-P", str(self.port)] if self.port else []
        return [self.scp, "-q", *self.ssh_options, *port, os.fspath(local), f"{self.destination}:{remote}"]

    def agent_argv(self, remote_model: str | None, *, warmup: int = 0, runs: int = 0, min_seconds: float = 0.0,
                   max_runs: int | None = None, signature: str | None = None) -> list[str]:
        """The board-side command line (before quoting); `remote_model=None` asks for --describe."""
        argv = [self.python, self._remote_agent]
        if self.interpreter:
            argv += ["--interpreter", self.interpreter]
        if remote_model is None:
            return argv + ["--describe"]
        argv += ["--model", remote_model, "--warmup", str(int(warmup)), "--runs", str(int(runs)),
                 "--threads", str(self.threads)]
        if min_seconds:
            argv += ["--min-seconds", f"{float(min_seconds):g}"]
        if max_runs:
            argv += ["--max-runs", str(int(max_runs))]
        if signature:
            argv += ["--signature", signature]
        if not self.xnnpack:
            argv.append("--no-xnnpack")
        if self.delegate:
            argv += ["--delegate", self.delegate]
            for key, value in self.delegate_options.items():
                argv += ["--delegate-option", f"{key}={value}"]
        return argv

    # ---- board operations ----
    def _call(self, args: Sequence[str], what: str) -> tuple[int, str, str]:
        result = run_tool(self._run, args, timeout=self.timeout, what=what)
        stdout, stderr = result.stdout or "", result.stderr or ""
        if result.returncode == EXIT_SSH_FAILED:
            raise RunnerUnavailable(f"cannot reach {self.destination} over ssh ({what}): {tail(stderr, 2)}; check the "
                                    "host, the port and key-based login (ssh-copy-id)")
        return result.returncode, stdout, stderr

    def _checked(self, args: Sequence[str], what: str) -> str:
        status, stdout, stderr = self._call(args, what)
        if status != 0:
            raise RuntimeError(f"{what} failed on {self.destination}: {tail(stderr or stdout)}")
        return stdout

    def _ensure_agent(self) -> None:
        if not self._agent_copied:
            self._checked(self.ssh_args(["mkdir", "-p", self.remote_dir]), "creating the remote directory")
            self._checked(self.scp_args(device_agent.__file__, self._remote_agent), "copying the device agent")
            self._agent_copied = True

    def _ensure_model(self, model: Path) -> str:
        digest = hashlib.sha256(model.read_bytes()).hexdigest()[:16]
        if self._model is not None and self._model[0] == digest:
            return self._model[1]
        self._ensure_agent()
        if self._model is not None:
            self._checked(self.ssh_args(["rm", "-f", self._model[1]]), "removing the previous model")
            self._model = None
        remote = posixpath.join(self.remote_dir, f"{digest}.tflite")
        self._checked(self.scp_args(model, remote), f"copying {model.name}")
        self._model = (digest, remote)
        return remote

    def _agent(self, argv: Sequence[str], what: str) -> dict[str, Any]:
        status, stdout, stderr = self._call(self.ssh_args(argv), what)
        try:
            record = parse_agent_output(stdout)
        except ValueError:
            text = stderr + stdout
            if status == 127 or "not found" in text and self.python in text:
                raise RunnerUnavailable(f"{self.python} not found on {self.destination}: install Python 3 and numpy "
                                        "there, or pass python=/path/to/python3") from None
            raise RuntimeError(f"{what} on {self.destination} failed (exit {status}): {tail(text)}") from None
        if "error" in record:
            message = f"{what} on {self.destination}: {record['error']}"
            raise RunnerUnavailable(message) if record.get("unavailable") else RuntimeError(message)
        return record

    # ---- Runner ----
    def time_model(self, model: Path, *, warmup: int, runs: int, signature: str | None = None) -> list[float]:
        return list(self.timing(model, warmup=warmup, runs=runs, signature=signature).samples_ms)

    def timing(self, model: Path, *, warmup: int, runs: int, min_seconds: float = 0.0, max_runs: int | None = None,
               signature: str | None = None) -> Timing:
        model = Path(model)
        if not model.is_file():
            raise FileNotFoundError(f"no TFLite model at {model}")
        remote = self._ensure_model(model)
        record = self._agent(self.agent_argv(remote, warmup=warmup, runs=runs, min_seconds=min_seconds,
                                             max_runs=max_runs, signature=signature), f"timing {model.name}")
        return timing_from_record(record)

    def environment(self) -> dict[str, Any]:
        if self._environment is None:
            self._ensure_agent()
            record = self._agent(self.agent_argv(None), "describing the board")
            self._environment = environment_from_record(record, threads=self.threads, xnnpack=self.xnnpack,
                                                        delegate=self.delegate, host=self.destination)
        return dict(self._environment)

    def close(self) -> None:
        """Remove the agent and the model this runner copied, and the directory if left empty."""
        files = ([self._remote_agent] if self._agent_copied else []) + ([self._model[1]] if self._model else [])
        if not files:
            return
        try:
            self._call(self.ssh_args(["rm", "-f", *files]), "cleaning up")
            self._call(self.ssh_args(["rmdir", self.remote_dir]), "cleaning up")
        except (RuntimeError, RunnerUnavailable):
            pass  # an unreachable board keeps its temporary files; nothing to fail for
        self._agent_copied, self._model = False, None


def timing_from_record(record: Mapping[str, Any]) -> Timing:
    samples = record.get("samples_ms")
    if not isinstance(samples, list) or not samples:
        raise RuntimeError(f"the device agent returned no samples: {str(dict(record))[:200]}")
    details = {"invoke": record.get("invoke"), "conditions": record.get("conditions", {})}
    return Timing(tuple(float(v) for v in samples), details=details)


def environment_from_record(record: Mapping[str, Any], *, threads: int, xnnpack: bool, delegate: str | None,
                            host: str) -> dict[str, Any]:
    """The runner environment from the agent's --describe record (same fields as the local runner)."""
    runtime = dict(record.get("runtime") or {})
    if not runtime.get("name"):
        raise RuntimeError(f"the device agent did not report its runtime: {str(dict(record))[:200]}")
    from tdbnas.latency.runners.local import backend_label

    board = dict(record.get("environment") or {})
    version = f"{runtime['name']} {runtime.get('version', 'unknown')} {backend_label(xnnpack, delegate)}"
    return {**board, "runtime_version": version, "runtime": runtime["name"], "version": runtime.get("version"),
            "threads": threads, "xnnpack": xnnpack, "delegate": posixpath.basename(delegate) if delegate else None,
            "host": host}
