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
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from kernelhub.executor import run_blocking
from kernelhub.quotas.activity import KernelActivityCache
from kernelhub.quotas.clock import Clock
from kernelhub.quotas.cycle import CycleReport, Track, idle, limits_of, young
from kernelhub.quotas.hub_api import HubApi, HubApiError, ServerInfo
from kernelhub.quotas.metrics import QuotaMetrics
from kernelhub.quotas.policy import (
    Limits,
    Rule,
    Verdict,
)
from kernelhub.quotas.policy import session_verdict as session_rule
from kernelhub.quotas.runtimes import (
    ProcessScanner,
    Runtime,
    RuntimeUsage,
    gpu_positions,
    observation,
)
from kernelhub.quotas.store import QuotaStore
from kernelhub.quotas.telemetry import GpuTelemetry, TelemetryError, TelemetrySample

log = logging.getLogger(__name__)

DEFAULT_INTERVAL = 5.0
DEFAULT_RUNTIME_TYPE = "cpu"
# after a restart, a runtime's gap since its cursor is accounted at most this far back:
# the runtime held its GPUs meanwhile, but a daemon down for days should not guess
MAX_BACKFILL = timedelta(hours=1)
DEFAULT_PROCESS_INTERVAL = DEFAULT_INTERVAL  # seconds between /proc scans, at most
RULES_TTL = 10.0  # seconds a rule change may take to apply: one query, not one per cycle


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
        process_interval: float = DEFAULT_PROCESS_INTERVAL,
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
        # processes (CPU time, memory, connections) are read at most this often: CPU time
        # is a running total, so reading it less often than the GPUs loses nothing
        self.process_interval = process_interval
        self._scanned: tuple[float, dict[str, RuntimeUsage]] | None = None
        self._scanned_this_cycle = False
        self.scanner = scanner or ProcessScanner(hub.api_url)
        self.metrics = metrics or QuotaMetrics()
        # the operator's command-line defaults, where the store holds no default rule
        self.default_limits = default_limits
        self.detector = detector
        self.observers: list[Callable[[Runtime, Any], Awaitable[None]]] = []
        if detector is not None:
            self.observers.append(self._detect)
        self._tracks: dict[str, Track] = {}
        self._pid_gpus: tuple[Any, dict[int, list[int]]] = (None, {})  # per sample
        self._gpu_names: dict[str, int] = {}  # index or UUID -> position, per sample
        self._limits: tuple[Any, dict[tuple[str, tuple[str, ...]], Limits]] = (None, {})
        self._report: CycleReport | None = None  # the cycle in progress
        self.kernels = KernelActivityCache()

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
            self._usages(),
            self._current_rules(),
        )
        for gpu in sample.gpus:
            self.metrics.gpu(str(gpu.index), gpu.sm_util)
        live = [s for s in servers if s.pending != "spawn" and s.started is not None]
        runtimes = [self._runtime(s, sample, usages) for s in live]
        tracks = self._tracks
        if len(tracks) != len(runtimes) or any(r.key not in tracks for r in runtimes):
            for key in set(tracks) - {r.key for r in runtimes}:
                del tracks[key]  # stopped: a new session starts afresh
                self.kernels.forget(key)
                if self.detector is not None:
                    self.detector.forget(key)
            await asyncio.gather(*(self._first_sight(r) for r in runtimes if r.key not in tracks))
        await self._account(runtimes, now, report)
        # kernel state only where a decision may depend on it: the detector watches every
        # runtime; the idle rule only those it would warn or stop without kernel state
        judged = [(r, self._limits_of(rules, r.server)) for r in runtimes]
        idles = [idle(r, tracks[r.key], lim, now) for r, lim in judged]
        # observers (the mining detector) judge behaviour over minutes: they look at each
        # runtime when its processes were read, not at every GPU sample in between
        observers = self.observers if self._scanned_this_cycle else []
        asked = runtimes if observers else [r for r, v in zip(runtimes, idles, strict=True) if v]
        await self.kernels.fill(self.hub, asked, self.clock.now())
        for (runtime, limits), verdict in zip(judged, idles, strict=True):
            for observer in observers:
                await observer(runtime, self._observation(runtime, now))
            if verdict is not None and runtime.kernels is not None:
                verdict = idle(runtime, tracks[runtime.key], limits, now)
            if verdict is not None or not young(runtime, tracks[runtime.key], limits, now):
                await self._judge(runtime, limits, now, report, verdict)
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
            cache[key] = limits_of(rules, server, self.default_limits)
        return cache[key]

    async def _usages(self) -> dict[str, RuntimeUsage]:
        now = self.clock.now()
        # a little slack: a cycle that starts a hair early still scans on schedule
        due = self._scanned is None or now - self._scanned[0] >= self.process_interval - 0.05
        self._scanned_this_cycle = due
        if due:
            self._scanned = (now, await run_blocking(self.scanner.scan))
        assert self._scanned is not None
        return self._scanned[1]

    async def _current_rules(self) -> list[Rule]:
        now = self.clock.now()
        if self._rules is None or now - self._rules[0] >= self.rules_ttl:
            self._rules = (now, await run_blocking(self.store.rules))
        return self._rules[1]

    def _gpus_of_pids(self, sample: TelemetrySample) -> dict[int, list[int]]:
        if self._pid_gpus[0] is not sample:  # once per sample, with GPU names -> positions
            self._pid_gpus = (sample, gpu_positions(sample.gpus))
            names = {str(g.index): i for i, g in enumerate(sample.gpus)}
            self._gpu_names = {**names, **{g.uuid: i for i, g in enumerate(sample.gpus)}}
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
        positions: set[int] = set()
        if usage and index:
            for pid in usage.pids:
                at = index.get(pid)
                if at:
                    positions.update(at)
        if owner and owner.gpus:
            names = self._gpu_names
            positions.update(names[g] for g in owner.gpus if g in names)
        gpus = tuple(sample.gpus[i] for i in sorted(positions))
        return Runtime(server, kind, gpus, usage)

    async def _first_sight(self, runtime: Runtime) -> None:
        """A runtime new to this daemon (or to this daemon process, after a restart)."""
        track = Track(started=runtime.server.started)
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
        last_time = track.last_time
        if last_time is None or now - last_time > MAX_BACKFILL:
            # first sight: the interval that just passed (or since the start, if shorter)
            started = runtime.server.started or now
            last_time = max(started, now - timedelta(seconds=self.interval))
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
        if runtime.usage is not None and runtime.usage is not track.usage:  # a new scan
            t, scanned = now.timestamp(), track.cpu_scanned
            if scanned is not None and cpu_now is not None and t > scanned[0]:
                track.cpu_fraction = max(0.0, cpu_now - scanned[1]) / (t - scanned[0])
            track.cpu_scanned = (t, cpu_now) if cpu_now is not None else None
            track.usage = runtime.usage
        segment = (now - (track.last_cycle or now)).total_seconds()
        track.util_seconds += (util or 0.0) * max(0.0, segment)
        track.last_cycle = now
        start = last_time
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
        self,
        runtime: Runtime,
        limits: Limits,
        now: datetime,
        report: CycleReport,
        idle: Verdict | None,
    ) -> None:
        track = self._tracks[runtime.key]
        if track.stopping or runtime.server.pending == "stop":
            return
        verdicts: list[Verdict] = []
        started = runtime.server.started
        if started is not None and not young(runtime, track, limits, now):
            verdict = session_rule(limits, runtime.runtime_type, started, now)
            if verdict is not None:
                verdicts.append(verdict)
        if idle is not None:
            verdicts.append(idle)
        if not verdicts:
            return
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
        if not self.observers:
            return None
        return observation(runtime, now, self._tracks[runtime.key].cpu_fraction)

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
