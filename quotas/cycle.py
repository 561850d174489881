"""The quota daemon's per-runtime memory and per-cycle report, and what one cycle folds
into them: the interval to account, the CPU rate at each process scan, and the rules'
verdicts (limits, session age, idleness)."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import NamedTuple

from kernelhub.quotas.accounting import Interval
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
from kernelhub.quotas.runtime_view import Runtime, session_young
from kernelhub.quotas.runtimes import RuntimeUsage
from kernelhub.quotas.store import RuleSet

# after a restart, a runtime's gap since its cursor is accounted at most this far back:
# the runtime held its GPUs meanwhile, but a daemon down for days should not guess
MAX_BACKFILL = timedelta(hours=1)


class CpuReading(NamedTuple):
    """A runtime's cumulative CPU seconds at one process scan."""

    time: float
    seconds: float


class SessionBound(NamedTuple):
    """Until when a session is too young to judge, for the start and limit it came from."""

    started: datetime | None
    hours: float | None
    young_until: datetime | None


@dataclass(frozen=True)
class Scan:
    """The runtimes' processes as read at ``time``; ``fresh``: read for this cycle."""

    time: float
    usages: Mapping[str, RuntimeUsage]
    fresh: bool
    servers: frozenset[str] = frozenset()  # the hub's servers (keys) when it was read


@dataclass
class RulesRead:
    """The rules as read at ``time``, and the limits they give, per (user, groups)."""

    time: float
    rules: list[Rule]
    limits: dict[tuple[str, tuple[str, ...]], Limits] = field(default_factory=dict)

    def limits_for(self, server: ServerInfo, fallback: Rule | None) -> Limits:
        """``limits_of``, worked out once per (user, groups) while these rules hold."""
        key, known = (server.user, server.groups), self.limits
        if key not in known:
            known[key] = limits_of(self.rules, server, fallback)
        return known[key]


@dataclass
class Track:
    """Per-runtime memory between cycles."""

    started: datetime | None
    last_time: datetime | None = None  # end of the last interval written to the store
    last_cycle: datetime | None = None
    cpu_total: float | None = None  # cumulative CPU seconds at the last cycle
    cpu_pending: float = 0.0  # CPU seconds since last_time, not yet written
    cpu_scanned: CpuReading | None = None  # at the last process scan folded in
    cpu_fraction: float | None = None  # cores used between the last two scans
    util_seconds: float = 0.0  # GPU utilization x seconds since last_time
    # (time, GPU util), each above all later ones: the max since t is the first at/after t
    gpu_utils: deque[tuple[datetime, float]] = field(default_factory=deque)
    warned: set[str] = field(default_factory=set)
    stopping: bool = False
    session: SessionBound | None = None  # young()'s bound, once per start and session limit


@dataclass
class CycleReport:
    """What one cycle did, for logs and tests."""

    time: datetime
    runtimes: int = 0
    accounted_seconds: dict[str, float] = field(default_factory=dict)
    warnings: list[tuple[str, str]] = field(default_factory=list)  # (runtime key, reason)
    stops: list[tuple[str, str]] = field(default_factory=list)


def note_scan(track: Track, usage: RuntimeUsage | None, now: datetime) -> None:
    """Fold the process scan read ``now`` into ``track``: the cores used since the last
    one (scans are rarer than cycles; the daemon calls this at each)."""
    if usage is None:
        return
    t, scanned, cpu_now = now.timestamp(), track.cpu_scanned, usage.cpu_seconds
    if scanned is not None and t > scanned.time:
        track.cpu_fraction = max(0.0, cpu_now - scanned.seconds) / (t - scanned.time)
    track.cpu_scanned = CpuReading(t, cpu_now)


def on_this_node(runtimes: list[Runtime]) -> list[Runtime]:
    """The runtimes whose processes the last scan found on this node.

    With a daemon on every node, each sees every server of the hub but only its own
    node's processes: a runtime without processes here runs on another node (whose
    daemon accounts and judges it), or has not started any yet. Judging it here would
    cull it as idle or account it twice.
    """
    return [r for r in runtimes if r.usage is not None and r.usage.pids]


def pending_interval(
    track: Track, runtime: Runtime, now: datetime, interval: float, account_period: float
) -> Interval | None:
    """Fold this cycle into the runtime's track; its interval if one is due to write
    (``account_period`` seconds after the last write; ``interval``: the cycle's)."""
    last_time = track.last_time
    if last_time is None or now - last_time > MAX_BACKFILL:
        # first sight: the interval that just passed (or since the start, if shorter)
        started = runtime.server.started or now
        last_time = max(started, now - timedelta(seconds=interval))
        track.last_time = track.last_cycle = last_time
    util = runtime.gpu_util
    if util is not None:
        utils = track.gpu_utils
        while utils and utils[-1][1] <= util:
            utils.pop()  # never again the max of a window that holds this sample
        utils.append((now, util))
    cpu_now = runtime.usage.cpu_seconds if runtime.usage else None
    if cpu_now is not None and track.cpu_total is not None:
        track.cpu_pending += max(0.0, cpu_now - track.cpu_total)  # exits can lower the sum
    track.cpu_total = cpu_now
    segment = (now - (track.last_cycle or now)).total_seconds()
    track.util_seconds += (util or 0.0) * max(0.0, segment)
    track.last_cycle = now
    span = (now - last_time).total_seconds()
    if span <= 0 or span < account_period:
        return None
    return Interval(
        runtime_key=runtime.key,
        user=runtime.server.user,
        runtime_type=runtime.runtime_type,
        start=last_time,
        end=now,
        gpus=len(runtime.gpus),
        util_fraction=track.util_seconds / span,
        cpu_seconds=track.cpu_pending,
    )


def limits_of(rules: Iterable[Rule], server: ServerInfo, fallback: Rule | None) -> Limits:
    """Effective limits from the rules read this cycle (one query for all runtimes)."""
    default = next((r for r in rules if r.scope == "default"), fallback)
    groups = [r for r in rules if r.scope == "group" and r.subject in server.groups]
    user = next((r for r in rules if r.scope == "user" and r.subject == server.user), None)
    return effective_limits(*RuleSet(default, groups, user))


def young(runtime: Runtime, track: Track, limits: Limits, now: datetime) -> bool:
    """No session verdict possible yet (True without a start: nothing to judge)."""
    started, hours = runtime.server.started, limits.session_hours(runtime.runtime_type)
    bound = track.session
    if bound is None or bound.started != started or bound.hours != hours:
        # session_young's bound, worked out once: as time only moves on, a session that
        # is no longer young never is again
        until = None
        if started is not None and session_young(started, hours, now):
            until = started + timedelta(hours=hours or 0) - SESSION_WARNING
        bound = track.session = SessionBound(started, hours, until)
    return started is None or (bound.young_until is not None and now < bound.young_until)


def idle(runtime: Runtime, track: Track, limits: Limits, now: datetime) -> Verdict | None:
    """The idle rule's verdict; None early for a runtime far from its limit.

    Kernel state (``runtime.kernels``, where asked) can only postpone a verdict: a
    runtime far from its limit without it is far with it too.
    """
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
    busy = kernels.busy if kernels is not None else False
    return idle_verdict(limits, last, gpu_recent, busy, now)
