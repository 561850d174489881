"""What this runtime uses, read where the kernel keeps it: its control group (v1 or
v2), its process tree, its drive, and its GPUs through NVML.

Standard library only (psutil and pynvml are imported lazily, where present), so the
readers run by path in any runtime image. Nothing here raises for a missing file or
an absent driver: the Resources panel polls it, and a poller must never break.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_SELF_CGROUP = Path("/proc/self/cgroup")
V1_UNLIMITED = 2**60  # cgroup v1 writes "no limit" as a page-rounded 2^63 - 1
DRIVE_MAX_ENTRIES = 100_000
DRIVE_MAX_SECONDS = 2.0
NVML_RETRY_SECONDS = 60.0
CPU_RUNTIME_VALUES = ("", "void", "none")  # NVIDIA_VISIBLE_DEVICES of a runtime without GPU


@dataclass(frozen=True)
class Reading:
    """Memory (bytes used) or CPU (seconds of CPU time so far) and the limit."""

    value: float
    limit: float | None
    source: str  # "cgroup v1", "cgroup v2" or "processes"


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None


def _read_int(path: Path) -> int | None:
    text = _read(path)
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def _stat_field(path: Path, name: str) -> int:
    for line in (_read(path) or "").splitlines():
        key, _, value = line.partition(" ")
        if key == name and value.strip().isdigit():
            return int(value)
    return 0


class CgroupReader:
    """This process's control group, v1 or v2; ``None`` from a reader means unreadable.

    The files are looked for under ``root[/<hierarchy>]/<path in /proc/self/cgroup>``,
    then at the hierarchy's top, where a container sees its own group mounted. The top
    of a host's v1 hierarchy (``cgroup.sane_behavior`` is there only) counts the whole
    host, and the top of a v2 hierarchy has no memory.current: neither is read.
    """

    def __init__(
        self,
        root: Path = CGROUP_ROOT,
        proc_self_cgroup: Path = PROC_SELF_CGROUP,
        host_memory: int | None = None,
    ) -> None:
        self.root = root
        self.proc_self_cgroup = proc_self_cgroup
        self.host_memory = host_memory if host_memory is not None else _host_memory()

    def _groups(self) -> tuple[str, dict[str, tuple[str, str]]]:
        """The v2 path, and per v1 controller: (hierarchy directory name, path)."""
        unified, v1 = "/", {}
        for line in (_read(self.proc_self_cgroup) or "").splitlines():
            parts = line.split(":", 2)
            if len(parts) != 3:
                continue
            _, controllers, path = parts
            if not controllers:
                unified = path
            for controller in controllers.split(","):
                v1[controller] = (controllers, path)
        return unified, v1

    def _v1_dir(self, controller: str, filename: str) -> Path | None:
        hierarchy, path = self._groups()[1].get(controller, (controller, "/"))
        for base in dict.fromkeys((self.root / controller, self.root / hierarchy)):
            for directory in (base / path.lstrip("/"), base):
                if (directory / filename).is_file():
                    if (directory / "cgroup.sane_behavior").exists():
                        return None  # the host's root group: host totals
                    return directory
        return None

    def _v2_dir(self) -> Path | None:
        path = self._groups()[0]
        for directory in (self.root / path.lstrip("/"), self.root):
            if (directory / "memory.current").is_file():
                return directory
        return None

    def memory(self) -> Reading | None:
        v2 = self._v2_dir()
        if v2 is not None:
            usage = _read_int(v2 / "memory.current")
            if usage is not None:
                inactive = _stat_field(v2 / "memory.stat", "inactive_file")
                return Reading(max(0, usage - inactive), _read_int(v2 / "memory.max"), "cgroup v2")
        v1 = self._v1_dir("memory", "memory.usage_in_bytes")
        if v1 is None:
            return None
        usage = _read_int(v1 / "memory.usage_in_bytes")
        if usage is None:
            return None
        inactive = _stat_field(v1 / "memory.stat", "total_inactive_file")
        limit = _read_int(v1 / "memory.limit_in_bytes")
        if limit is not None and (limit >= V1_UNLIMITED or limit >= self.host_memory > 0):
            limit = None
        return Reading(max(0, usage - inactive), limit, "cgroup v1")

    def cpu(self) -> Reading | None:
        v2 = self._v2_dir()
        if v2 is not None and (v2 / "cpu.stat").is_file():
            usage_usec = _stat_field(v2 / "cpu.stat", "usage_usec")
            quota, _, period = (_read(v2 / "cpu.max") or "max").partition(" ")
            return Reading(usage_usec / 1e6, _cores(quota, period), "cgroup v2")
        usage_dir = self._v1_dir("cpuacct", "cpuacct.usage")
        usage_ns = _read_int(usage_dir / "cpuacct.usage") if usage_dir else None
        if usage_ns is None:
            return None
        limit = None
        quota_dir = self._v1_dir("cpu", "cpu.cfs_quota_us")
        if quota_dir is not None:
            quota = _read(quota_dir / "cpu.cfs_quota_us") or "-1"
            limit = _cores(quota, _read(quota_dir / "cpu.cfs_period_us") or "")
        return Reading(usage_ns / 1e9, limit, "cgroup v1")


def _cores(quota: str, period: str) -> float | None:
    """cpu.max's or cfs_quota_us/cfs_period_us's cores; None for "max" and -1."""
    try:
        q, p = int(quota), int(period)
    except ValueError:
        return None
    return q / p if q > 0 and p > 0 else None


def _host_memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return 0


def _env_number(env: Mapping[str, str], name: str) -> float | None:
    try:
        value = float(env.get(name, ""))
    except ValueError:
        return None
    return value if value > 0 else None


def process_tree(env: Mapping[str, str]) -> tuple[Reading, Reading]:
    """Memory (RSS) and CPU time of this server and its descendants (the kernels),
    against the spawner's MEM_LIMIT and CPU_LIMIT."""
    try:
        import psutil  # a dependency of ipykernel: in every runtime image
    except ImportError:
        return _this_process(env)
    rss, cpu = 0, 0.0
    me = psutil.Process()
    try:
        processes = [me, *me.children(recursive=True)]
    except psutil.Error:
        processes = [me]
    for process in processes:
        try:
            with process.oneshot():
                rss += process.memory_info().rss
                times = process.cpu_times()
                cpu += times.user + times.system
        except psutil.Error:
            continue  # it ended while we counted
    memory_limit = _env_number(env, "MEM_LIMIT")
    return (
        Reading(rss, int(memory_limit) if memory_limit else None, "processes"),
        Reading(cpu, _env_number(env, "CPU_LIMIT"), "processes"),
    )


def _this_process(env: Mapping[str, str]) -> tuple[Reading, Reading]:
    """Without psutil: this process's resident memory, and the CPU time of it and of
    its waited-for children."""
    rss_kib = 0
    for line in (_read(Path("/proc/self/status")) or "").splitlines():
        if line.startswith("VmRSS:"):
            rss_kib = int(line.split()[1])
    times = os.times()
    cpu = times.user + times.system + times.children_user + times.children_system
    memory_limit = _env_number(env, "MEM_LIMIT")
    return (
        Reading(rss_kib * 1024, int(memory_limit) if memory_limit else None, "processes"),
        Reading(cpu, _env_number(env, "CPU_LIMIT"), "processes"),
    )


@dataclass
class DriveUse:
    used: int | None = None
    complete: bool = False
    measured_at: float = float("-inf")


def drive_usage(
    path: Path, max_entries: int = DRIVE_MAX_ENTRIES, max_seconds: float = DRIVE_MAX_SECONDS
) -> DriveUse:
    """Bytes allocated under ``path`` (no symlink followed); incomplete when the walk
    stops at its bounds or meets a directory it cannot read."""
    deadline = time.monotonic() + max_seconds
    used, entries, complete = 0, 0, True
    stack = [path]
    while stack:
        try:
            with os.scandir(stack.pop()) as listing:
                for entry in listing:
                    entries += 1
                    if entries > max_entries or time.monotonic() > deadline:
                        return DriveUse(used, False, time.monotonic())
                    try:
                        used += entry.stat(follow_symlinks=False).st_blocks * 512
                        if entry.is_dir(follow_symlinks=False):
                            stack.append(Path(entry.path))
                    except OSError:
                        complete = False
        except OSError:
            complete = False
    return DriveUse(used, complete, time.monotonic())


@dataclass
class GpuReader:
    """GPUs through NVML; ``nvml`` replaces the pynvml module (tests pass a fake)."""

    env: Mapping[str, str] = field(default_factory=lambda: os.environ)
    nvml: Any = None
    _ready: bool = False
    _failed_at: float = float("-inf")
    _problem: str = ""

    def cpu_runtime(self) -> bool:
        cuda = self.env.get("CUDA_VISIBLE_DEVICES")
        nvidia = self.env.get("NVIDIA_VISIBLE_DEVICES")
        return cuda == "" or (nvidia is not None and nvidia.strip().lower() in CPU_RUNTIME_VALUES)

    def wanted(self) -> list[str] | None:
        """CUDA_VISIBLE_DEVICES' entries where NVML sees more than this runtime's GPUs
        (a local runtime sees the host's); a container sees only its own (and the
        engine renumbers them), so there nothing is filtered."""
        nvidia = self.env.get("NVIDIA_VISIBLE_DEVICES", "").strip().lower()
        cuda = self.env.get("CUDA_VISIBLE_DEVICES")
        if cuda is None or (nvidia and nvidia != "all"):
            return None
        return [e.strip() for e in cuda.split(",") if e.strip()]

    def _open(self) -> bool:
        if self._ready:
            return True
        if time.monotonic() - self._failed_at < NVML_RETRY_SECONDS:
            return False
        if self.nvml is None:
            try:
                import pynvml
            except ImportError:
                # without the driver's library there is no GPU to speak of: quiet
                self._fail(
                    "NVML is not available in this runtime (nvidia-ml-py is missing)",
                    quiet=not _driver_library(),
                )
                return False
            self.nvml = pynvml
        try:
            self.nvml.nvmlInit()
        except self.nvml.NVMLError as e:
            not_found = getattr(self.nvml, "NVML_ERROR_LIBRARY_NOT_FOUND", None)
            # no driver library: no GPU to speak of
            quiet = getattr(e, "value", None) == not_found
            self._fail(f"NVML is not available in this runtime: {e}", quiet=quiet)
            return False
        except OSError as e:
            self._fail(f"NVML is not available in this runtime: {e}")
            return False
        self._ready = True
        return True

    def _fail(self, problem: str, quiet: bool = False) -> None:
        if not quiet:
            log.warning("kernelhub resources: %s", problem)
        self._failed_at, self._problem = time.monotonic(), "" if quiet else problem

    def read(self) -> tuple[list[dict[str, Any]], str]:
        """(GPUs, problem); both empty in a CPU runtime."""
        if self.cpu_runtime():
            return [], ""
        if not self._open():
            return [], self._problem
        nvml = self.nvml
        wanted = self.wanted()
        gpus = []
        try:
            for index in range(nvml.nvmlDeviceGetCount()):
                handle = nvml.nvmlDeviceGetHandleByIndex(index)
                uuid = _text(nvml.nvmlDeviceGetUUID(handle))
                if wanted is not None and not any(
                    w == str(index) or (not w.isdigit() and uuid.startswith(w)) for w in wanted
                ):
                    continue
                memory = nvml.nvmlDeviceGetMemoryInfo(handle)
                gpus.append(
                    {
                        "index": index,
                        "uuid": uuid,
                        "name": _text(nvml.nvmlDeviceGetName(handle)),
                        "utilization": int(nvml.nvmlDeviceGetUtilizationRates(handle).gpu),
                        "memory_used": int(memory.used),
                        "memory_total": int(memory.total),
                    }
                )
        except nvml.NVMLError as e:
            log.warning("kernelhub resources: NVML failed: %s", e)
            return [], f"NVML cannot read this runtime's GPUs: {e}"
        return gpus, ""


def _driver_library() -> bool:
    import ctypes

    try:
        ctypes.CDLL("libnvidia-ml.so.1")
    except OSError:
        return False
    return True


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)  # old pynvml: bytes
