"""What the quota daemon knows of one runtime at one cycle.

A ``Runtime`` joins the hub's server, the GPUs it holds in this cycle's sample, its
processes at the last scan and (where asked) its kernels' state, as the runtime last
reported it to the hub. ``GpuIndex`` finds its GPUs: built once per sample, it answers
every runtime of the cycle.
``local_roots`` tells the process scanner where each local runtime's processes begin.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from kernelhub.quotas.hub_api import KernelActivity, ServerInfo
from kernelhub.quotas.policy import SESSION_WARNING
from kernelhub.quotas.runtimes import LocalRoot, Owner, RuntimeUsage
from kernelhub.quotas.telemetry import GpuSample, TelemetrySample

if TYPE_CHECKING:  # the detector's module loads only where an observation is made
    from kernelhub.quotas.detector import RuntimeObservation


@dataclass
class Runtime:
    """What the daemon knows of one running runtime at one cycle."""

    server: ServerInfo
    runtime_type: str
    gpus: tuple[GpuSample, ...] = ()
    usage: RuntimeUsage | None = None
    # set by the daemon once asked (KernelActivityCache.read); None: not asked, or no
    # fresh report from the runtime (the hub's last activity decides alone)
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


@dataclass(frozen=True)
class GpuIndex:
    """One sample's GPUs by position: per PID computing on them, and per index or UUID."""

    sample: TelemetrySample
    by_pid: dict[int, list[int]]
    by_name: dict[str, int]

    @classmethod
    def of(cls, sample: TelemetrySample) -> GpuIndex:
        names = {str(g.index): i for i, g in enumerate(sample.gpus)}
        names.update({g.uuid: i for i, g in enumerate(sample.gpus)})
        return cls(sample, gpu_positions(sample.gpus), names)

    def gpus_of(self, usage: RuntimeUsage | None) -> tuple[GpuSample, ...]:
        """A runtime's GPUs: those assigned to it, and any one of its processes computes on."""
        positions: set[int] = set()
        if usage is None:
            return ()
        if self.by_pid:
            for pid in usage.pids:
                at = self.by_pid.get(pid)
                if at:
                    positions.update(at)
        if usage.owner.gpus:
            names = self.by_name
            positions.update(names[g] for g in usage.owner.gpus if g in names)
        return tuple(self.sample.gpus[i] for i in sorted(positions))


def local_roots(servers: Iterable[ServerInfo]) -> dict[int, LocalRoot]:
    """The local runtimes' outermost processes by PID, from the hub's server state.

    A server without both its PID and that process's start time has no root: a bare
    PID could be another process by now. A PID two servers claim is neither's: the
    hub's state is wrong, and no guess about it may charge a user.
    """
    roots: dict[int, LocalRoot] = {}
    claimed: set[int] = set()
    for server in servers:
        pid, start = server.local_pid, server.local_pid_start
        if pid is None or start is None:
            continue
        if pid in claimed:
            roots.pop(pid, None)
            continue
        claimed.add(pid)
        owner = Owner(server.user, server.name, server.runtime_type, server.gpu_ids)
        roots[pid] = LocalRoot(start, owner)
    return roots


def session_young(started: datetime, hours: float | None, now: datetime) -> bool:
    """Too young for a session-age warning (``session_rule`` would say None)."""
    aware = started.tzinfo is not None and hours is not None
    return aware and now - started < timedelta(hours=hours or 0) - SESSION_WARNING


def gpu_positions(gpus: tuple[GpuSample, ...]) -> dict[int, list[int]]:
    """PID -> positions in ``gpus`` of the GPUs it computes on."""
    index: dict[int, list[int]] = {}
    for i, gpu in enumerate(gpus):
        for p in gpu.processes:
            at = index.setdefault(p.pid, [])
            if not at or at[-1] != i:
                at.append(i)
    return index


def observation(
    runtime: Runtime, now: datetime, cpu_fraction: float | None = None
) -> RuntimeObservation:
    """The mining detector's ``RuntimeObservation`` of ``runtime``: its GPUs carry only
    its own processes; ``cpu_fraction`` is the cores it used since the previous scan,
    judged against its CPU limit (the host's cores where it has none)."""
    from kernelhub.quotas.detector import Endpoint, RuntimeObservation
    from kernelhub.quotas.signatures import ProcessInfo

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
        cpu_fraction=cpu_fraction,
        cpu_cores=(usage.owner.cpu_cores if usage else None) or float(os.cpu_count() or 1),
        kernel_busy=kernels.busy if kernels else False,
        last_kernel_activity=(
            kernels.last_activity.timestamp() if kernels and kernels.last_activity else None
        ),
        rss_bytes=usage.rss_bytes if usage else None,
        minor_faults=usage.minor_faults if usage else None,
        cpu_wait_seconds=usage.cpu_wait_seconds if usage else None,
        io_chars=usage.io_chars if usage else None,
        storage_bytes=usage.storage_bytes if usage else None,
    )
