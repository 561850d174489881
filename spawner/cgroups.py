"""Per-runtime control groups: memory, CPU and process limits that the kernel enforces.

cgroup v1 (one hierarchy per controller, as on hosts with the hybrid layout) and v2
(one unified hierarchy) are both handled. A runtime's group is
``kernelhub/<hub id>/<runtime>`` under each controller; the sandbox's first process
joins it before anything of the user's runs, and every process it starts stays in it
(the runtime cannot write the root-owned group files, and no cgroupfs is mounted in
its sandbox). Stopping a runtime kills whatever is left in its group.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
V1_CONTROLLERS = {"memory": "memory", "cpu": "cpu", "pids": "pids"}  # limit -> hierarchy
CPU_PERIOD_US = 100_000
KILL_ROUNDS = 50  # rounds of "kill what is listed" before giving up (a fork bomb re-fills)


# joins the runtime's cgroups (as root, before anything of the user's runs), then execs
JOIN_CGROUPS = (
    'for f; do [ "$f" = -- ] && break; echo $$ > "$f" || exit 125; shift; done; shift; exec "$@"'
)


@dataclass(frozen=True)
class Limits:
    memory_bytes: int | None = None
    cpu_cores: float | None = None
    max_processes: int | None = None

    def rlimits(self, per_account: bool) -> dict[str, int]:
        """The strongest rlimits there are for these limits, as prlimit options, where no
        cgroup holds them: address space per process, processes per real UID (only
        where that UID is the runtime's own account). CPU has no rlimit equivalent."""
        limits: dict[str, int] = {}
        if self.max_processes and per_account:
            limits["nproc"] = self.max_processes
        if self.memory_bytes:
            limits["as"] = self.memory_bytes
        return limits


class CgroupsUnavailable(RuntimeError):
    """No writable cgroup hierarchy with the controllers needed; the message says why."""


class CgroupTree:
    """Where this hub's runtime groups live: ``kernelhub/<hub_id>`` in each hierarchy."""

    def __init__(self, version: str, bases: dict[str, Path]) -> None:
        self.version = version  # "v1" or "v2"
        self.bases = bases  # limit name -> this hub's parent group (one dir for v2)

    @classmethod
    def detect(cls, hub_id: str, root: Path = CGROUP_ROOT) -> CgroupTree:
        if (root / "cgroup.controllers").exists():
            return cls._v2(root, hub_id)
        bases: dict[str, Path] = {}
        missing = []
        for limit, hierarchy in V1_CONTROLLERS.items():
            top = root / hierarchy
            if not (top / "cgroup.procs").exists():
                missing.append(hierarchy)
                continue
            bases[limit] = top / "kernelhub" / hub_id
        if missing:
            raise CgroupsUnavailable(f"cgroup v1 controllers not mounted: {', '.join(missing)}")
        for base in bases.values():
            _make_dir(base)
        return cls("v1", bases)

    @classmethod
    def _v2(cls, root: Path, hub_id: str) -> CgroupTree:
        wanted = {"memory", "cpu", "pids"}
        available = set((root / "cgroup.controllers").read_text().split())
        if not wanted <= available:
            raise CgroupsUnavailable(
                f"cgroup v2 lacks controllers: {', '.join(sorted(wanted - available))}"
            )
        group = root
        for part in ("kernelhub", hub_id):
            _enable_controllers(group, wanted)
            group = group / part
            _make_dir(group)
        _enable_controllers(group, wanted)
        return cls("v2", {"memory": group, "cpu": group, "pids": group})

    def runtime(self, name: str) -> RuntimeCgroup:
        dirs = sorted({base / name for base in self.bases.values()})
        return RuntimeCgroup(self.version, dirs, {k: b / name for k, b in self.bases.items()})


class RuntimeCgroup:
    """One runtime's group(s): created with limits, joined, emptied, removed."""

    def __init__(self, version: str, dirs: list[Path], by_limit: dict[str, Path]) -> None:
        self.version = version
        self.dirs = dirs
        self.by_limit = by_limit

    def create(self, limits: Limits) -> None:
        for directory in self.dirs:
            _make_dir(directory)
        memory, cpu, pids = self.by_limit["memory"], self.by_limit["cpu"], self.by_limit["pids"]
        if self.version == "v1":
            if limits.memory_bytes:
                _write(memory / "memory.limit_in_bytes", limits.memory_bytes)
                swap = memory / "memory.memsw.limit_in_bytes"
                if swap.exists():  # memory+swap: no swapping past the limit
                    _write(swap, limits.memory_bytes)
            if limits.cpu_cores:
                _write(cpu / "cpu.cfs_period_us", CPU_PERIOD_US)
                _write(cpu / "cpu.cfs_quota_us", int(limits.cpu_cores * CPU_PERIOD_US))
        else:
            if limits.memory_bytes:
                _write(memory / "memory.max", limits.memory_bytes)
                if (memory / "memory.swap.max").exists():
                    _write(memory / "memory.swap.max", 0)
            if limits.cpu_cores:
                _write(cpu / "cpu.max", f"{int(limits.cpu_cores * CPU_PERIOD_US)} {CPU_PERIOD_US}")
        if limits.max_processes:
            _write(pids / "pids.max", limits.max_processes)

    def procs_files(self) -> list[Path]:
        """The files a process writes its PID to, to join every group."""
        return [directory / "cgroup.procs" for directory in self.dirs]

    def join_command(self) -> list[str]:
        """A command prefix that joins these groups, then runs the rest of the command."""
        return [
            "/bin/sh",
            "-c",
            JOIN_CGROUPS,
            "kernelhub-join",
            *map(str, self.procs_files()),
            "--",
        ]

    def pids(self) -> set[int]:
        found: set[int] = set()
        for directory in self.dirs:
            with contextlib.suppress(OSError):
                found.update(int(p) for p in (directory / "cgroup.procs").read_text().split())
        return found

    def oom_kills(self) -> int:
        """Processes the kernel killed at this group's memory limit so far."""
        memory = self.by_limit["memory"]
        name = "memory.oom_control" if self.version == "v1" else "memory.events"
        with contextlib.suppress(OSError, ValueError):
            for line in (memory / name).read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
        return 0

    def kill_all(self) -> int:
        """SIGKILL every process in the group (a fork bomb included); how many were left."""
        kill_file = self.by_limit["pids"] / "cgroup.kill"
        if self.version == "v2" and kill_file.exists():
            with contextlib.suppress(OSError):
                _write(kill_file, 1)
        else:
            with contextlib.suppress(OSError):  # no new processes while we kill
                _write(self.by_limit["pids"] / "pids.max", 0)
        killed: set[int] = set()
        for _ in range(KILL_ROUNDS):
            left = self.pids()
            if not left:
                break
            for pid in left:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            killed |= left
            time.sleep(0.02)
        return len(killed)

    def remove(self) -> None:
        for directory in self.dirs:
            for _ in range(20):  # killed processes leave the group as they are reaped
                try:
                    directory.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.05)


_HUB_TREES: dict[str, CgroupTree | None] = {}  # by hub id: detected once per process


def hub_cgroups(hub_id: str, log: logging.Logger) -> CgroupTree | None:
    """The hub's cgroup tree, or None (said once in the log) where none can be made."""
    if hub_id not in _HUB_TREES:
        try:
            _HUB_TREES[hub_id] = CgroupTree.detect(hub_id)
        except (CgroupsUnavailable, OSError) as e:
            log.warning("Runtime limits fall back to rlimits: %s", e)
            _HUB_TREES[hub_id] = None
    return _HUB_TREES[hub_id]


def _make_dir(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CgroupsUnavailable(f"cannot create {path}: {e.strerror}") from None


def _enable_controllers(group: Path, wanted: set[str]) -> None:
    control = group / "cgroup.subtree_control"
    enabled = set(control.read_text().split()) if control.exists() else set()
    if wanted <= enabled:
        return
    try:
        _write(control, " ".join(f"+{c}" for c in sorted(wanted - enabled)))
    except OSError as e:
        raise CgroupsUnavailable(f"cannot enable controllers in {group}: {e.strerror}") from None


def _write(path: Path, value: object) -> None:
    with open(path, "w") as f:  # one write(2): cgroup files take one value per write
        f.write(str(value))
