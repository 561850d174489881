"""Host processes → runtimes, and each runtime's CPU, memory and connections.

Two ways a process belongs to a runtime, neither of them anything its user can set:

* Docker: ``/proc/<pid>/cgroup`` names the container (64 hex digits); the
  container's labels (kernelhub.contract) say whose runtime it is.
* Local: the hub's server state names the runtime's outermost process (its
  sandbox, or the server itself where unsandboxed) and that process's start time
  (``contract.LOCAL_PID_STATE``, ``LOCAL_PID_START_STATE``); the daemon passes
  them to each scan as ``LocalRoot``s. The runtime's processes are that process
  and its descendants: a sandbox's PID namespace reparents orphans (double-forked
  or ``setsid`` daemons) to the namespace's init, itself a child of the root.
  Environment variables (``JUPYTERHUB_USER`` and the like) are never read: a
  process could claim another user's runtime with them, making that runtime look
  like a miner, or its own CPU time disappear.

Everything here blocks (``/proc`` reads, the Docker SDK): the daemon calls
``ProcessScanner.scan`` through ``run_blocking``. Each scan reads every process's
``stat`` (its parent and times); a process's cgroup is read once (by PID and start
time), and a runtime process's name, command line and network namespace once, so a
busy host costs one ``listdir`` plus one small read per process.
"""

from __future__ import annotations

import contextlib
import logging
import os
import resource
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from kernelhub.contract import runtime_key
from kernelhub.quotas.containers import CONTAINER_ID as CONTAINER_ID
from kernelhub.quotas.containers import (
    LabelLookup,
    LabelsUnavailable,
    container_id,
    docker_labels,
)
from kernelhub.quotas.containers import owner_from_labels as _owner_from_labels
from kernelhub.quotas.procfs import read_bytes as _read_bytes
from kernelhub.quotas.procfs import read_text as _read
from kernelhub.quotas.procfs import readlink as _readlink
from kernelhub.quotas.procfs import tcp_table as _tcp_table

log = logging.getLogger(__name__)

# a process found in no kernelhub container has its cgroup read again this often (scans):
# a process joins a container's cgroup after it starts (``docker exec``)
RECHECK_CYCLES = 120
# TCP tables are re-read this often (cycles), and whenever a runtime's processes change:
# the mining detector judges connections over minutes
CONNECTIONS_EVERY = 5
MAX_STAT_FDS = 4096  # open stat descriptors kept (a quarter of RLIMIT_NOFILE at most)
# A command line is read up to this many bytes: its user writes it (megabytes of arguments
# are allowed), and the daemon keeps it, matches it against the mining signatures and
# stores it with a decision; a miner's options come first, and padding that pushes them
# past the cut hides them from the command-line signatures only, not from the others.
MAX_CMDLINE_BYTES = 4096


@dataclass(frozen=True)
class Owner:
    """Whose runtime a process belongs to."""

    user: str
    server: str
    runtime_type: str = ""
    gpus: tuple[str, ...] = ()  # GPU indexes or UUIDs, as the spawner assigned them
    container: str | None = None  # container id for Docker runtimes
    cpu_cores: float | None = None  # cores it may use, where limited (a container's limit)

    @property
    def key(self) -> str:
        return runtime_key(self.user, self.server)


@dataclass
class RuntimeUsage:
    """One runtime's processes at one scan."""

    owner: Owner
    pids: list[int] = field(default_factory=list)
    cpu_seconds: float = 0.0  # cumulative user+system of live processes and reaped children
    rss_bytes: int = 0
    connections: list[tuple[str, int]] = field(default_factory=list)  # remote (ip, port)
    processes: list[tuple[int, str, str]] = field(default_factory=list)  # pid, name, cmdline
    # cumulative, for the mining detector: minor page faults (reaped children's too),
    # seconds runnable but waiting for a CPU (with CPU time: what it would use on an idle
    # host), rchar + wchar (every read and write call) and read_bytes + write_bytes
    minor_faults: int = 0
    cpu_wait_seconds: float | None = 0.0
    io_chars: int | None = 0
    storage_bytes: int | None = 0


@dataclass
class _Proc:
    start: int  # start time in clock ticks: (pid, start) names a process uniquely
    container: Owner | None = None  # its kernelhub container's owner, from its cgroup
    checked: int | None = None  # the cycle its cgroup was read (None: not yet)
    described: bool = False  # name, cmdline and netns read (once it belongs to a runtime)
    name: str = ""
    cmdline: str = ""
    netns: str = ""  # its network namespace, as /proc/<pid>/ns/net links it
    ran: int = -1  # its own utime + stime when these were read: wait, chars, storage
    counters: tuple[float | None, int | None, int | None] = (None, None, None)


def _add_counters(usage: RuntimeUsage, known: _Proc, ran: int, base: str) -> None:
    """Add a process's seconds waiting for a CPU and I/O to its runtime's (None once one is
    unreadable: a partial sum looks quiet), read again only if it ran since: else it did no
    I/O and (given a CPU within a scan) waited for none. Sleeping processes cost nothing."""
    if ran != known.ran:
        stat = _read_bytes(base + "/schedstat").split()  # run ns, wait ns, timeslices
        wait = int(stat[1]) / 1e9 if len(stat) > 1 and stat[1].isdigit() else None
        io = dict(
            ln.split(b": ", 1) for ln in _read_bytes(base + "/io").splitlines() if b": " in ln
        )
        keys = (b"rchar", b"wchar", b"read_bytes", b"write_bytes")
        r, w, rb, wb = (int(io[k]) if io.get(k, b"").strip().isdigit() else None for k in keys)
        chars = None if r is None or w is None else r + w
        storage = None if rb is None or wb is None else rb + wb
        known.ran, known.counters = ran, (wait, chars, storage)
    wait, chars, storage = known.counters
    waited = usage.cpu_wait_seconds
    usage.cpu_wait_seconds = None if wait is None or waited is None else waited + wait
    if chars is None or storage is None or usage.io_chars is None or usage.storage_bytes is None:
        usage.io_chars = usage.storage_bytes = None
    else:
        usage.io_chars, usage.storage_bytes = usage.io_chars + chars, usage.storage_bytes + storage


class LocalRoot(NamedTuple):
    """A local runtime's outermost process, as the hub's server state names it."""

    start: int  # its start time in clock ticks (/proc/<pid>/stat field 22)
    owner: Owner


class ProcessScanner:
    """Scans ``/proc`` (``proc`` in tests) for the runtimes' processes."""

    def __init__(
        self,
        *,
        proc: str | os.PathLike[str] = "/proc",
        container_labels: LabelLookup | None = None,
        connections: bool = True,
        connections_every: int = CONNECTIONS_EVERY,
    ) -> None:
        self.proc = Path(proc)
        self._root = os.fspath(proc)
        self._fds: dict[int, int] = {}  # pid -> open /proc/<pid>/stat of runtime processes
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        self._max_fds = MAX_STAT_FDS if soft < 0 else min(MAX_STAT_FDS, soft // 4)
        self.connections_every = connections_every
        self._conns: dict[str, tuple[tuple[int, ...], list[tuple[str, int]]]] = {}
        self._labels = container_labels or docker_labels
        self._label_cache: dict[str, Owner | None] = {}
        self._unreachable: int | None = None  # the scan in which the engine did not answer
        self._procs: dict[int, _Proc] = {}
        self._cycle = 0
        self.connections = connections
        self._tick = os.sysconf("SC_CLK_TCK")
        self._page = os.sysconf("SC_PAGE_SIZE")
        self._host_netns = _readlink(f"{self._root}/self/ns/net")
        # a daemon that itself runs in a container sees its own id in every local process
        self._own_container = container_id(_read(f"{self._root}/self/cgroup"))

    def scan(self, local_roots: Mapping[int, LocalRoot]) -> dict[str, RuntimeUsage]:
        """Every runtime found, by ``user/server``; ``local_roots``: the local runtimes'
        outermost processes by PID (from the hub's server state, read this cycle)."""
        self._cycle += 1
        stats: dict[int, list[bytes]] = {}
        starts: dict[int, int] = {}
        for entry in os.listdir(self._root):
            if entry.isdigit():
                pid = int(entry)
                fields = self._stat(pid)
                if fields is not None:
                    stats[pid] = fields
                    starts[pid] = int(fields[19])
        for pid in [pid for pid in self._procs if starts.get(pid) != self._procs[pid].start]:
            self._drop(pid)  # exited, or its PID reused by another process
        owners = self._owners(stats, starts, local_roots)
        for pid in [pid for pid in self._fds if pid not in owners]:
            os.close(self._fds.pop(pid))  # no longer a runtime's (its server stopped)
        found: dict[str, RuntimeUsage] = {}
        tick, page = self._tick, self._page
        # oldest first: a runtime's first PID is its root (its connections are read there)
        for pid in sorted(owners, key=starts.__getitem__):
            owner, fields = owners[pid], stats[pid]
            known = self._describe(pid, fields)
            usage = found.get(owner.key)
            if usage is None:
                usage = found[owner.key] = RuntimeUsage(owner)
            usage.pids.append(pid)
            # utime stime cutime cstime: reaped children count in their parent
            ticks = int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])
            usage.cpu_seconds += ticks / tick
            usage.rss_bytes += int(fields[21]) * page
            usage.minor_faults += int(fields[7]) + int(fields[8])  # minflt, cminflt
            ran = int(fields[11]) + int(fields[12])  # its own utime + stime
            _add_counters(usage, known, ran, f"{self._root}/{pid}")
            usage.processes.append((pid, known.name, known.cmdline))
        if self.connections:
            self._all_connections(found)
        return found

    def close(self) -> None:
        """Close the cached ``stat`` file descriptors."""
        for pid in list(self._fds):
            os.close(self._fds.pop(pid))

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # interpreter shutdown
            self.close()

    def _drop(self, pid: int) -> None:
        del self._procs[pid]
        fd = self._fds.pop(pid, None)
        if fd is not None:
            os.close(fd)

    # --- attribution ---

    def _owners(
        self,
        stats: dict[int, list[bytes]],
        starts: dict[int, int],
        roots: Mapping[int, LocalRoot],
    ) -> dict[int, Owner]:
        """Each runtime process's owner: a local root's (the root itself, and whatever
        descends from it), else its kernelhub container's. A child takes its parent's
        owner; the parent is followed only where it started no later than the child, so
        a parent PID reused while this scan read ``/proc`` hands nothing down."""
        resolved: dict[int, Owner | None] = {}
        for pid in stats:
            chain: list[int] = []  # unresolved, from pid up to its oldest unresolved ancestor
            inherited: Owner | None = None
            current = pid
            while True:
                if current in resolved:
                    inherited = resolved[current]
                    break
                root = roots.get(current)
                if root is not None and root.start == starts[current]:
                    inherited = resolved[current] = root.owner
                    break
                chain.append(current)
                parent, start = int(stats[current][1]), starts[current]
                parent_start = starts.get(parent)
                if parent_start is None or parent_start > start:
                    break
                if parent_start == start and parent in chain:
                    break  # a loop (PIDs reused mid-scan, within one clock tick)
                current = parent
            for member in reversed(chain):  # the oldest first: it hands its owner down
                if inherited is None:
                    inherited = self._container_owner(member, starts[member])
                resolved[member] = inherited
        return {pid: owner for pid, owner in resolved.items() if owner is not None}

    def _container_owner(self, pid: int, start: int) -> Owner | None:
        """The owner its cgroup's kernelhub container names (read once per process, a miss
        again every RECHECK_CYCLES)."""
        known = self._procs.get(pid)
        if known is None:
            known = self._procs[pid] = _Proc(start)
        elif known.checked is not None and (
            known.container is not None or self._cycle - known.checked < RECHECK_CYCLES
        ):
            return known.container
        known.checked = self._cycle
        container = container_id(_read(f"{self._root}/{pid}/cgroup"))
        known.container = None
        if container is not None and container != self._own_container:
            if container not in self._label_cache:
                try:
                    self._label_cache[container] = self._ask_labels(container)
                except LabelsUnavailable:
                    known.checked = None  # its cgroup and the engine: again next scan
                    return None
            known.container = self._label_cache[container]
        return known.container

    def _ask_labels(self, container: str) -> Owner | None:
        """The container's owner by its labels; ``LabelsUnavailable`` where the engine
        cannot be asked (asked once per scan then: a down engine costs one try)."""
        if self._unreachable == self._cycle:
            raise LabelsUnavailable(container)
        try:
            owner = _owner_from_labels(container, self._labels)
        except LabelsUnavailable as e:
            if self._unreachable is None:  # once per outage
                log.warning("cannot read container labels (%s); asking again next scan", e)
            self._unreachable = self._cycle
            raise
        self._unreachable = None
        return owner

    def _describe(self, pid: int, fields: list[bytes]) -> _Proc:
        """A runtime process's name, command line and network namespace (read once, and
        again after an exec: its name in ``stat``, read every scan, changed), and an open
        ``stat`` descriptor for the next scans."""
        known = self._procs.get(pid)
        if known is None:
            known = self._procs[pid] = _Proc(int(fields[19]))
        base = f"{self._root}/{pid}"
        name = fields[0].decode(errors="replace")
        # an exec (a launcher turning into a miner) keeps the PID; mid-exec, cmdline reads ""
        if not known.described or name != known.name or not known.cmdline:
            known.described = True
            known.name = name
            cmdline = _read(base + "/cmdline", MAX_CMDLINE_BYTES)
            known.cmdline = cmdline.replace("\0", " ").strip()
            known.netns = _readlink(base + "/ns/net")
        if pid not in self._fds and len(self._fds) < self._max_fds:
            with contextlib.suppress(OSError):  # its stat, each scan: one open fd
                self._fds[pid] = os.open(base + "/stat", os.O_RDONLY | os.O_CLOEXEC)
        return known

    # --- measurements ---

    def _stat(self, pid: int) -> list[bytes] | None:
        """Fields of /proc/<pid>/stat from ``comm`` on: [0] comm, [1] ppid, [7:9] minor
        faults (own, reaped children's), [11:15] times, [19] start time, [21] RSS pages
        (indexes are the man page's minus 2)."""
        fd = self._fds.get(pid)
        if fd is None:
            raw = _read_bytes(f"{self._root}/{pid}/stat")
        else:
            try:  # a descriptor of an exited process answers ESRCH, even if its PID is reused
                raw = os.pread(fd, 4096, 0)
            except OSError:
                raw = b""
            if not raw:
                os.close(self._fds.pop(pid))
        if not raw:
            return None
        head, sep, tail = raw.rpartition(b")")  # comm may hold spaces and parentheses
        if not sep:
            return None
        rest = tail.split()
        if len(rest) < 22:
            return None
        rest[0] = head.partition(b"(")[2]
        return rest

    def _all_connections(self, found: dict[str, RuntimeUsage]) -> None:
        """Each runtime's connections: re-read every ``connections_every`` cycles, when its
        processes change, and each network namespace's TCP table once per reading."""
        refresh = self.connections_every <= 1 or self._cycle % self.connections_every == 1
        tables: dict[str, dict[str, tuple[str, int]]] = {}
        previous, self._conns = self._conns, {}
        for key, usage in found.items():
            pids = tuple(usage.pids)
            known = previous.get(key)
            if known is not None and not refresh and known[0] == pids:
                usage.connections = known[1]
            else:
                usage.connections = self._connections(usage.pids, tables)
            self._conns[key] = (pids, usage.connections)

    def _connections(
        self, pids: list[int], tables: dict[str, dict[str, tuple[str, int]]]
    ) -> list[tuple[str, int]]:
        """Remote ends of the runtime's established TCP connections."""
        if not pids:
            return []
        base = f"{self._root}/{pids[0]}"
        proc = self._procs.get(pids[0])
        netns = proc.netns if proc is not None else _readlink(base + "/ns/net")
        table = tables.get(netns) if netns else None
        if table is None:  # one TCP table per network namespace
            table = _tcp_table(base + "/net/tcp") | _tcp_table(base + "/net/tcp6")
            if netns:
                tables[netns] = table
        if netns != self._host_netns:
            return sorted(set(table.values()))  # its own network namespace: all are its own
        # the host's namespace: keep the sockets the runtime's processes hold
        mine: set[tuple[str, int]] = set()
        for pid in pids:
            fd_dir = f"{self._root}/{pid}/fd"
            try:
                fds = os.listdir(fd_dir)
            except OSError:
                continue
            for fd in fds:
                link = _readlink(f"{fd_dir}/{fd}")
                if link.startswith("socket:["):
                    remote = table.get(link[8:-1])
                    if remote is not None:
                        mine.add(remote)
        return sorted(mine)
