"""The Resources panel's endpoint, `GET {base_url}kernelhub/resources` (kernelhub-snippets):
this runtime's memory and CPU from its own control group, its drive, its GPUs.

The rules run on fake cgroup trees and a fake NVML module (there is no GPU here, and a
test cannot choose the host's cgroup layout); the endpoint runs under a real Jupyter
Server; and one test reads a real container's group from inside (the reader copied in
by path) and compares it with what the host sees of that container.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
import time
import types
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker
import pynvml
import pytest
from harness import docker_engine
from kernelhub_snippets import runtime_usage
from kernelhub_snippets.resources import SETTINGS_KEY, Resources, load_resources
from kernelhub_snippets.runtime_usage import CgroupReader, GpuReader, Reading, drive_usage

# imported into this module, not registered as a plugin (see tests/test_snippets.py)
from pytest_jupyter.jupyter_server import *  # noqa: F403

from kernelhub.quotas.telemetry import read_trace

MIB, GIB = 2**20, 2**30
DATA = Path(__file__).parent / "data"
TEST_IMAGE = "kernelhub/runtime-test:latest"
PREFIX = "kernelhub-test-resources-"


def cgroup_tree(root: Path, proc_self_cgroup: str, files: dict[str, str]) -> CgroupReader:
    """A fake /sys/fs/cgroup under ``root`` and a fake /proc/self/cgroup."""
    for name, text in files.items():
        (root / "sys" / name).parent.mkdir(parents=True, exist_ok=True)
        (root / "sys" / name).write_text(text)
    (root / "sys").mkdir(parents=True, exist_ok=True)
    (root / "proc-self-cgroup").write_text(proc_self_cgroup)
    return CgroupReader(root / "sys", root / "proc-self-cgroup", host_memory=64 * GIB)


V1_LINES = "4:memory:/docker/abc\n3:cpu,cpuacct:/docker/abc\n0::/\n"
V1_HUGE = "9223372036854771712"

# (case, /proc/self/cgroup, files, expected memory Reading or None)
MEMORY_RULES = [
    ("v2, group nested under the root", "0::/user.slice/rt\n",
     {"user.slice/rt/memory.current": "1000000", "user.slice/rt/memory.max": "4194304",
      "user.slice/rt/memory.stat": "anon 700000\ninactive_file 300000\n"},
     Reading(700000, 4194304, "cgroup v2")),
    ("v2, no limit: max", "0::/rt\n",
     {"rt/memory.current": "5000", "rt/memory.max": "max", "rt/memory.stat": "inactive_file 0\n"},
     Reading(5000, None, "cgroup v2")),
    ("v2, a container's own group mounted at the root", "0::/\n",
     {"memory.current": "2000", "memory.max": "8192", "memory.stat": "inactive_file 500\n"},
     Reading(1500, 8192, "cgroup v2")),
    ("v2, path not mounted here: the root is the container's", "0::/docker/abc\n",
     {"memory.current": "2000", "memory.max": "max"},
     Reading(2000, None, "cgroup v2")),
    ("v2, page cache larger than usage: never negative", "0::/\n",
     {"memory.current": "100", "memory.stat": "inactive_file 900\n"},
     Reading(0, None, "cgroup v2")),
    ("v1, group nested under the hierarchy", V1_LINES,
     {"memory/docker/abc/memory.usage_in_bytes": str(600 * MIB),
      "memory/docker/abc/memory.limit_in_bytes": str(512 * MIB),
      "memory/docker/abc/memory.stat": f"cache 1\ntotal_inactive_file {100 * MIB}\n"},
     Reading(500 * MIB, 512 * MIB, "cgroup v1")),
    ("v1, a container's own group mounted at the hierarchy's top", V1_LINES,
     {"memory/memory.usage_in_bytes": "3000", "memory/memory.limit_in_bytes": "65536",
      "memory/memory.stat": "total_inactive_file 1000\n"},
     Reading(2000, 65536, "cgroup v1")),
    ("v1, no limit: a huge number", V1_LINES,
     {"memory/memory.usage_in_bytes": "3000", "memory/memory.limit_in_bytes": V1_HUGE},
     Reading(3000, None, "cgroup v1")),
    ("v1, a limit above the host's memory is none", V1_LINES,
     {"memory/memory.usage_in_bytes": "3000", "memory/memory.limit_in_bytes": str(128 * GIB)},
     Reading(3000, None, "cgroup v1")),
    ("v1, the host's root group (host totals) is not this runtime's", "4:memory:/\n",
     {"memory/memory.usage_in_bytes": "3000", "memory/memory.limit_in_bytes": V1_HUGE,
      "memory/cgroup.sane_behavior": "0"},
     None),
    ("v2 root group: no memory.current there", "0::/\n", {"cgroup.controllers": "memory"}, None),
    ("no cgroupfs at all (a local runtime's sandbox)", "0::/\n", {}, None),
    ("garbage in the files", "0::/\n", {"memory.current": "lots"}, None),
]  # fmt: skip

# (case, /proc/self/cgroup, files, expected CPU Reading (seconds used so far) or None)
CPU_RULES = [
    ("v2 quota of 1.5 cores", "0::/rt\n",
     {"rt/memory.current": "1", "rt/cpu.max": "150000 100000",
      "rt/cpu.stat": "usage_usec 2500000\nuser_usec 1\n"},
     Reading(2.5, 1.5, "cgroup v2")),
    ("v2 no quota: max", "0::/\n",
     {"memory.current": "1", "cpu.max": "max 100000", "cpu.stat": "usage_usec 1000000\n"},
     Reading(1.0, None, "cgroup v2")),
    ("v1 cpu and cpuacct mounted together", V1_LINES,
     {"cpu,cpuacct/docker/abc/cpu.cfs_quota_us": "200000",
      "cpu,cpuacct/docker/abc/cpu.cfs_period_us": "100000",
      "cpu,cpuacct/docker/abc/cpuacct.usage": "3000000000"},
     Reading(3.0, 2.0, "cgroup v1")),
    ("v1 cpu and cpuacct as hierarchies of their own", "2:cpuacct:/x\n1:cpu:/x\n",
     {"cpu/x/cpu.cfs_quota_us": "50000", "cpu/x/cpu.cfs_period_us": "100000",
      "cpuacct/x/cpuacct.usage": "500000000"},
     Reading(0.5, 0.5, "cgroup v1")),
    ("v1 no quota: -1, the container's group at the top", V1_LINES,
     {"cpu/cpu.cfs_quota_us": "-1", "cpu/cpu.cfs_period_us": "100000",
      "cpuacct/cpuacct.usage": "7000000000"},
     Reading(7.0, None, "cgroup v1")),
    ("v1 the host's root group", "2:cpuacct:/\n",
     {"cpuacct/cpuacct.usage": "7000000000", "cpuacct/cgroup.sane_behavior": "0"}, None),
    ("nothing readable", "", {}, None),
]  # fmt: skip


@pytest.mark.parametrize(
    ("case", "lines", "files", "expected"), MEMORY_RULES, ids=[r[0] for r in MEMORY_RULES]
)
def test_memory_is_the_runtimes_cgroup(
    tmp_path: Path, case: str, lines: str, files: dict[str, str], expected: Reading | None
) -> None:
    assert cgroup_tree(tmp_path, lines, files).memory() == expected


@pytest.mark.parametrize(
    ("case", "lines", "files", "expected"), CPU_RULES, ids=[r[0] for r in CPU_RULES]
)
def test_cpu_is_the_runtimes_cgroup(
    tmp_path: Path, case: str, lines: str, files: dict[str, str], expected: Reading | None
) -> None:
    assert cgroup_tree(tmp_path, lines, files).cpu() == expected


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_cpu_used_is_cores_averaged_since_the_previous_sample() -> None:
    clock = Clock()
    resources = Resources(env={}, clock=clock)
    steps = [
        # (seconds later, CPU seconds so far, source, cores expected)
        (0.0, 10.0, "cgroup v2", None),  # the first sample has nothing to compare with
        (2.0, 13.0, "cgroup v2", 1.5),
        (0.5, 20.0, "cgroup v2", 1.5),  # a second tab polling at once: the last figure
        (1.5, 13.0, "cgroup v2", 0.0),  # processes ended and took their time: never < 0
        (2.0, 99.0, "processes", None),  # another source: start again
        (4.0, 101.0, "processes", 0.5),
    ]
    for later, seconds, source, cores in steps:
        clock.now += later
        assert resources.cpu_used(Reading(seconds, None, source)) == cores


def test_without_a_cgroup_the_process_tree_counts_against_the_spawners_limits(
    tmp_path: Path,
) -> None:
    env = {"MEM_LIMIT": str(2 * GIB), "CPU_LIMIT": "1.5"}
    resources = Resources(cgroups=cgroup_tree(tmp_path, "0::/\n", {}), env=env, drive=tmp_path)
    before = resources.sample_blocking()
    # a real child (as a kernel is) holding 200 MiB
    child = subprocess.Popen(
        [sys.executable, "-c", "import sys; b = b'x' * (200 << 20); sys.stdin.read()"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert child.stdin is not None
        runtime_usage_seen = 0
        for _ in range(100):  # until the child has touched its memory
            runtime_usage_seen = resources.sample_blocking()["memory"]["used"]
            if runtime_usage_seen - before["memory"]["used"] > 190 * MIB:
                break
            time.sleep(0.1)
    finally:
        child.kill()
        child.wait()
    assert before["memory"] == {"used": before["memory"]["used"], "limit": 2 * GIB,
                                "source": "processes"}  # fmt: skip
    assert before["cpu"]["limit"] == 1.5 and before["cpu"]["source"] == "processes"
    assert runtime_usage_seen - before["memory"]["used"] > 190 * MIB


# --- the drive ---


def test_drive_walk_counts_allocated_bytes_without_following_links(tmp_path: Path) -> None:
    drive, elsewhere = tmp_path / "drive", tmp_path / "elsewhere"
    (drive / "a" / "b").mkdir(parents=True)
    elsewhere.mkdir()
    (drive / "a" / "b" / "data.bin").write_bytes(os.urandom(3 * MIB))
    (elsewhere / "big.bin").write_bytes(os.urandom(20 * MIB))
    (drive / "link").symlink_to(elsewhere)
    use = drive_usage(drive)
    assert use.complete
    assert use.used is not None and 3 * MIB <= use.used < 4 * MIB


@pytest.mark.parametrize(
    ("max_entries", "max_seconds", "complete"),
    [(1000, 10.0, True), (5, 10.0, False), (1000, 0.0, False)],
    ids=["within-bounds", "too-many-entries", "out-of-time"],
)
def test_drive_walk_is_bounded(
    tmp_path: Path, max_entries: int, max_seconds: float, complete: bool
) -> None:
    for i in range(20):
        (tmp_path / f"f{i}").write_bytes(b"x" * 5000)
    use = drive_usage(tmp_path, max_entries=max_entries, max_seconds=max_seconds)
    assert use.complete is complete
    assert use.used is not None and (use.used >= 20 * 4096 if complete else use.used >= 0)


async def test_drive_size_is_cached_for_a_minute(tmp_path: Path) -> None:
    clock = Clock()
    resources = Resources(cgroups=cgroup_tree(tmp_path / "cg", "", {}), env={},
                          drive=tmp_path, clock=clock)  # fmt: skip
    first = (await resources.drive_use()).used
    (tmp_path / "new.bin").write_bytes(os.urandom(2 * MIB))
    clock.now += 59
    assert (await resources.drive_use()).used == first
    clock.now += 2
    assert ((await resources.drive_use()).used or 0) >= (first or 0) + 2 * MIB


# --- GPUs through NVML ---

TWO_GPUS = [
    {"uuid": "GPU-aaaa-0000", "name": "NVIDIA A100-SXM4-40GB", "util": 10, "used": GIB,
     "total": 40 * GIB},
    {"uuid": "GPU-bbbb-1111", "name": "NVIDIA A100-SXM4-40GB", "util": 90, "used": 30 * GIB,
     "total": 40 * GIB},
]  # fmt: skip


def fake_nvml(gpus: list[dict[str, Any]], **overrides: Callable[..., Any]) -> Any:
    """A stand-in for the pynvml module with pynvml's own error classes and constants."""
    names = [n for n in dir(pynvml) if n.startswith(("NVML_", "NVMLError"))]
    module = types.SimpleNamespace(**{n: getattr(pynvml, n) for n in names}, inits=[])
    functions: dict[str, Callable[..., Any]] = {
        "nvmlInit": lambda: module.inits.append(1),
        "nvmlDeviceGetCount": lambda: len(gpus),
        "nvmlDeviceGetHandleByIndex": lambda i: gpus[i],
        "nvmlDeviceGetUUID": lambda h: h["uuid"].encode(),  # old pynvml: bytes
        "nvmlDeviceGetName": lambda h: h["name"],
        "nvmlDeviceGetUtilizationRates": lambda h: types.SimpleNamespace(gpu=h["util"], memory=1),
        "nvmlDeviceGetMemoryInfo": lambda h: types.SimpleNamespace(used=h["used"],
                                                                   total=h["total"]),
    }  # fmt: skip
    for name, fn in {**functions, **overrides}.items():
        setattr(module, name, fn)
    return module


def fails(code: int) -> Callable[..., Any]:
    def fail(*args: Any) -> Any:
        raise pynvml.NVMLError(code)

    return fail


@pytest.mark.parametrize(
    ("env", "indexes"),
    [
        ({}, [0, 1]),
        ({"CUDA_VISIBLE_DEVICES": "1"}, [1]),  # a local runtime sees the host's GPUs
        ({"CUDA_VISIBLE_DEVICES": "0,1"}, [0, 1]),
        ({"CUDA_VISIBLE_DEVICES": "GPU-bbbb-1111"}, [1]),
        ({"CUDA_VISIBLE_DEVICES": "GPU-aaaa"}, [0]),  # CUDA takes a unique UUID prefix
        ({"CUDA_VISIBLE_DEVICES": "7"}, []),
        # a container sees only its own GPUs, renumbered: nothing to filter
        ({"CUDA_VISIBLE_DEVICES": "1", "NVIDIA_VISIBLE_DEVICES": "1"}, [0, 1]),
        ({"CUDA_VISIBLE_DEVICES": "1", "NVIDIA_VISIBLE_DEVICES": "all"}, [1]),
    ],
)
def test_gpus_are_this_runtimes(env: dict[str, str], indexes: list[int]) -> None:
    gpus, problem = GpuReader(env=env, nvml=fake_nvml(TWO_GPUS)).read()
    assert problem == ""
    assert [g["index"] for g in gpus] == indexes
    for gpu in gpus:
        given = TWO_GPUS[gpu["index"]]
        assert gpu == {"index": gpu["index"], "uuid": given["uuid"], "name": given["name"],
                       "utilization": given["util"], "memory_used": given["used"],
                       "memory_total": given["total"]}  # fmt: skip


@pytest.mark.parametrize(
    "env",
    [{"CUDA_VISIBLE_DEVICES": ""}, {"NVIDIA_VISIBLE_DEVICES": "void"},
     {"NVIDIA_VISIBLE_DEVICES": "none"}, {"NVIDIA_VISIBLE_DEVICES": ""}],
)  # fmt: skip
def test_a_cpu_runtime_says_nothing_of_gpus_and_never_asks_nvml(env: dict[str, str]) -> None:
    nvml = fake_nvml(TWO_GPUS)
    assert GpuReader(env=env, nvml=nvml).read() == ([], "")
    assert nvml.inits == []


@pytest.mark.parametrize(
    ("overrides", "problem"),
    [
        ({"nvmlInit": fails(pynvml.NVML_ERROR_LIBRARY_NOT_FOUND)}, ""),  # no driver: no GPU
        ({"nvmlInit": fails(pynvml.NVML_ERROR_DRIVER_NOT_LOADED)},
         "NVML is not available in this runtime: Driver Not Loaded"),
        ({"nvmlDeviceGetCount": fails(pynvml.NVML_ERROR_GPU_IS_LOST)},
         "NVML cannot read this runtime's GPUs: GPU is lost"),
    ],
    ids=["no-driver-library", "driver-not-loaded", "gpu-lost"],
)  # fmt: skip
def test_nvml_failures_are_a_sentence_not_an_error(
    overrides: dict[str, Callable[..., Any]], problem: str
) -> None:
    assert GpuReader(env={}, nvml=fake_nvml(TWO_GPUS, **overrides)).read() == ([], problem)


def test_nvml_is_opened_once_and_a_failure_is_not_retried_at_every_poll() -> None:
    nvml = fake_nvml(TWO_GPUS)
    reader = GpuReader(env={}, nvml=nvml)
    for _ in range(3):
        assert len(reader.read()[0]) == 2
    assert nvml.inits == [1]
    calls: list[int] = []

    def broken_init() -> None:
        calls.append(1)
        fails(pynvml.NVML_ERROR_DRIVER_NOT_LOADED)()

    broken = fake_nvml(TWO_GPUS, nvmlInit=broken_init)
    reader = GpuReader(env={}, nvml=broken)
    for _ in range(3):
        assert reader.read()[1].startswith("NVML is not available")
    assert calls == [1]


def test_gpus_of_a_recorded_trace_read_as_recorded() -> None:
    """NVML answering what a real GPU answered (tests/data/training.jsonl, recorded by
    `kernelhub quota record`)."""
    with (DATA / "training.jsonl").open() as f:
        sample = read_trace(f)[5]
    recorded = [
        {"uuid": g.uuid, "name": g.name, "util": int(g.sm_util or 0), "used": g.mem_used_bytes,
         "total": g.mem_total_bytes}
        for g in sample.gpus
    ]  # fmt: skip
    gpus, problem = GpuReader(env={}, nvml=fake_nvml(recorded)).read()
    assert problem == "" and recorded
    assert [(g["uuid"], g["name"], g["utilization"], g["memory_used"], g["memory_total"])
            for g in gpus] == [tuple(r.values()) for r in recorded]  # fmt: skip


# --- the endpoint, under a real Jupyter Server ---


@pytest.fixture
def fetch(jp_serverapp: Any, jp_fetch: Any, jp_asyncio_loop: Any, tmp_path: Path) -> Any:
    def start(resources: Resources) -> Callable[..., Any]:
        load_resources(jp_serverapp, resources)
        jp_serverapp.web_app.settings[SETTINGS_KEY] = resources  # whichever route answers

        def get(**kwargs: Any) -> Any:
            future = jp_fetch("kernelhub", "resources", raise_error=False, **kwargs)
            return jp_asyncio_loop.run_until_complete(future)

        return get

    return start


def test_the_endpoint_answers_the_documented_shape(fetch: Any, tmp_path: Path) -> None:
    cgroups = cgroup_tree(tmp_path / "cg", "0::/\n", {
        "memory.current": str(300 * MIB), "memory.max": str(GIB),
        "memory.stat": f"inactive_file {MIB}\n", "cpu.max": "100000 100000",
        "cpu.stat": "usage_usec 5\n"})  # fmt: skip
    (tmp_path / "drive").mkdir()
    (tmp_path / "drive" / "notebook.ipynb").write_bytes(os.urandom(MIB))
    env = {"CUDA_VISIBLE_DEVICES": "1"}
    resources = Resources(cgroups=cgroups, gpus=GpuReader(env=env, nvml=fake_nvml(TWO_GPUS)),
                          drive=tmp_path / "drive", env=env)  # fmt: skip
    response = fetch(resources)()
    assert response.code == 200
    assert response.headers["Cache-Control"] == "no-store"
    body = json.loads(response.body)
    assert set(body) == {"memory", "cpu", "drive", "gpus", "gpu_problem", "time"}
    assert body["memory"] == {"used": 299 * MIB, "limit": GIB, "source": "cgroup v2"}
    assert body["cpu"] == {"used": None, "limit": 1.0, "source": "cgroup v2"}
    drive = body["drive"]
    assert drive["path"] == str(tmp_path / "drive") and drive["complete"] is True
    assert MIB <= drive["used"] < 2 * MIB and 0 < drive["free"] <= drive["total"]
    assert [g["uuid"] for g in body["gpus"]] == ["GPU-bbbb-1111"] and body["gpu_problem"] == ""
    assert body["time"].endswith("+00:00")


@pytest.mark.parametrize("auth", ["", "token not-the-servers-token"])
def test_the_endpoint_refuses_requests_without_the_servers_credentials(
    fetch: Any, tmp_path: Path, auth: str
) -> None:
    get = fetch(Resources(cgroups=cgroup_tree(tmp_path, "", {}), env={}, drive=tmp_path))
    assert get(headers={"Authorization": auth}).code in (401, 403)


def test_an_unexpected_failure_is_a_json_500_without_details(
    fetch: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    resources = Resources(cgroups=cgroup_tree(tmp_path, "", {}), env={}, drive=tmp_path)

    def broken() -> dict[str, Any]:
        raise RuntimeError("secret internals /etc/shadow")

    resources.sample_blocking = broken  # type: ignore[method-assign]
    response = fetch(resources)()
    assert response.code == 500
    body = json.loads(response.body)
    assert body == {"status": 500, "message": "Cannot read this runtime's resources right now"}
    assert "secret internals" in caplog.text  # for the admin, in the server's log


# --- a real container ---

PROBE = """
import json, sys
sys.path.insert(0, "/tmp/kernelhub-probe")
import runtime_usage
reader = runtime_usage.CgroupReader()
memory, cpu = reader.memory(), reader.cpu()
print(json.dumps({"used": memory.value, "limit": memory.limit, "source": memory.source,
                  "cpu_limit": cpu.limit}))
"""


def host_view(pid: int) -> int:
    """The container's memory as the host's cgroupfs shows it, used = usage - inactive file."""
    groups = {c: p for _, c, p in (line.split(":", 2) for line in
              Path(f"/proc/{pid}/cgroup").read_text().splitlines())}  # fmt: skip
    if "memory" in groups:  # v1 (this project's CI hosts)
        group = Path("/sys/fs/cgroup/memory") / groups["memory"].lstrip("/")
        usage, inactive = "memory.usage_in_bytes", "total_inactive_file"
    else:
        group = Path("/sys/fs/cgroup") / groups[""].lstrip("/")
        usage, inactive = "memory.current", "inactive_file"
    stat = dict(line.split() for line in (group / "memory.stat").read_text().splitlines())
    return int((group / usage).read_text()) - int(stat[inactive])


@pytest.fixture
def engine() -> Iterator[docker.DockerClient]:
    with docker_engine(PREFIX, TEST_IMAGE) as client:
        yield client


@pytest.mark.docker
@pytest.mark.slow
def test_a_containers_reader_sees_its_own_cgroup_as_the_host_does(
    engine: docker.DockerClient,
) -> None:
    container = engine.containers.run(
        TEST_IMAGE,
        ["python3", "-c", "import time; held = b'x' * (150 << 20); time.sleep(300)"],
        name=f"{PREFIX}{uuid.uuid4().hex[:8]}",
        mem_limit="512m",
        nano_cpus=1_000_000_000,
        network_mode="none",
        detach=True,
    )
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w") as tar:
        tar.add(runtime_usage.__file__, arcname="kernelhub-probe/runtime_usage.py")
    assert container.put_archive("/tmp", archive.getvalue())
    container.reload()
    pid = container.attrs["State"]["Pid"]
    for _ in range(50):  # until the sleeper holds its 150 MiB
        if host_view(pid) > 150 * MIB:
            break
        time.sleep(0.1)
    code, output = container.exec_run(["python3", "-c", PROBE], user="jovyan")
    assert code == 0, output.decode(errors="replace")
    seen = json.loads(output)
    host = host_view(pid)
    assert seen["source"] in ("cgroup v1", "cgroup v2")
    assert seen["limit"] == 512 * MIB
    assert seen["cpu_limit"] == 1.0
    assert abs(seen["used"] - host) <= 0.1 * host, (seen, host)
    assert seen["used"] > 150 * MIB


def test_the_endpoint_reads_this_machine_without_fakes(fetch: Any) -> None:
    """The real readers, as the extension loads them, on the machine the test runs on."""
    response = fetch(Resources())()
    assert response.code == 200
    body = json.loads(response.body)
    assert body["memory"]["source"] in ("cgroup v1", "cgroup v2", "processes")
    assert body["memory"]["used"] > 0
    assert body["cpu"]["source"] in ("cgroup v1", "cgroup v2", "processes")
    assert body["drive"]["path"] == str(Path.home()) and body["drive"]["total"] > 0
    assert isinstance(body["gpus"], list) and isinstance(body["gpu_problem"], str)
