"""The quota daemon's cycle: sample, account, judge, enforce.

Each cycle reads the hub's running servers, the GPUs and the host's processes,
accounts each runtime's interval in the store (idempotently, by a cursor per
runtime), then applies the session-age and idle rules: a warning first where the
rule gives one, then a stop through the hub's REST API (servers only: the user's
drive is never touched).

Blocking work (``/proc``, the store, Docker) runs through ``run_blocking``.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from kernelhub.executor import run_blocking
from kernelhub.quotas.clock import Clock
from kernelhub.quotas.hub_api import HubApi, HubApiError, ServerInfo
from kernelhub.quotas.metrics import QuotaMetrics
from kernelhub.quotas.policy import Limits, Rule, Verdict, effective_limits, idle_verdict
from kernelhub.quotas.policy import session_verdict as session_rule
from kernelhub.quotas.runtimes import (
    ProcessScanner,
    Runtime,
    RuntimeUsage,
    gpu_positions,
    observation,
    session_young,
)
from kernelhub.quotas.store import QuotaStore, RuleSet
from kernelhub.quotas.telemetry import GpuTelemetry, TelemetryError, TelemetrySample

log = logging.getLogger(__name__)

DEFAULT_INTERVAL = 5.0
DEFAULT_RUNTIME_TYPE = "cpu"
# after a restart, a runtime's gap since its cursor is accounted at most this far back:
# the runtime held its GPUs meanwhile, but a daemon down for days should not guess
MAX_BACKFILL = timedelta(hours=1)
RULES_TTL = 10.0  # seconds a rule change may take to apply: one query, not one per cycle


@dataclass
class _Track:
    """Per-runtime memory between cycles."""

    started: datetime | None
    last_time: datetime | None = None  # end of the last interval written to the store
    last_cycle: datetime | None = None
    cpu_total: float | None = None  # cumulative CPU seconds at the last cycle
    cpu_pending: float = 0.0  # CPU seconds since last_time, not yet written
    util_seconds: float = 0.0  # GPU utilization x seconds since last_time
    # (time, GPU util), each above all later ones: the max since t is the first at/after t
    gpu_utils: deque[tuple[datetime, float]] = field(default_factory=deque)
    warned: set[str] = field(default_factory=set)
    stopping: bool = False


@dataclass
class CycleReport:
    """What one cycle did, for logs and tests."""

    time: datetime
    runtimes: int = 0
    accounted_seconds: dict[str, float] = field(default_factory=dict)
    warnings: list[tuple[str, str]] = field(default_factory=list)  # (runtime key, reason)
    stops: list[tuple[str, str]] = field(default_factory=list)


class QuotaDaemon:
    def __init__(
        self,
        store: QuotaStore,
        telemetry: GpuTelemetry,
        hub: HubApi,
        clock: Clock,
        *,
        interval: float = DEFAULT_INTERVAL,
        account_period: float = 0.0,
        scanner: ProcessScanner | None = None,
        metrics: QuotaMetrics | None = None,
        default_limits: Rule | None = None,
        detector: Any = None,
    ) -> None:
        self.store = store
        self.telemetry = telemetry
        self.hub = hub
        self.clock = clock
        self.interval = interval
        # how often each runtime's usage is written (0: every cycle)
        self.account_period = account_period
        self.rules_ttl = RULES_TTL
        self._rules: tuple[float, list[Rule]] | None = None
        self.scanner = scanner or ProcessScanner(hub.api_url)
        self.metrics = metrics or QuotaMetrics()
        # the operator's command-line defaults, where the store holds no default rule
        self.default_limits = default_limits
        self.detector = detector
        self.observers: list[Callable[[Runtime, Any], Awaitable[None]]] = []
        if detector is not None:
            self.observers.append(self._detect)
        self._tracks: dict[str, _Track] = {}
        self._pid_gpus: tuple[Any, dict[int, list[int]]] = (None, {})  # per sample
        self._limits: tuple[Any, dict[tuple[str, tuple[str, ...]], Limits]] = (None, {})
        self._report: CycleReport | None = None  # the cycle in progress

    # --- the loop ---

    async def run(self, stopping: asyncio.Event) -> None:
        """Cycle every ``interval`` until ``stopping`` is set; a failed cycle is logged."""
        while not stopping.is_set():
            began = self.clock.now()
            try:
                await self.run_cycle()
            except Exception:
                log.exception("quota cycle failed; retrying next interval")
            delay = self.interval - (self.clock.now() - began)
            sleep = asyncio.ensure_future(self.clock.sleep(max(0.0, delay)))
            stop = asyncio.ensure_future(stopping.wait())
            await asyncio.wait({sleep, stop}, return_when=asyncio.FIRST_COMPLETED)
            sleep.cancel()
            stop.cancel()

    async def run_cycle(self) -> CycleReport:
        started_at = asyncio.get_running_loop().time()
        now = datetime.fromtimestamp(self.clock.now(), UTC)
        report = self._report = CycleReport(now)  # observers' stops land in it too
        servers, sample, usages, rules = await asyncio.gather(
            self.hub.servers(),
            self._sample(),
            run_blocking(self.scanner.scan),
            self._current_rules(),
        )
        for gpu in sample.gpus:
            self.metrics.gpu(str(gpu.index), gpu.sm_util)
        live = [s for s in servers if s.pending != "spawn" and s.started is not None]
        runtimes = [self._runtime(s, sample, usages) for s in live]
        kernels = await asyncio.gather(*(self.hub.kernel_activity(r.server) for r in runtimes))
        for runtime, activity in zip(runtimes, kernels, strict=True):
            runtime.kernels = activity
        for key in set(self._tracks) - {r.key for r in runtimes}:
            del self._tracks[key]  # stopped: a new session starts afresh
            if self.detector is not None:
                self.detector.forget(key)
        await asyncio.gather(*(self._first_sight(r) for r in runtimes if r.key not in self._tracks))
        await self._account(runtimes, now, report)
        for runtime in runtimes:
            for observer in self.observers:
                await observer(runtime, self._observation(runtime, now))
            limits = self._limits_of(rules, runtime.server)
            await self._judge(runtime, limits, now, report)
        report.runtimes = len(runtimes)
        self.metrics.runtimes.set(len(runtimes))
        self.metrics.cycle_seconds.observe(asyncio.get_running_loop().time() - started_at)
        return report

    def _limits_of(self, rules: list[Rule], server: ServerInfo) -> Limits:
        """``_limits``, computed once per rule set and (user, groups)."""
        if self._limits[0] is not rules:
            self._limits = (rules, {})
        key, cache = (server.user, server.groups), self._limits[1]
        if key not in cache:
            cache[key] = _limits(rules, server, self.default_limits)
        return cache[key]

    async def _current_rules(self) -> list[Rule]:
        now = self.clock.now()
        if self._rules is None or now - self._rules[0] >= self.rules_ttl:
            self._rules = (now, await run_blocking(self.store.rules))
        return self._rules[1]

    def _gpus_of_pids(self, sample: TelemetrySample) -> dict[int, list[int]]:
        if self._pid_gpus[0] is not sample:  # once per sample
            self._pid_gpus = (sample, gpu_positions(sample.gpus))
        return self._pid_gpus[1]

    async def _sample(self) -> TelemetrySample:
        try:
            return await self.telemetry.sample()
        except TelemetryError as e:
            log.warning("GPU sample failed this cycle: %s", e)
            return TelemetrySample(self.clock.now(), ())

    def _runtime(
        self, server: ServerInfo, sample: TelemetrySample, usages: dict[str, RuntimeUsage]
    ) -> Runtime:
        usage = usages.get(server.key)
        owner = usage.owner if usage else None
        kind = server.runtime_type or (owner.runtime_type if owner else "") or DEFAULT_RUNTIME_TYPE
        # its GPUs: those assigned to it, and any GPU one of its processes computes on
        index = self._gpus_of_pids(sample)
        positions = {i for pid in usage.pids for i in index.get(pid, ())} if usage else set()
        if owner and owner.gpus:
            assigned = set(owner.gpus)
            positions.update(
                i
                for i, g in enumerate(sample.gpus)
                if str(g.index) in assigned or g.uuid in assigned
            )
        gpus = tuple(sample.gpus[i] for i in sorted(positions))
        return Runtime(server, kind, gpus, usage)

    async def _first_sight(self, runtime: Runtime) -> None:
        """A runtime new to this daemon (or to this daemon process, after a restart)."""
        track = _Track(started=runtime.server.started)
        cursor = await run_blocking(self.store.cursor, runtime.key)
        since = runtime.server.started
        if cursor is not None and since is not None and cursor > since:
            # the same session, accounted by an earlier daemon process up to its cursor
            track.last_time = cursor
        # warnings already given this session are not given again after a restart
        events = await run_blocking(self.store.events, runtime.server.user, since)
        track.warned = {
            e.reason for e in events if e.kind == "warn" and e.server == runtime.server.name
        }
        self._tracks[runtime.key] = track

    # --- accounting ---

    async def _account(self, runtimes: list[Runtime], now: datetime, report: CycleReport) -> None:
        """Add this cycle to each runtime's pending interval; write those due, together.

        One write per ``account_period`` and one transaction for all due runtimes keep
        the store's cost flat in the interval and the number of runtimes. A kill -9
        loses no GPU-seconds: the restarted daemon accounts from the store's cursors
        (only the unwritten part's utilization detail is replaced by the next sample).
        """
        due = [(r, i) for r in runtimes if (i := self._pending(r, now)) is not None]
        if not due:
            return
        added = await run_blocking(self.store.account_intervals, [i for _, i in due])
        # only once written: a failed write leaves the intervals pending for the next cycle
        for (runtime, _), seconds in zip(due, added, strict=True):
            track = self._tracks[runtime.key]
            track.last_time, track.util_seconds, track.cpu_pending = now, 0.0, 0.0
            report.accounted_seconds[runtime.key] = seconds
            if runtime.gpus and seconds:
                self.metrics.user_gpu_seconds.labels(user=runtime.server.user).inc(
                    seconds * len(runtime.gpus)
                )

    def _pending(self, runtime: Runtime, now: datetime) -> tuple[Any, ...] | None:
        """Fold this cycle into the runtime's track; its interval if one is due to write."""
        track = self._tracks[runtime.key]
        if track.last_time is None or track.last_time < now - MAX_BACKFILL:
            # first sight: the interval that just passed (or since the start, if shorter)
            started = runtime.server.started or now
            track.last_time = max(started, now - timedelta(seconds=self.interval))
            track.last_cycle = track.last_time
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
        start = track.last_time
        span = (now - start).total_seconds()
        if span <= 0 or span < self.account_period:
            return None
        server = runtime.server
        mean_util = track.util_seconds / span
        gpus = len(runtime.gpus)
        return (
            runtime.key,
            server.user,
            runtime.runtime_type,
            start,
            now,
            gpus,
            mean_util,
            track.cpu_pending,
        )

    # --- policy ---

    async def _judge(
        self, runtime: Runtime, limits: Limits, now: datetime, report: CycleReport
    ) -> None:
        track = self._tracks[runtime.key]
        if track.stopping or runtime.server.pending == "stop":
            return
        verdicts: list[Verdict] = []
        started, hours = runtime.server.started, limits.session_hours(runtime.runtime_type)
        if started is not None and not session_young(started, hours, now):
            verdict = session_rule(limits, runtime.runtime_type, started, now)
            if verdict is not None:
                verdicts.append(verdict)
        verdict = self._idle(runtime, track, limits, now)
        if verdict is not None:
            verdicts.append(verdict)
        stop = next((v for v in verdicts if v.kind == "stop"), None)
        if stop is not None:
            await self.stop(runtime, stop.reason, stop.message, stop.details, report)
            return
        for verdict in verdicts:
            if verdict.reason not in track.warned:
                track.warned.add(verdict.reason)
                await self._record(
                    runtime, "warn", verdict.reason, verdict.message, verdict.details
                )
                report.warnings.append((runtime.key, verdict.reason))

    def _idle(
        self, runtime: Runtime, track: _Track, limits: Limits, now: datetime
    ) -> Verdict | None:
        candidates = [runtime.server.last_activity, runtime.server.started]
        if runtime.kernels is not None:
            candidates.append(runtime.kernels.last_activity)
        last = max((t for t in candidates if t is not None), default=None)
        if last is None:
            return None
        window = timedelta(minutes=limits.idle_minutes or 0)
        while track.gpu_utils and track.gpu_utils[0][0] < now - window:
            track.gpu_utils.popleft()
        recent = next((u for t, u in track.gpu_utils if t >= last), 0.0)
        gpu_recent = recent if runtime.gpus else None
        busy = runtime.kernels.busy if runtime.kernels is not None else False
        return idle_verdict(limits, last, gpu_recent, busy, now)

    async def stop(
        self,
        runtime: Runtime,
        reason: str,
        message: str,
        details: dict[str, Any],
        report: CycleReport | None = None,
    ) -> None:
        """Stop ``runtime`` through the hub and record why (shown to the user next visit)."""
        track = self._tracks.get(runtime.key)
        if track is not None:
            track.stopping = True
        try:
            stopped = await self.hub.stop_server(runtime.server.user, runtime.server.name)
        except (HubApiError, httpx.HTTPError) as e:
            log.error("could not stop %s (%s): %s", runtime.key, reason, e)
            if track is not None:
                track.stopping = False  # try again next cycle
            return
        details = {**details, "stopped_by_hub": stopped}
        await self._record(runtime, "stop", reason, message, details)
        self.metrics.stops.labels(reason=reason).inc()
        log.info("stopped %s (%s): %s", runtime.key, reason, message)
        if report is not None:
            report.stops.append((runtime.key, reason))

    async def _record(
        self, runtime: Runtime, kind: str, reason: str, message: str, details: dict[str, Any]
    ) -> None:
        await run_blocking(
            self.store.record_event,
            runtime.server.user,
            runtime.server.name,
            runtime.runtime_type,
            kind,
            reason,
            message,
            details,
            datetime.fromtimestamp(self.clock.now(), UTC),
        )

    # --- the mining detector's extension point ---

    def _observation(self, runtime: Runtime, now: datetime) -> Any:
        """What observers see; built only when an observer listens."""
        return observation(runtime, now) if self.observers else None

    async def _detect(self, runtime: Runtime, observation: Any) -> None:
        decision = self.detector.observe(observation)
        if not decision.flagged or self._tracks[runtime.key].stopping:
            return
        explanation = decision.explain()
        message = "your runtime was stopped: it behaved like cryptocurrency mining"
        # the readable explanation beside the raw decision: admins read the event, not a dict
        details = {**decision.to_dict(), "explanation": explanation}
        await self.stop(runtime, "mining-like", message, details, self._report)
        await run_blocking(self.store.flag, runtime.server.user, explanation, True)


def _limits(rules: Iterable[Rule], server: ServerInfo, fallback: Rule | None) -> Limits:
    """Effective limits from the rules read this cycle (one query for all runtimes)."""
    default = next((r for r in rules if r.scope == "default"), fallback)
    groups = [r for r in rules if r.scope == "group" and r.subject in server.groups]
    user = next((r for r in rules if r.scope == "user" and r.subject == server.user), None)
    return effective_limits(*RuleSet(default, groups, user))
