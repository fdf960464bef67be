"""Runners: the local LiteRT runner on real int8 models, the device agent as a real subprocess, and the
adb / ssh runners' exact command lines (a fake `subprocess.run`) and parsing of real recorded
`benchmark_model` outputs (tests/latency/data/README.md says where they come from).

The int8 models are built with TensorFlow the first time and cached in pytest's cache folder
(`.pytest_cache/d/tdbnas_tflite_models`), so only the first run pays TensorFlow's start-up.
"""

import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tdbnas.latency import device_agent
from tdbnas.latency.measure import MeasureProtocol, measure
from tdbnas.latency.runners.adb import (
    BENCHMARK_MODEL_URL,
    AdbRunner,
    BenchmarkOutputError,
    parse_benchmark_output,
    parse_getprop,
)
from tdbnas.latency.runners.base import RunnerUnavailable
from tdbnas.latency.runners.ssh import SshRunner, parse_agent_output

DATA = Path(__file__).parent / "data"
FIXTURES = {name: (DATA / f"{name}.txt").read_text() for name in
            ("benchmark_model_android_cpu_1thread", "benchmark_model_android_gpu", "benchmark_model_logcat_nnapi")}
QUICK = MeasureProtocol(warmup=2, runs=20, min_seconds=0.0, max_spread=1.0)


# ---- models (TensorFlow, cached) -------------------------------------------------------------
def _build(paths):
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    tf = pytest.importorskip("tensorflow")
    import numpy as np

    x = inputs = tf.keras.Input((16, 16, 8), batch_size=1)
    x = tf.keras.layers.Conv2D(16, 1, activation="relu")(x)
    x = tf.keras.layers.DepthwiseConv2D(3, padding="same", activation="relu")(x)
    converter = tf.lite.TFLiteConverter.from_keras_model(tf.keras.Model(inputs, tf.keras.layers.Conv2D(8, 1)(x)))
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    rng = np.random.default_rng(0)
    converter.representative_dataset = lambda: ([rng.uniform(-1, 1, (1, 16, 16, 8)).astype(np.float32)]
                                                for _ in range(4))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = converter.inference_output_type = tf.int8
    paths["int8"].write_bytes(converter.convert())

    class TwoSizes(tf.Module):
        def __init__(self):
            self.w = tf.Variable(tf.random.stateless_normal((3, 3, 8, 8), seed=(1, 2)))

        @tf.function(input_signature=[tf.TensorSpec((1, 8, 8, 8), tf.float32)])
        def small(self, x):
            return {"y": tf.nn.conv2d(x, self.w, 1, "SAME")}

        @tf.function(input_signature=[tf.TensorSpec((1, 64, 64, 8), tf.float32)])
        def large(self, x):
            return {"y": tf.nn.conv2d(x, self.w, 1, "SAME")}

    module = TwoSizes()
    functions = [module.small.get_concrete_function(), module.large.get_concrete_function()]
    paths["signatures"].write_bytes(tf.lite.TFLiteConverter.from_concrete_functions(functions, module).convert())


@pytest.fixture(scope="module")
def models(request, tmp_path_factory):
    pytest.importorskip("ai_edge_litert")
    cache = getattr(request.config, "cache", None)
    folder = Path(cache.mkdir("tdbnas_tflite_models")) if cache is not None else tmp_path_factory.mktemp("tflite")
    paths = {"int8": folder / "tiny_int8.tflite", "signatures": folder / "two_signatures.tflite"}
    if not all(p.exists() and p.stat().st_size for p in paths.values()):
        _build(paths)
    return paths


# ---- export.litert ---------------------------------------------------------------------------
@pytest.mark.tflite
def test_litert_runtime_and_interpreter(models):
    from tdbnas.export import litert

    info = litert.runtime_info()
    assert info["name"] == "ai-edge-litert" and info["version"][0].isdigit()
    interpreter = litert.make_interpreter(models["int8"], threads=1)
    assert interpreter.get_input_details()[0]["dtype"].__name__ == "int8"
    assert litert.make_interpreter(models["int8"].read_bytes(), xnnpack=False) is not None
    with pytest.raises(FileNotFoundError):
        litert.make_interpreter(models["int8"].with_name("absent.tflite"))


def test_litert_says_what_to_install(monkeypatch, tmp_path):
    from tdbnas.export import litert

    monkeypatch.setattr(litert, "INTERPRETER_MODULES", (("tdbnas_no_such.interpreter", "no-such"),))
    monkeypatch.setattr(litert, "_CACHE", {})
    with pytest.raises(litert.InterpreterUnavailable, match="pip install ai-edge-litert"):
        litert.interpreter_runtime()
    with pytest.raises(ValueError, match="unknown TFLite interpreter"):
        litert.interpreter_runtime("tflite-nonsense")


@pytest.mark.tflite
def test_missing_delegate_library_names_it_and_the_fix(models):
    pytest.importorskip("ai_edge_litert")
    from tdbnas.export import litert
    from tdbnas.latency.runners.local import LocalRunner

    with pytest.raises(litert.InterpreterUnavailable, match=r"libedgetpu\.so\.1.*libedgetpu1-std"):
        litert.load_delegate("libedgetpu.so.1", {"device": "usb:0"})
    with pytest.raises(RunnerUnavailable, match="libedgetpu"):
        LocalRunner(delegate="libedgetpu.so.1").time_model(models["int8"], warmup=1, runs=1)


# ---- local runner ----------------------------------------------------------------------------
@pytest.mark.tflite
def test_local_runner_times_an_int8_model(models):
    from tdbnas.latency.runners.local import LocalRunner

    runner = LocalRunner(threads=1)
    samples = runner.time_model(models["int8"], warmup=3, runs=25)
    assert len(samples) == 25 and all(0 < s < 100 for s in samples)
    timing = runner.timing(models["int8"], warmup=1, runs=5, min_seconds=0.05, max_runs=100000)
    assert sum(timing.samples_ms) >= 50 and timing.details["invoke"] == "invoke"
    result = measure(runner, models["int8"], MeasureProtocol(runs=30, min_seconds=0.02))
    assert result.value_ms == min(result.samples_ms) and result.statistic == "min"
    assert result.spread is not None and len(result.attempts) >= 2


@pytest.mark.tflite
def test_local_runner_environment(models):
    from tdbnas.latency.profiling import runtime_version_of
    from tdbnas.latency.runners.local import LocalRunner

    env = LocalRunner(threads=2).environment()
    assert runtime_version_of(env).startswith("ai-edge-litert ") and env["runtime_version"].endswith(" xnnpack")
    assert env["threads"] == 2 and env["delegate"] is None and env["cpu"] and env["machine"] and env["cores"] >= 1
    assert LocalRunner(xnnpack=False).environment()["runtime_version"].endswith(" builtin")
    json.dumps(env)


@pytest.mark.tflite
def test_local_runner_runs_the_named_signature(models):
    from tdbnas.latency.runners.local import LocalRunner

    runner = LocalRunner()
    small = runner.timing(models["signatures"], warmup=2, runs=30, signature="small")
    large = runner.timing(models["signatures"], warmup=2, runs=30, signature="large")
    assert small.details["invoke"] in ("subgraph", "signature_call")
    assert min(large.samples_ms) > 3 * min(small.samples_ms)  # 64x more pixels: a different subgraph ran
    with pytest.raises(ValueError, match="signatures: large, small"):
        runner.time_model(models["signatures"], warmup=0, runs=1, signature="medium")


# ---- device agent (a real subprocess) --------------------------------------------------------
def _agent(*args):
    return subprocess.run([sys.executable, device_agent.__file__, *args], capture_output=True, text=True, timeout=120)


@pytest.mark.tflite
def test_device_agent_prints_the_json_the_ssh_runner_parses(models):
    from tdbnas.latency.runners.ssh import environment_from_record, timing_from_record

    done = _agent("--model", str(models["int8"]), "--warmup", "2", "--runs", "7", "--threads", "1")
    assert done.returncode == 0, done.stderr
    record = parse_agent_output(done.stdout)
    timing = timing_from_record(record)
    assert len(timing.samples_ms) == 7 and all(s > 0 for s in timing.samples_ms)
    assert record["runtime"]["name"] == "ai-edge-litert" and record["environment"]["cores"] >= 1

    described = parse_agent_output(_agent("--describe").stdout)
    env = environment_from_record(described, threads=1, xnnpack=True, delegate=None, host="board")
    assert env["runtime_version"].startswith("ai-edge-litert ") and env["host"] == "board"


def test_device_agent_reports_what_is_missing(tmp_path):
    done = _agent("--model", str(tmp_path / "absent.tflite"), "--runs", "3")
    record = parse_agent_output(done.stdout)
    assert done.returncode == device_agent.EXIT_UNAVAILABLE and record["unavailable"] is True
    assert "no model file" in record["error"] or "no TFLite interpreter" in record["error"]
    assert "Traceback" not in done.stdout + done.stderr


# ---- benchmark_model output (real recordings) ------------------------------------------------
def test_parse_recorded_cpu_output():
    parsed = parse_benchmark_output(FIXTURES["benchmark_model_android_cpu_1thread"])
    timing = parsed.timing()
    assert timing.samples_ms == () and timing.count == 1000
    assert timing.summary_ms == pytest.approx({"min": 1.012, "max": 1.190, "avg": 1.03966, "std": 0.022})
    assert parsed.warmup_us["count"] == 478
    assert timing.details["init_ms"] == pytest.approx(17.851)
    assert timing.details["first_inference_ms"] == pytest.approx(2.104)


def test_parse_recorded_gpu_output():
    timing = parse_benchmark_output(FIXTURES["benchmark_model_android_gpu"]).timing()
    assert timing.count == 50 and timing.summary_ms["min"] == pytest.approx(113.737)
    assert timing.details["warmup_runs"] == 4
    assert timing.details["delegation"] == ["Explicitly applied GPU delegate, and the model graph will be "
                                            "completely executed by the delegate."]


def test_parse_recorded_logcat_output():
    timing = parse_benchmark_output(FIXTURES["benchmark_model_logcat_nnapi"]).timing()
    assert timing.count == 75 and timing.summary_ms["min"] == pytest.approx(11.787)
    assert timing.summary_ms["avg"] == pytest.approx(12.1676)
    assert "partially executed" in timing.details["delegation"][0]


def test_parse_percentiles_all_same_and_op_profiling():
    # Format of newer builds (StatWithPercentiles::OutputToStream in xla/tsl/util/stats_calculator.h).
    text = ("INFO: Running benchmark for at least 1 iterations and at least 0.5 seconds but terminate if exceeding "
            "150 seconds.\nINFO: count=1 curr=3512391\n\n"
            "INFO: Running benchmark for at least 50 iterations and at least 1 seconds but terminate if exceeding "
            "150 seconds.\nINFO: count=50 first=2990275 curr=2913402 min=2727568 max=3189954 avg=2.95034e+06 "
            "std=109798 p5=2744000 median=2950000 p95=3100000\n"
            "Timings (microseconds): count=50 first=2989660 curr=2912978 min=1 max=3189476 avg=2.9499e+06 std=1\n")
    parsed = parse_benchmark_output(text)
    assert parsed.warmup_us == {"count": 1, "curr": 3512391, "min": 3512391, "max": 3512391, "avg": 3512391,
                                "std": 0.0}
    summary = parsed.timing().summary_ms
    assert summary["min"] == pytest.approx(2727.568) and summary["avg"] == pytest.approx(2950.34)
    assert summary["median"] == pytest.approx(2950.0) and summary["p5"] == pytest.approx(2744.0)


def test_parse_failed_run():
    with pytest.raises(BenchmarkOutputError, match="Please specify the name"):
        parse_benchmark_output("STARTING!\nERROR: Please specify the name of your TF Lite input file with --graph\n")


def test_parse_getprop():
    props = parse_getprop("[ro.product.model]: [Pixel 4]\n[ro.build.version.release]: [13]\n[empty]: []\n")
    assert props == {"ro.product.model": "Pixel 4", "ro.build.version.release": "13", "empty": ""}


# ---- adb runner (fake subprocess.run) --------------------------------------------------------
class FakeAdb:
    """Records argument lists; answers like adb and benchmark_model would."""

    def __init__(self, benchmark_output=FIXTURES["benchmark_model_android_cpu_1thread"], fail=None):
        self.calls, self.benchmark_output, self.fail = [], benchmark_output, fail

    def __call__(self, argv, **kwargs):
        assert isinstance(argv, list) and all(isinstance(a, str) for a in argv)
        assert kwargs.get("timeout") and kwargs.get("capture_output") and "shell" not in kwargs
        self.calls.append(argv)
        if self.fail:
            return subprocess.CompletedProcess(argv, 1, "", self.fail)
        command = argv[-1]
        if argv[-2] == "shell" and command == "getprop":
            out = ("[ro.product.model]: [Pixel 4]\n[ro.product.manufacturer]: [Google]\n"
                   "[ro.build.version.release]: [13]\n[ro.build.version.sdk]: [33]\n[ro.board.platform]: [msmnile]\n"
                   "[ro.product.cpu.abi]: [arm64-v8a]\n[ro.serialno]: [9A281FFAZ0061Y]\n")
        elif argv[-2] == "shell" and "scaling_governor" in command:
            out = "schedutil\nschedutil\nperformance\n\n0-7\n"
        elif argv[-2] == "shell" and "--graph=" in command:
            out = self.benchmark_output
        else:
            out = ""
        return subprocess.CompletedProcess(argv, 0, out, "")


@pytest.fixture
def binary(tmp_path):
    path = tmp_path / "android_aarch64_benchmark_model"
    path.write_bytes(b"\x7fELF fake benchmark_model")
    return path


@pytest.fixture
def model(tmp_path):
    path = tmp_path / "unit 7.tflite"  # a space: the device path is a hash, not this name
    path.write_bytes(b"TFL3 fake model")
    return path


def test_adb_command_lines(binary, model):
    fake = FakeAdb()
    runner = AdbRunner(serial="R58M", benchmark_binary=binary, threads=2, run=fake)
    timing = runner.timing(model, warmup=10, runs=50, min_seconds=0.5, signature="unit_7")
    remote = fake.calls[3][-1]
    assert remote.startswith("/data/local/tmp/tdbnas/") and remote.endswith(".tflite") and " " not in remote
    assert fake.calls == [
        ["adb", "-s", "R58M", "shell", "mkdir -p /data/local/tmp/tdbnas"],
        ["adb", "-s", "R58M", "push", str(binary), "/data/local/tmp/tdbnas/benchmark_model"],
        ["adb", "-s", "R58M", "shell", "chmod 755 /data/local/tmp/tdbnas/benchmark_model"],
        ["adb", "-s", "R58M", "push", str(model), remote],
        ["adb", "-s", "R58M", "shell", f"/data/local/tmp/tdbnas/benchmark_model --graph={remote} --num_threads=2 "
                                       "--warmup_runs=10 --num_runs=50 --min_secs=0.5 --signature_to_run_for=unit_7"],
    ]
    assert timing.summary_ms["min"] == pytest.approx(1.012) and timing.count == 1000
    runner.timing(model, warmup=1, runs=5)  # same model: no second push
    assert [c[-1] for c in fake.calls[5:]] == ["/data/local/tmp/tdbnas/benchmark_model --graph=" + remote +
                                              " --num_threads=2 --warmup_runs=1 --num_runs=5 --min_secs=0"]
    runner.close()
    assert fake.calls[-2] == ["adb", "-s", "R58M", "shell", f"rm -f /data/local/tmp/tdbnas/benchmark_model {remote}"]
    assert fake.calls[-1] == ["adb", "-s", "R58M", "shell", "rmdir /data/local/tmp/tdbnas 2>/dev/null; true"]


def test_adb_quotes_remote_arguments(binary, model):
    fake = FakeAdb()
    runner = AdbRunner(benchmark_binary=binary, run=fake, taskset="f0", device_dir="/data/local/tmp/my dir",
                       external_delegate="/data/local/tmp/libQnnTFLiteDelegate.so",
                       external_delegate_options={"backend_type": "htp",
                                                  "library_path": "/data/local/tmp/libQnnHtp.so"})
    evil = "x; rm -rf /sdcard"
    runner.timing(model, warmup=1, runs=2, signature=evil)
    command = fake.calls[-1][-1]
    assert fake.calls[-1][:2] == ["adb", "shell"]  # no serial: adb picks the only device
    assert shlex.split(command) == runner.benchmark_argv(fake.calls[-2][-1], warmup=1, runs=2, signature=evil)
    assert shlex.split(command)[:3] == ["taskset", "f0", "/data/local/tmp/my dir/benchmark_model"]
    assert "--external_delegate_options=backend_type:htp;library_path:/data/local/tmp/libQnnHtp.so" in \
        shlex.split(command)


def test_adb_delegate_flags(binary):
    runner = AdbRunner(benchmark_binary=binary, run=FakeAdb(), use_gpu=True, use_nnapi=True,
                       nnapi_accelerator="qti-dsp", use_hexagon=True, hexagon_lib_path="/data/local/tmp/hex",
                       xnnpack=False)
    assert runner.delegate_flags() == ["--use_gpu=true", "--use_nnapi=true", "--nnapi_accelerator_name=qti-dsp",
                                       "--use_hexagon=true", "--hexagon_lib_path=/data/local/tmp/hex",
                                       "--use_xnnpack=false"]
    assert AdbRunner(benchmark_binary=binary, run=FakeAdb()).delegate_flags() == []


def test_adb_measure_combines_summaries(binary, model):
    runner = AdbRunner(benchmark_binary=binary, run=FakeAdb(FIXTURES["benchmark_model_logcat_nnapi"]))
    result = measure(runner, model, QUICK)
    assert result.value_ms == pytest.approx(11.787) and result.samples_ms == ()
    assert result.environment["source"] == "summary" and len(result.attempts) == 2
    with pytest.raises(NotImplementedError, match="per-run"):
        runner.time_model(model, warmup=1, runs=1)


def test_adb_environment(binary):
    fake = FakeAdb()
    env = AdbRunner(serial="R58M", benchmark_binary=binary, threads=4, use_gpu=True, run=fake).environment()
    assert fake.calls == [["adb", "-s", "R58M", "shell", "getprop"],
                          ["adb", "-s", "R58M", "shell", "cat /sys/devices/system/cpu/cpu[0-9]*/cpufreq/"
                                                         "scaling_governor 2>/dev/null; echo; cat "
                                                         "/sys/devices/system/cpu/possible"]]
    assert env["model"] == "Pixel 4" and env["android"] == "13" and env["soc"] == "msmnile"
    assert env["cpu"] == "msmnile" and env["machine"] == "arm64-v8a" and env["serial"] == "R58M"
    assert env["governor"] == "schedutil,schedutil,performance" and env["cores"] == 8
    assert env["threads"] == 4 and env["delegate"] == "gpu"
    assert env["runtime_version"].startswith("benchmark_model sha256:")
    assert env["runtime_version"].endswith(" xnnpack+gpu")


def test_adb_device_errors_are_one_line(binary, model):
    for message, expected in (("error: no devices/emulators found", "no Android device"),
                              ("error: device unauthorized.", "unauthorized"),
                              ("error: more than one device/emulator", "pass serial"),
                              ("error: device 'XYZ' not found", "no Android device"),
                              ("/system/bin/sh: .../benchmark_model: not executable: 64-bit ELF file", "ABI")):
        runner = AdbRunner(benchmark_binary=binary, run=FakeAdb(fail=message))
        with pytest.raises(RunnerUnavailable, match=expected):
            runner.timing(model, warmup=1, runs=1)
    broken = AdbRunner(benchmark_binary=binary, run=FakeAdb(benchmark_output="ERROR: Failed to apply GPU delegate."))
    with pytest.raises(BenchmarkOutputError, match="Failed to apply GPU delegate"):
        broken.timing(model, warmup=1, runs=1)


def test_adb_missing_tools_say_how_to_get_them(binary, monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(RunnerUnavailable, match="adb not found on PATH: install Android platform-tools"):
        AdbRunner(benchmark_binary=binary)
    monkeypatch.delenv("TDBNAS_BENCHMARK_MODEL", raising=False)
    with pytest.raises(RunnerUnavailable, match="android_aarch64_benchmark_model") as info:
        AdbRunner(run=FakeAdb())
    assert BENCHMARK_MODEL_URL in str(info.value)
    with pytest.raises(RunnerUnavailable, match="not found at"):
        AdbRunner(benchmark_binary=tmp_path / "nothing", run=FakeAdb())


def test_make_runner_reports_missing_adb(monkeypatch, tmp_path):
    from tdbnas.latency.profiles import make_runner

    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(RunnerUnavailable, match="adb not found"):
        make_runner("adb", threads=1, serial="R58M")
    with pytest.raises(RunnerUnavailable, match="ssh not found"):
        make_runner("ssh", threads=1, host="pi@board")


# ---- ssh runner (fake subprocess.run) --------------------------------------------------------
class FakeSsh:
    def __init__(self, replies=()):
        self.calls, self.replies = [], list(replies)

    def __call__(self, argv, **kwargs):
        assert isinstance(argv, list) and kwargs.get("timeout") and "shell" not in kwargs
        self.calls.append(argv)
        if argv[0] == "ssh" and "device_agent.py" in argv[-1] and self.replies:
            status, out, err = self.replies.pop(0)
            return subprocess.CompletedProcess(argv, status, out, err)
        return subprocess.CompletedProcess(argv, 0, "", "")


AGENT_OK = json.dumps({"tdbnas_agent": 1, "samples_ms": [2.0, 1.5, 1.75], "runtime": {"name": "tflite-runtime",
                       "version": "2.5.0"}, "environment": {"cpu": "ARMv8", "machine": "aarch64", "cores": 4,
                       "board": "MediaTek 8167 Coral"}, "invoke": "invoke", "conditions": {"load1": 0.1}})


def test_ssh_command_lines(model):
    fake = FakeSsh([(0, "Welcome to Mendel\n" + AGENT_OK + "\n", "")])
    runner = SshRunner("mendel@coral", port=2222, threads=1, delegate="libedgetpu.so.1",
                       delegate_options={"device": "usb:0"}, run=fake)
    timing = runner.timing(model, warmup=5, runs=3, min_seconds=0.25, max_runs=100, signature="s 1")
    base_ssh = ["ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10", "-p", "2222", "mendel@coral"]
    base_scp = ["scp", "-q", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10", "-P", "2222"]
    remote_model = fake.calls[2][-1].split(":", 1)[1]
    assert fake.calls[:3] == [
        base_ssh + ["mkdir -p /tmp/tdbnas-agent"],
        base_scp + [device_agent.__file__, "mendel@coral:/tmp/tdbnas-agent/device_agent.py"],
        base_scp + [str(model), f"mendel@coral:{remote_model}"],
    ]
    assert fake.calls[3][:-1] == base_ssh
    assert shlex.split(fake.calls[3][-1]) == [
        "python3", "/tmp/tdbnas-agent/device_agent.py", "--model", remote_model, "--warmup", "5", "--runs", "3",
        "--threads", "1", "--min-seconds", "0.25", "--max-runs", "100", "--signature", "s 1",
        "--delegate", "libedgetpu.so.1", "--delegate-option", "device=usb:0"]
    assert timing.samples_ms == (2.0, 1.5, 1.75) and timing.details["conditions"] == {"load1": 0.1}
    runner.close()
    assert fake.calls[-2] == base_ssh + [f"rm -f /tmp/tdbnas-agent/device_agent.py {remote_model}"]
    assert fake.calls[-1] == base_ssh + ["rmdir /tmp/tdbnas-agent"]


def test_ssh_environment_from_the_agent():
    fake = FakeSsh([(0, AGENT_OK, "")])
    env = SshRunner("coral", user="mendel", delegate="/usr/lib/libedgetpu.so.1", run=fake).environment()
    assert shlex.split(fake.calls[-1][-1]) == ["python3", "/tmp/tdbnas-agent/device_agent.py", "--describe"]
    assert env["runtime_version"] == "tflite-runtime 2.5.0 xnnpack+libedgetpu.so.1"
    assert env["host"] == "mendel@coral" and env["board"] == "MediaTek 8167 Coral" and env["threads"] == 1
    assert env["delegate"] == "libedgetpu.so.1"


def test_ssh_failures_are_one_line(model):
    missing = json.dumps({"tdbnas_agent": 1, "error": "cannot load delegate libedgetpu.so.1 (...); install the "
                          "Edge TPU runtime", "unavailable": True})
    cases = [((3, missing, ""), RunnerUnavailable, "Edge TPU runtime"),
             ((1, json.dumps({"tdbnas_agent": 1, "error": "ValueError: bad", "unavailable": False}), ""),
              RuntimeError, "ValueError: bad"),
             ((255, "", "ssh: connect to host coral port 22: Connection refused"), RunnerUnavailable,
              "cannot reach coral over ssh"),
             ((127, "", "bash: python3: command not found"), RunnerUnavailable, "python3 not found on coral"),
             ((1, "", "Traceback ...\nSyntaxError: invalid syntax"), RuntimeError, "SyntaxError")]
    for reply, error, text in cases:
        runner = SshRunner("coral", run=FakeSsh([reply]))
        with pytest.raises(error, match=text):
            runner.timing(model, warmup=1, runs=1)


def test_ssh_rejects_unsafe_paths_and_missing_ssh(monkeypatch, tmp_path):
    with pytest.raises(ValueError, match="remote_dir"):
        SshRunner("coral", remote_dir="/tmp/x;rm -rf ~", run=FakeSsh())
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(RunnerUnavailable, match="ssh not found on PATH: install an OpenSSH client"):
        SshRunner("coral")


def test_parse_agent_output_skips_banners():
    record = parse_agent_output("motd line\n{not json}\n" + AGENT_OK + "\n")
    assert record["samples_ms"] == [2.0, 1.5, 1.75]
    with pytest.raises(ValueError, match="no result line"):
        parse_agent_output("Permission denied\n")


@pytest.mark.tflite
def test_ssh_runner_end_to_end_with_a_local_transport(models, tmp_path):
    """The whole ssh path with the network replaced: scp copies files locally and ssh runs the
    (quoted) remote command here, so the real agent times the real model."""
    remote_dir = tmp_path / "board"

    def transport(argv, **kwargs):
        if argv[0] == "scp":
            source, target = argv[-2], argv[-1].split(":", 1)[1]
            Path(target).write_bytes(Path(source).read_bytes())
            return subprocess.CompletedProcess(argv, 0, "", "")
        return subprocess.run(shlex.split(argv[-1]), capture_output=True, text=True, timeout=kwargs["timeout"])

    with SshRunner("board", python=sys.executable, remote_dir=str(remote_dir), run=transport) as runner:
        env = runner.environment()
        result = measure(runner, models["int8"], QUICK)
        names = {p.name for p in remote_dir.iterdir()}
        assert "device_agent.py" in names and len(names) == 2 and any(n.endswith(".tflite") for n in names)
    assert env["runtime_version"].startswith("ai-edge-litert ") and env["host"] == "board"
    assert len(result.samples_ms) >= 40 and result.value_ms == min(result.samples_ms)
    assert not remote_dir.exists()  # cleaned up: files removed, then the empty directory
