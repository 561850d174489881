"""The quota daemon's per-runtime memory and per-cycle report, and limits from rules."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from kernelhub.quotas.hub_api import ServerInfo
from kernelhub.quotas.policy import (
    IDLE_WARNING,
    SESSION_WARNING,
    Limits,
    Rule,
    Verdict,
    effective_limits,
    idle_verdict,
)
from kernelhub.quotas.runtimes import Runtime, session_young
from kernelhub.quotas.store import RuleSet


@dataclass
class Track:
    """Per-runtime memory between cycles."""

    started: datetime | None
    last_time: datetime | None = None  # end of the last interval written to the store
    last_cycle: datetime | None = None
    cpu_total: float | None = None  # cumulative CPU seconds at the last cycle
    cpu_pending: float = 0.0  # CPU seconds since last_time, not yet written
    # (time, CPU seconds) at the last process scan, and the cores used since the one before
    cpu_scanned: tuple[float, float] | None = None
    cpu_fraction: float | None = None
    usage: Any = None  # the scan result last folded in (scans are rarer than cycles)
    util_seconds: float = 0.0  # GPU utilization x seconds since last_time
    # (time, GPU util), each above all later ones: the max since t is the first at/after t
    gpu_utils: deque[tuple[datetime, float]] = field(default_factory=deque)
    warned: set[str] = field(default_factory=set)
    stopping: bool = False
    young: tuple[Any, datetime | None] = (None, None)  # (limits, session young until)


@dataclass
class CycleReport:
    """What one cycle did, for logs and tests."""

    time: datetime
    runtimes: int = 0
    accounted_seconds: dict[str, float] = field(default_factory=dict)
    warnings: list[tuple[str, str]] = field(default_factory=list)  # (runtime key, reason)
    stops: list[tuple[str, str]] = field(default_factory=list)


def limits_of(rules: Iterable[Rule], server: ServerInfo, fallback: Rule | None) -> Limits:
    """Effective limits from the rules read this cycle (one query for all runtimes)."""
    default = next((r for r in rules if r.scope == "default"), fallback)
    groups = [r for r in rules if r.scope == "group" and r.subject in server.groups]
    user = next((r for r in rules if r.scope == "user" and r.subject == server.user), None)
    return effective_limits(*RuleSet(default, groups, user))


def young(runtime: Runtime, track: Track, limits: Limits, now: datetime) -> bool:
    """No session verdict possible yet (True without a start: nothing to judge)."""
    if track.young[0] is not limits:  # once per rule set: session_young's bound
        started, hours = runtime.server.started, limits.session_hours(runtime.runtime_type)
        bound = None
        if started is not None and session_young(started, hours, now):
            bound = started + timedelta(hours=hours or 0) - SESSION_WARNING
        track.young = (limits, bound)
    bound = track.young[1]
    return runtime.server.started is None or (bound is not None and now < bound)


def idle(runtime: Runtime, track: Track, limits: Limits, now: datetime) -> Verdict | None:
    """The idle rule's verdict; None early for a runtime far from its limit."""
    window = timedelta(minutes=limits.idle_minutes or 0)
    utils, since = track.gpu_utils, now - window
    while utils and utils[0][0] < since:
        utils.popleft()
    server, kernels = runtime.server, runtime.kernels
    last = server.last_activity
    for t in (server.started, kernels.last_activity if kernels is not None else None):
        if t is not None and (last is None or t > last):
            last = t
    if last is None or limits.idle_minutes is None:
        return None
    if now - last < window - IDLE_WARNING:
        return None  # far from the limit, whatever the GPU or kernels say
    recent = next((u for t, u in utils if t >= last), 0.0)
    gpu_recent = recent if runtime.gpus else None
    busy = runtime.kernels.busy if runtime.kernels is not None else False
    return idle_verdict(limits, last, gpu_recent, busy, now)
