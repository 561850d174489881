"""Specification of GPU telemetry: the trace format, replay on a virtual clock,
NVML without a GPU, the recorder and `kernelhub quota record`."""

import asyncio
import importlib.util
import io
import itertools
import json
import logging
import os
import statistics
import sys
import threading
import time
import types
from pathlib import Path

import pynvml
import pytest
from click.testing import CliRunner

from kernelhub.clients.quota import quota
from kernelhub.quotas.clock import SystemClock, VirtualClock
from kernelhub.quotas.nvml import NvmlTelemetry
from kernelhub.quotas.record import record
from kernelhub.quotas.replay import ReplayTelemetry
from kernelhub.quotas.telemetry import (
    GpuProcessSample,
    GpuSample,
    TelemetryError,
    TelemetrySample,
    read_trace,
)

DATA = Path(__file__).parent / "data"
TRACES = ["training", "inference", "idle_with_memory", "hash_search"]
GIB = 1024**3


def gpu(index=0, sm=50.0, pids=(4121,), **fields) -> GpuSample:
    values = {
        "index": index,
        "uuid": f"GPU-{index}",
        "name": "NVIDIA H100 80GB HBM3",
        "sm_util": sm,
        "mem_util": 20.0,
        "mem_used_bytes": 10 * GIB,
        "mem_total_bytes": 80 * GIB,
        "power_watts": 300.5,
        "sm_clock_mhz": 1980,
        "pcie_rx_kbps": 1000,
        "pcie_tx_kbps": 200,
        "processes": tuple(GpuProcessSample(pid, GIB, sm) for pid in pids),
    }
    return GpuSample(**{**values, **fields})


def trace_lines(times, sms=None) -> list[str]:
    sms = sms or [float(10 * i) for i in range(len(times))]
    return [
        TelemetrySample(t, (gpu(sm=s),)).to_json_line() for t, s in zip(times, sms, strict=True)
    ]


# --- the trace format ---


def test_a_sample_round_trips_through_one_json_line():
    sample = TelemetrySample(
        1767225600.25,
        (
            gpu(0, pids=(11, 12)),
            gpu(1, sm=None, mem_util=None, power_watts=None, sm_clock_mhz=None, pids=()),
        ),
    )
    line = sample.to_json_line()
    assert "\n" not in line
    assert list(json.loads(line)) == ["time", "gpus"]
    assert json.loads(line)["gpus"][0]["processes"][1] == {
        "pid": 12,
        "used_memory_bytes": GIB,
        "sm_util": 50.0,
    }
    assert TelemetrySample.from_json_line(line) == sample


def test_keys_a_reader_does_not_know_are_ignored():
    data = json.loads(trace_lines([5.0])[0])
    data["hostname"] = "gpu-7"
    data["gpus"][0]["temperature_c"] = 61
    assert TelemetrySample.from_json_line(json.dumps(data)).gpus[0].sm_util == 0.0


def edited(edit) -> str:
    data = json.loads(trace_lines([5.0])[0])
    edit(data)
    return json.dumps(data)


def set_gpu(key, value):
    return lambda d: d["gpus"][0].__setitem__(key, value)


def set_process(key, value):
    return lambda d: d["gpus"][0]["processes"][0].__setitem__(key, value)


@pytest.mark.parametrize(
    ("line", "error"),
    [
        ("not json", "line 7: not valid JSON"),
        ("[1, 2]", "line 7: field '(line)': expected a JSON object, got [1, 2]"),
        (edited(lambda d: d.pop("time")), "line 7: field 'time': missing"),
        (edited(lambda d: d.update(time=None)), "line 7: field 'time': must not be null"),
        (edited(lambda d: d.update(time="noon")), "field 'time': expected a number or null"),
        (edited(lambda d: d.update(gpus={})), "line 7: field 'gpus': expected a list, got {}"),
        (edited(lambda d: d["gpus"].append(3)), "field 'gpus[1]': expected a JSON object"),
        (edited(lambda d: d["gpus"][0].pop("uuid")), "line 7: field 'gpus[0].uuid': missing"),
        (edited(set_gpu("name", 5)), "field 'gpus[0].name': expected a string, got 5"),
        (edited(set_gpu("index", True)), "field 'gpus[0].index': expected an integer, got true"),
        (
            edited(set_gpu("sm_util", 101)),
            "field 'gpus[0].sm_util': must be a finite number 0..100",
        ),
        (edited(set_gpu("mem_util", -1)), "field 'gpus[0].mem_util': must be a finite number"),
        ('{"time": NaN, "gpus": []}', "field 'time': must be a finite number >= 0, got nan"),
        (edited(set_gpu("mem_used_bytes", 1.5)), "'gpus[0].mem_used_bytes': expected an integer"),
        (edited(set_gpu("mem_total_bytes", -2)), "'gpus[0].mem_total_bytes': must be >= 0, got -2"),
        (edited(set_gpu("power_watts", "hot")), "'gpus[0].power_watts': expected a number or null"),
        (edited(set_gpu("pcie_rx_kbps", 2.5)), "field 'gpus[0].pcie_rx_kbps': expected an integer"),
        (edited(lambda d: d["gpus"][0].pop("processes")), "field 'gpus[0].processes': missing"),
        (edited(set_process("pid", 0)), "field 'gpus[0].processes[0].pid': must be >= 1, got 0"),
        (edited(set_process("sm_util", "x")), "'gpus[0].processes[0].sm_util': expected a number"),
        (
            edited(set_process("used_memory_bytes", None)),
            "processes[0].used_memory_bytes': expected",
        ),
    ],
)
def test_a_malformed_line_is_refused_naming_line_and_field(line, error):
    with pytest.raises(ValueError) as caught:
        TelemetrySample.from_json_line(line, line_number=7)
    assert error in str(caught.value)
    assert str(caught.value).startswith("line 7: ")
    assert "\n" not in str(caught.value)


def test_a_trace_counts_blank_lines_and_refuses_time_going_back():
    lines = [trace_lines([1.0])[0], "", "  ", trace_lines([3.0])[0], trace_lines([2.0])[0]]
    assert [s.time for s in read_trace(lines[:4])] == [1.0, 3.0]
    with pytest.raises(ValueError, match=r"^line 5: field 'time': 2.0 is earlier than"):
        read_trace(lines)


# --- clocks ---


async def test_virtual_sleep_returns_only_when_the_clock_passes_its_deadline():
    clock = VirtualClock(start=100.0)
    woke: list[float] = []

    async def sleeper(seconds):
        await clock.sleep(seconds)
        woke.append(clock.now())

    tasks = [asyncio.create_task(sleeper(s)) for s in (2.0, 1.0, 5.0)]
    await asyncio.sleep(0)
    assert clock.sleepers == 3
    clock.advance(0.5)
    await asyncio.sleep(0)
    assert woke == []
    clock.advance(1.5)  # now 102: the 1 s and 2 s sleeps are due
    await asyncio.sleep(0)
    assert woke == [102.0, 102.0] and clock.sleepers == 1
    tasks[2].cancel()
    await asyncio.sleep(0)
    assert clock.sleepers == 0
    with pytest.raises(ValueError, match="cannot go back"):
        clock.advance(-1)


async def test_run_for_lets_a_ticking_task_see_every_deadline():
    clock = VirtualClock()
    seen: list[float] = []

    async def ticker():
        while True:
            seen.append(clock.now())
            await clock.sleep(1.5)

    task = asyncio.create_task(ticker())
    await clock.run_for(6)
    task.cancel()
    assert seen == [0.0, 1.5, 3.0, 4.5, 6.0] and clock.now() == 6.0


async def test_system_clock_is_wall_time():
    before = SystemClock().now()
    await SystemClock().sleep(-1)  # a deadline already past does not wait
    assert abs(before - time.time()) < 5


# --- replay ---


async def test_replay_follows_the_virtual_clock_from_its_construction():
    clock = VirtualClock(start=5000.0)
    replay = ReplayTelemetry(trace_lines([100.0, 101.0, 103.0]), clock)
    assert (replay.available, replay.reason, replay.duration) == (True, "", 3.0)
    expected = [(0, 0.0), (0.9, 0.0), (0.1, 10.0), (1.5, 10.0), (0.5, 20.0), (100, 20.0)]
    for step, sm in expected:
        clock.advance(step)
        sample = await replay.sample()
        assert (sample.time, sample.gpus[0].sm_util) == (clock.now(), sm)
    assert replay.finished


async def test_a_looping_replay_starts_again_one_step_after_its_last_sample():
    clock = VirtualClock()
    replay = ReplayTelemetry(trace_lines([0.0, 1.0, 2.0]), clock, loop=True)
    sms = []
    for _ in range(8):
        sms.append((await replay.sample()).gpus[0].sm_util)
        clock.advance(1)
    assert sms == [0.0, 10.0, 20.0, 0.0, 10.0, 20.0, 0.0, 10.0]
    assert not replay.finished


async def test_pid_map_attaches_recorded_processes_to_the_tests_own():
    clock = VirtualClock()
    lines = [TelemetrySample(0.0, (gpu(pids=(4121, 77)),)).to_json_line()]
    replay = ReplayTelemetry(lines, clock, pid_map={4121: os.getpid()})
    assert replay.pids == {4121, 77}
    first = await replay.sample()
    assert [p.pid for p in first.gpus[0].processes] == [os.getpid(), 77]
    replay.pid_map[77] = 4242  # attached later, when the test's runtime has started
    assert [p.pid for p in (await replay.sample()).gpus[0].processes] == [os.getpid(), 4242]
    assert [p.pid for p in replay.samples[0].gpus[0].processes] == [4121, 77]


def test_replay_names_the_file_of_a_bad_trace(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(trace_lines([0.0])[0] + "\n{oops\n")
    with pytest.raises(ValueError, match=r"bad.jsonl: line 2: not valid JSON"):
        ReplayTelemetry(bad, VirtualClock())
    with pytest.raises(ValueError, match="the trace has no samples"):
        ReplayTelemetry(["", "\n"], VirtualClock())


# --- NVML ---


def fake_nvml(**overrides) -> types.SimpleNamespace:
    """A stand-in for the pynvml module: the real error classes, one H100-like GPU."""

    def unsupported(*args):
        raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)

    def process_util(handle, since):
        return [
            types.SimpleNamespace(pid=10, timeStamp=since + 1, smUtil=40),
            types.SimpleNamespace(pid=10, timeStamp=since + 2, smUtil=60),
        ]

    calls: list[int] = []
    functions = {
        "nvmlInit": lambda: calls.append(threading.get_ident()),
        "nvmlShutdown": lambda: None,
        "nvmlDeviceGetCount": lambda: 1,
        "nvmlDeviceGetHandleByIndex": lambda i: f"handle{i}",
        "nvmlDeviceGetUUID": lambda h: "GPU-fake",
        "nvmlDeviceGetName": lambda h: "NVIDIA H100 80GB HBM3",
        "nvmlDeviceGetMemoryInfo": lambda h: types.SimpleNamespace(total=80 * GIB, used=3 * GIB),
        "nvmlDeviceGetUtilizationRates": lambda h: types.SimpleNamespace(gpu=97, memory=41),
        "nvmlDeviceGetPowerUsage": lambda h: 655_250,
        "nvmlDeviceGetClockInfo": unsupported,
        "nvmlDeviceGetPcieThroughput": lambda h, counter: 300_000 + counter,
        "nvmlDeviceGetComputeRunningProcesses": lambda h: [
            types.SimpleNamespace(pid=10, usedGpuMemory=2 * GIB),
            types.SimpleNamespace(pid=11, usedGpuMemory=None),
        ],
        "nvmlDeviceGetProcessUtilization": process_util,
    }
    names = [n for n in dir(pynvml) if n.startswith(("NVML_", "NVMLError"))]
    module = types.SimpleNamespace(**{n: getattr(pynvml, n) for n in names}, calls=calls)
    for name, fn in {**functions, **overrides}.items():
        setattr(module, name, fn)
    return module


def nvml_error(code):
    def fail(*args):
        raise pynvml.NVMLError(code)

    return fail


async def test_nvml_on_this_machine_is_off_with_a_reason_or_samples_real_gpus(caplog):
    """Without a driver (this test machine) sampling is off and says why; with one, it works."""
    caplog.set_level(logging.INFO, logger="kernelhub.quotas.nvml")
    async with NvmlTelemetry(VirtualClock(start=42.0)) as telemetry:
        first, second = await telemetry.sample(), await telemetry.sample()
    if telemetry.reason:
        assert telemetry.reason.startswith("NVML unavailable: ")
        assert first == second == TelemetrySample(42.0, ())
        assert [r.getMessage() for r in caplog.records] == [
            f"GPU sampling is off: {telemetry.reason}"
        ]
    else:
        assert first.gpus and all(g.mem_total_bytes > 0 for g in first.gpus)


async def test_nvml_that_cannot_load_reports_it_and_samples_no_gpus():
    nvml = fake_nvml(nvmlInit=nvml_error(pynvml.NVML_ERROR_LIBRARY_NOT_FOUND))
    telemetry = await NvmlTelemetry(VirtualClock(), nvml=nvml).open()
    assert not telemetry.available
    assert telemetry.reason == "NVML unavailable: NVML Shared Library Not Found"
    assert (await telemetry.sample()).gpus == ()


async def test_nvml_fields_a_gpu_does_not_support_become_none():
    nvml = fake_nvml()
    async with NvmlTelemetry(VirtualClock(start=7.0), nvml=nvml) as telemetry:
        assert (telemetry.available, telemetry.reason) == (True, "")
        sample = await telemetry.sample()
    assert nvml.calls and nvml.calls[0] != threading.get_ident()  # not on the event loop
    assert sample == TelemetrySample(
        7.0,
        (
            GpuSample(
                index=0,
                uuid="GPU-fake",
                name="NVIDIA H100 80GB HBM3",
                sm_util=97.0,
                mem_util=41.0,
                mem_used_bytes=3 * GIB,
                mem_total_bytes=80 * GIB,
                power_watts=655.25,
                sm_clock_mhz=None,  # NOT_SUPPORTED
                pcie_rx_kbps=300_000 + pynvml.NVML_PCIE_UTIL_RX_BYTES,
                pcie_tx_kbps=300_000 + pynvml.NVML_PCIE_UTIL_TX_BYTES,
                processes=(
                    GpuProcessSample(10, 2 * GIB, 50.0),  # mean of its samples
                    GpuProcessSample(11, 0, 0.0),  # no sample: did not use the SMs
                ),
            ),
        ),
    )


@pytest.mark.parametrize(
    ("code", "expected"),
    [(pynvml.NVML_ERROR_NOT_SUPPORTED, None), (pynvml.NVML_ERROR_NOT_FOUND, 0.0)],
    ids=["unsupported", "no-process-active"],
)
async def test_per_process_utilization_when_nvml_has_none(code, expected):
    nvml = fake_nvml(nvmlDeviceGetProcessUtilization=nvml_error(code))
    async with NvmlTelemetry(VirtualClock(), nvml=nvml) as telemetry:
        sample = await telemetry.sample()
    assert [p.sm_util for p in sample.gpus[0].processes] == [expected, expected]


async def test_a_lost_gpu_fails_the_sample_with_a_telemetry_error():
    nvml = fake_nvml(nvmlDeviceGetPowerUsage=nvml_error(pynvml.NVML_ERROR_GPU_IS_LOST))
    async with NvmlTelemetry(VirtualClock(), nvml=nvml) as telemetry:
        with pytest.raises(TelemetryError, match=r"^GPU 0: .*GPU is lost"):
            await telemetry.sample()


# --- the recorder ---


@pytest.mark.parametrize(("interval", "duration", "lines"), [(1, 10, 10), (0.5, 3, 6), (2, 5, 3)])
async def test_the_recorder_writes_one_line_per_interval(interval, duration, lines):
    clock = VirtualClock(start=1000.0)
    replay = ReplayTelemetry(DATA / "training.jsonl", clock)
    out = io.StringIO()
    task = asyncio.create_task(record(replay, clock, interval, duration, out))
    await clock.run_for(duration)
    assert await task == lines
    recorded = read_trace(out.getvalue().splitlines())
    assert [s.time for s in recorded] == [1000.0 + i * interval for i in range(lines)]
    # each line is the trace's sample for that moment: the trace has one per second
    assert [s.gpus for s in recorded] == [
        replay.samples[int(i * interval)].gpus for i in range(lines)
    ]


async def test_a_recording_without_duration_keeps_its_lines_when_stopped():
    clock = VirtualClock()
    out = io.StringIO()
    task = asyncio.create_task(
        record(ReplayTelemetry(DATA / "idle_with_memory.jsonl", clock), clock, 1, None, out)
    )
    await clock.run_for(4)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(read_trace(out.getvalue().splitlines())) == 5


def run_quota(*args: str):
    return CliRunner().invoke(quota, list(args))


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["--duration", "5"], "Error: Missing option '--output'."),
        (["--interval", "0"], "Error: Invalid value for '--interval': 0.0 is not in the range"),
        (["--interval", "fast"], "Error: Invalid value for '--interval': 'fast' is not a valid"),
        (["--duration", "-5"], "Error: Invalid value for '--duration': -5.0 is not in the range"),
        (["--duration", "0.5"], "Error: Invalid value for '--duration': 0.5 is shorter than"),
        (["--output", "."], "Error: Invalid value for '--output': File '.' is a directory."),
        (["--frequency", "2"], "Error: No such option '--frequency'."),
    ],
)
def test_record_refuses_bad_flags_in_one_line(tmp_path, args, error):
    if "--output" not in args and "Missing option '--output'" not in error:
        args = [*args, "--output", str(tmp_path / "trace.jsonl")]
    result = run_quota("record", *args)
    assert result.exit_code == 2
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and errors[0].startswith(error), result.output


def test_record_without_nvml_says_so_in_one_line(tmp_path, monkeypatch):
    broken = fake_nvml(nvmlInit=nvml_error(pynvml.NVML_ERROR_DRIVER_NOT_LOADED))
    monkeypatch.setitem(sys.modules, "pynvml", broken)
    result = run_quota("record", "--duration", "2", "--output", str(tmp_path / "t.jsonl"))
    assert (result.exit_code, result.output) == (1, "Error: NVML unavailable: Driver Not Loaded\n")
    assert not (tmp_path / "t.jsonl").exists()


def test_the_quota_group_lists_record():
    result = run_quota("--help")
    assert result.exit_code == 0 and "record" in result.output


# --- the traces in tests/data ---


@pytest.mark.parametrize("name", TRACES)
def test_each_trace_is_ten_minutes_of_one_gpu_at_one_hertz(name):
    path = DATA / f"{name}.jsonl"
    assert path.stat().st_size < 300_000
    samples = read_trace(path.read_text().splitlines())
    assert len(samples) >= 600
    assert {len(s.gpus) for s in samples} == {1}
    assert {round(b.time - a.time, 6) for a, b in itertools.pairwise(samples)} == {1.0}
    assert all(len(s.gpus[0].processes) == 1 for s in samples)
    assert name in (DATA / "README.md").read_text()


def gpu_series(name: str, field: str) -> list:
    samples = read_trace((DATA / f"{name}.jsonl").read_text().splitlines())
    return [getattr(s.gpus[0], field) for s in samples]


def test_the_traces_have_the_shapes_the_readme_describes():
    training_sm = gpu_series("training", "sm_util")
    assert statistics.median(training_sm) >= 90 and min(training_sm) < 60
    assert len(set(gpu_series("training", "mem_used_bytes"))) > 100
    assert statistics.median(gpu_series("training", "pcie_rx_kbps")) > 200_000
    inference_sm = gpu_series("inference", "sm_util")
    assert (
        min(inference_sm) >= 10 and max(inference_sm) <= 70 and statistics.stdev(inference_sm) > 10
    )
    assert len(set(gpu_series("inference", "mem_used_bytes"))) == 1
    assert set(gpu_series("idle_with_memory", "sm_util")) == {0.0}
    assert max(gpu_series("idle_with_memory", "pcie_rx_kbps")) < 10
    assert min(gpu_series("hash_search", "sm_util")) >= 99
    assert len(set(gpu_series("hash_search", "mem_used_bytes"))) == 1
    assert max(gpu_series("hash_search", "pcie_rx_kbps")) < 10
    assert min(gpu_series("hash_search", "power_watts")) >= 650


def test_the_synthetic_traces_are_what_their_script_writes(tmp_path):
    spec = importlib.util.spec_from_file_location("make_traces", DATA / "make_synthetic_traces.py")
    assert spec and spec.loader
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    written = script.write_traces(tmp_path)
    assert written
    for path in written:
        assert path.read_bytes() == (DATA / path.name).read_bytes(), path.name
