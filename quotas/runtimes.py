"""Host processes → runtimes, and each runtime's CPU, memory and connections.

Two ways a process belongs to a runtime:

* Docker: ``/proc/<pid>/cgroup`` names the container (64 hex digits); the
  container's ``org.kernelhub.*`` labels say whose runtime it is.
* Local: a runtime's server is started with ``JUPYTERHUB_USER`` and
  ``JUPYTERHUB_SERVER_NAME`` in its environment, and its kernels are its
  descendants; ``JUPYTERHUB_API_URL`` tells apart the runtimes of several hubs
  on one host (the tests run several).

Everything here blocks (``/proc`` reads, the Docker SDK): the daemon calls
``ProcessScanner.scan`` through ``run_blocking``. A process is classified once
(by PID and start time) and then only its ``stat`` is read each cycle, so a
busy host costs one ``listdir`` plus one small read per runtime process.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from kernelhub.quotas.hub_api import KernelActivity, ServerInfo
from kernelhub.quotas.telemetry import GpuSample

LABEL_PREFIX = "org.kernelhub"
CONTAINER_ID = re.compile(r"[0-9a-f]{64}")
TCP_ESTABLISHED = "01"
# unclassified PIDs are re-checked this often (cycles): a PID may be reused
RECHECK_CYCLES = 120


@dataclass(frozen=True)
class Owner:
    """Whose runtime a process belongs to."""

    user: str
    server: str
    runtime_type: str = ""
    gpus: tuple[str, ...] = ()  # GPU indexes or UUIDs, as the spawner assigned them
    container: str | None = None  # container id for Docker runtimes

    @property
    def key(self) -> str:
        return f"{self.user}/{self.server}"


@dataclass
class RuntimeUsage:
    """One runtime's processes at one scan."""

    owner: Owner
    pids: list[int] = field(default_factory=list)
    cpu_seconds: float = 0.0  # cumulative user+system of live processes and reaped children
    rss_bytes: int = 0
    connections: list[tuple[str, int]] = field(default_factory=list)  # remote (ip, port)
    processes: list[tuple[int, str, str]] = field(default_factory=list)  # pid, name, cmdline


@dataclass
class _Proc:
    start: int  # start time in clock ticks: (pid, start) names a process uniquely
    owner: Owner | None
    name: str = ""
    cmdline: str = ""
    seen_cycle: int = 0


LabelLookup = Callable[[str], "dict[str, str] | None"]


class ProcessScanner:
    """Scans ``/proc`` (``proc`` in tests) for the runtimes of the hub at ``hub_api_url``."""

    def __init__(
        self,
        hub_api_url: str | None = None,
        *,
        proc: str | os.PathLike[str] = "/proc",
        container_labels: LabelLookup | None = None,
        connections: bool = True,
    ) -> None:
        self.proc = Path(proc)
        self.hub_api_url = hub_api_url.rstrip("/") if hub_api_url else None
        self._labels = container_labels or docker_labels
        self._label_cache: dict[str, Owner | None] = {}
        self._procs: dict[int, _Proc] = {}
        self._cycle = 0
        self.connections = connections
        self._tick = os.sysconf("SC_CLK_TCK")
        self._page = os.sysconf("SC_PAGE_SIZE")
        self._host_netns = _readlink(self.proc / "self" / "ns" / "net")
        # a daemon that itself runs in a container sees its own id in every local process
        own = CONTAINER_ID.search(_read(self.proc / "self" / "cgroup"))
        self._own_container = own.group(0) if own else None

    def scan(self) -> dict[str, RuntimeUsage]:
        """Every runtime found, by ``user/server``."""
        self._cycle += 1
        stats: dict[int, list[str]] = {}
        for entry in os.listdir(self.proc):
            if entry.isdigit():
                fields = self._stat(int(entry))
                if fields is not None:
                    stats[int(entry)] = fields
        for pid in [pid for pid in self._procs if pid not in stats]:
            del self._procs[pid]
        found: dict[str, RuntimeUsage] = {}
        # parents before children (PIDs mostly grow), so a child can inherit its parent
        for pid in sorted(stats, key=lambda p: int(stats[p][19])):
            fields = stats[pid]
            owner = self._classify(pid, fields, stats)
            if owner is None:
                continue
            usage = found.setdefault(owner.key, RuntimeUsage(owner))
            known = self._procs[pid]
            usage.pids.append(pid)
            # utime stime cutime cstime: reaped children count in their parent
            ticks = sum(int(f) for f in fields[11:15])
            usage.cpu_seconds += ticks / self._tick
            usage.rss_bytes += int(fields[21]) * self._page
            usage.processes.append((pid, known.name, known.cmdline))
        if self.connections:
            for usage in found.values():
                usage.connections = self._connections(usage.pids)
        return found

    # --- classification ---

    def _classify(self, pid: int, fields: list[str], stats: dict[int, list[str]]) -> Owner | None:
        start = int(fields[19])
        known = self._procs.get(pid)
        fresh = known is not None and self._cycle - known.seen_cycle < RECHECK_CYCLES
        if known is not None and known.start == start and (known.owner is not None or fresh):
            return known.owner
        owner = self._owner_of(pid, int(fields[1]))
        name = fields[0]
        cmdline = ""
        if owner is not None:
            cmdline = _read(self.proc / str(pid) / "cmdline").replace("\0", " ").strip()
        self._procs[pid] = _Proc(start, owner, name, cmdline, self._cycle)
        return owner

    def _owner_of(self, pid: int, ppid: int) -> Owner | None:
        parent = self._procs.get(ppid)
        if parent is not None and parent.owner is not None:
            return parent.owner  # the local runtime's process tree (a kernel, a terminal)
        match = CONTAINER_ID.search(_read(self.proc / str(pid) / "cgroup"))
        if match is not None and match.group(0) != self._own_container:
            container = match.group(0)
            if container not in self._label_cache:
                self._label_cache[container] = _owner_from_labels(container, self._labels)
            if self._label_cache[container] is not None:
                return self._label_cache[container]
        # not a kernelhub container (or the daemon's own): maybe a local runtime
        return self._local_owner(pid)

    def _local_owner(self, pid: int) -> Owner | None:
        raw = _read(self.proc / str(pid) / "environ")  # others' processes: unreadable, ""
        if "JUPYTERHUB_USER=" not in raw:
            return None
        env = dict(item.split("=", 1) for item in raw.split("\0") if "=" in item)
        if self.hub_api_url and env.get("JUPYTERHUB_API_URL", "").rstrip("/") != self.hub_api_url:
            return None  # another hub's runtime
        if "JUPYTERHUB_SERVER_NAME" not in env:
            return None
        gpus = tuple(g for g in env.get("CUDA_VISIBLE_DEVICES", "").split(",") if g)
        return Owner(
            env["JUPYTERHUB_USER"],
            env["JUPYTERHUB_SERVER_NAME"],
            env.get("KERNELHUB_RUNTIME_TYPE", ""),
            gpus,
        )

    # --- measurements ---

    def _stat(self, pid: int) -> list[str] | None:
        """Fields of /proc/<pid>/stat from ``comm`` on: [0] comm, [1] ppid, [11:15] times,
        [19] start time, [21] RSS pages (indexes are the man page's minus 2)."""
        text = _read(self.proc / str(pid) / "stat")
        if not text:
            return None
        head, sep, tail = text.rpartition(")")  # comm may hold spaces and parentheses
        if not sep:
            return None
        rest = tail.split()
        if len(rest) < 22:
            return None
        return [head.partition("(")[2], *rest[1:]]

    def _connections(self, pids: list[int]) -> list[tuple[str, int]]:
        """Remote ends of the runtime's established TCP connections."""
        if not pids:
            return []
        base = self.proc / str(pids[0])
        table = _tcp_table(base / "net" / "tcp") | _tcp_table(base / "net" / "tcp6")
        if _readlink(base / "ns" / "net") != self._host_netns:
            return sorted(set(table.values()))  # its own network namespace: all are its own
        # the host's namespace: keep the sockets the runtime's processes hold
        mine: set[tuple[str, int]] = set()
        for pid in pids:
            fd_dir = self.proc / str(pid) / "fd"
            try:
                fds = os.listdir(fd_dir)
            except OSError:
                continue
            for fd in fds:
                link = _readlink(fd_dir / fd)
                if link.startswith("socket:["):
                    remote = table.get(link[8:-1])
                    if remote is not None:
                        mine.add(remote)
        return sorted(mine)


def _tcp_table(path: Path) -> dict[str, tuple[str, int]]:
    """socket inode → remote (ip, port) of established connections in a /proc/net/tcp file."""
    table: dict[str, tuple[str, int]] = {}
    for line in _read(path).splitlines()[1:]:
        parts = line.split()
        if len(parts) < 10 or parts[3] != TCP_ESTABLISHED:
            continue
        address, _, port = parts[2].partition(":")
        table[parts[9]] = (_ip(address), int(port, 16))
    return table


def _ip(hex_address: str) -> str:
    """The kernel writes addresses as host-order 32-bit words in hex."""
    raw = bytes.fromhex(hex_address)
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    if len(words) == 4:
        return ".".join(str(b) for b in words)
    import ipaddress

    address = ipaddress.IPv6Address(words)
    return str(address.ipv4_mapped or address)


def _owner_from_labels(container: str, lookup: LabelLookup) -> Owner | None:
    labels = lookup(container)
    if not labels or f"{LABEL_PREFIX}.user" not in labels:
        return None  # not a kernelhub runtime (or gone)
    gpus = tuple(g for g in labels.get(f"{LABEL_PREFIX}.gpus", "").split(",") if g)
    return Owner(
        labels[f"{LABEL_PREFIX}.user"],
        labels.get(f"{LABEL_PREFIX}.server", ""),
        labels.get(f"{LABEL_PREFIX}.runtime-type", ""),
        gpus,
        container,
    )


def docker_labels(container: str) -> dict[str, str] | None:
    """A container's labels through the Docker SDK; None without an engine or container."""
    try:
        import docker

        client = docker.from_env(timeout=5)
        try:
            return dict(client.containers.get(container).labels or {})
        finally:
            client.close()
    except Exception:  # no engine, no such container, no permission: not ours to map
        return None


def _read(path: Path) -> str:
    try:
        with open(path, "rb") as f:
            return f.read().decode(errors="replace")
    except OSError:
        return ""


def _readlink(path: Path) -> str:
    try:
        return os.readlink(path)
    except OSError:
        return ""


# --- what the daemon assembles per runtime per cycle ---


@dataclass
class Runtime:
    """What the daemon knows of one running runtime at one cycle."""

    server: ServerInfo
    runtime_type: str
    gpus: tuple[GpuSample, ...] = ()
    usage: RuntimeUsage | None = None
    kernels: KernelActivity | None = None

    @property
    def key(self) -> str:
        return self.server.key

    @property
    def gpu_util(self) -> float | None:
        """Mean SM utilization (0..1) of its GPUs; None without a GPU."""
        utils = [g.sm_util for g in self.gpus if g.sm_util is not None]
        if not self.gpus:
            return None
        return sum(utils) / len(utils) / 100 if utils else 0.0


def observation(runtime: Runtime, now: datetime) -> Any:
    """The mining detector's ``RuntimeObservation`` of ``runtime``: its GPUs carry only
    its own processes."""
    from kernelhub.quotas.detector import Endpoint, ProcessInfo, RuntimeObservation

    usage, kernels = runtime.usage, runtime.kernels
    pids = set(usage.pids) if usage else set()
    gpus = tuple(
        dataclasses.replace(g, processes=tuple(p for p in g.processes if p.pid in pids))
        for g in runtime.gpus
    )
    return RuntimeObservation(
        time=now.timestamp(),
        runtime=runtime.key,
        gpus=gpus,
        processes=[ProcessInfo(*p) for p in usage.processes] if usage else [],
        connections=[Endpoint(*c) for c in usage.connections] if usage else [],
        kernel_busy=kernels.busy if kernels else False,
        last_kernel_activity=(
            kernels.last_activity.timestamp() if kernels and kernels.last_activity else None
        ),
    )
