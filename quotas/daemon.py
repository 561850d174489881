"""The quota daemon's cycle: sample, account, judge, enforce.

Each cycle reads the hub's running servers, the GPUs and the host's processes
(after the servers: their state says where each local runtime's processes begin),
accounts each runtime's interval in the store (idempotently, by a cursor per
runtime), then applies the session-age and idle rules: a warning first where the
rule gives one, then a stop through the hub's REST API (servers only: the user's
drive is never touched).

Blocking work (``/proc``, the store, Docker) and the mining detector's (matching
signatures on users' command lines) run through ``run_blocking``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import httpx

from kernelhub.executor import run_blocking
from kernelhub.quotas.activity import KernelActivityCache
from kernelhub.quotas.clock import Clock
from kernelhub.quotas.cycle import (
    MAX_BACKFILL as MAX_BACKFILL,  # re-exported: its home was this module
)
from kernelhub.quotas.cycle import (
    CycleReport,
    RulesRead,
    Scan,
    Track,
    idle,
    note_scan,
    on_this_node,
    pending_interval,
    young,
)
from kernelhub.quotas.hub_api import HubApiError, ServerInfo
from kernelhub.quotas.metrics import QuotaMetrics
from kernelhub.quotas.policy import Limits, Rule, Verdict
from kernelhub.quotas.policy import session_verdict as session_rule
from kernelhub.quotas.ports import Decision, Detector, HubClient, Scanner
from kernelhub.quotas.runtime_view import GpuIndex, Runtime, local_roots, observation
from kernelhub.quotas.runtimes import ProcessScanner, RuntimeUsage
from kernelhub.quotas.store import QuotaStore
from kernelhub.quotas.telemetry import GpuTelemetry, TelemetryError, TelemetrySample

log = logging.getLogger(__name__)

DEFAULT_INTERVAL = 5.0
DEFAULT_RUNTIME_TYPE = "cpu"
DEFAULT_PROCESS_INTERVAL = DEFAULT_INTERVAL  # seconds between /proc scans, at most
RULES_TTL = 10.0  # seconds a rule change may take to apply: one query, not one per cycle


class QuotaDaemon:
    def __init__(
        self,
        store: QuotaStore,
        telemetry: GpuTelemetry,
        hub: HubClient,
        clock: Clock,
        *,
        interval: float = DEFAULT_INTERVAL,
        account_period: float = 0.0,
        process_interval: float = DEFAULT_PROCESS_INTERVAL,
        scanner: Scanner | None = None,
        metrics: QuotaMetrics | None = None,
        default_limits: Rule | None = None,
        detector: Detector | None = None,
        node_local: bool = False,
    ) -> None:
        self.store = store
        self.telemetry = telemetry
        self.hub = hub
        self.clock = clock
        self.interval = interval
        # how often each runtime's usage is written (0: every cycle)
        self.account_period = account_period
        self.rules_ttl = RULES_TTL
        self._rules: RulesRead | None = None
        # processes (CPU time, memory, connections) are read at most this often: CPU time
        # is a running total, so reading it less often than the GPUs loses nothing
        self.process_interval = process_interval
        self._scan: Scan | None = None  # the last scan
        self.scanner: Scanner = scanner or ProcessScanner()
        self.metrics = metrics or QuotaMetrics()
        # the operator's command-line defaults, where the store holds no default rule
        self.default_limits = default_limits
        self.detector = detector
        # one daemon per node (a cluster): each judges, accounts and stops only the
        # runtimes whose processes it finds on its node (cycle.py: on_this_node)
        self.node_local = node_local
        self._tracks: dict[str, Track] = {}
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
        report = CycleReport(now)
        (servers, scan), sample, rules = await asyncio.gather(
            self._servers_and_processes(),
            self._sample(),
            self._current_rules(),
        )
        for gpu in sample.gpus:
            self.metrics.gpu(str(gpu.index), gpu.sm_util)
        live = [s for s in servers if s.pending != "spawn" and s.started is not None]
        gpus = GpuIndex.of(sample)
        runtimes = [self._runtime(s, gpus, scan.usages) for s in live]
        if self.node_local:
            runtimes = on_this_node(runtimes)
        new = await self._follow(runtimes)
        tracks = self._tracks
        # the CPU rate, at each process scan; a runtime first seen between scans takes
        # the last scan at once, so that its first rate comes with the next one
        for runtime in runtimes if scan.fresh else new:
            note_scan(tracks[runtime.key], runtime.usage, now)
        await self._account(runtimes, now, report)
        judged = [(r, rules.limits_for(r.server, self.default_limits)) for r in runtimes]
        # kernel state only where a decision may depend on it: the idle rule's for those
        # it would warn or stop without kernel state (kernel state can only postpone that)
        near = [idle(r, tracks[r.key], limits, now) is not None for r, limits in judged]
        # the mining detector judges behaviour over minutes, and sees every runtime's
        # kernels: it looks at each runtime when its processes were read, not at every
        # GPU sample in between
        detector = self.detector if scan.fresh else None
        asked = [r for r, n in zip(runtimes, near, strict=True) if n or detector is not None]
        kernels = await self.kernels.read(self.hub, asked, self.clock.now())
        for runtime in asked:
            runtime.kernels = kernels.get(runtime.key)
        decisions: Sequence[Decision | None] = [None] * len(runtimes)
        if detector is not None:
            # CPU work on what users write (their command lines): off the event loop, which
            # quotas, culling and every other runtime share. One hop per cycle; only this
            # cycle uses the detector (forget() ran before), so it needs no lock
            seen = [(r, tracks[r.key].cpu_fraction) for r in runtimes]
            decisions = await run_blocking(_observe_all, detector, seen, now)
        for (runtime, limits), maybe_idle, decision in zip(judged, near, decisions, strict=True):
            track = tracks[runtime.key]
            if decision is not None:
                await self._detected(decision, runtime, report)
            # the idle rule's second pass, with the kernel state just asked
            verdict = idle(runtime, track, limits, now) if maybe_idle else None
            if verdict is not None or not young(runtime, track, limits, now):
                await self._judge(runtime, limits, now, report, verdict)
        report.runtimes = len(runtimes)
        self.metrics.runtimes.set(len(runtimes))
        self.metrics.cycle_seconds.observe(asyncio.get_running_loop().time() - started_at)
        return report

    async def _servers_and_processes(self) -> tuple[list[ServerInfo], Scan]:
        """The hub's servers, then the processes: the scan attributes local processes
        by descent from the roots these servers' state names (a new runtime's processes
        are its own at its first scan)."""
        servers = await self.hub.servers()
        return servers, await self._processes(servers)

    async def _processes(self, servers: list[ServerInfo]) -> Scan:
        """The runtimes' processes: read where ``process_interval`` has passed, else the
        last scan's (``fresh`` says which)."""
        now, last = self.clock.now(), self._scan
        keys = frozenset(s.key for s in servers if s.pending != "spawn" and s.started)
        # a little slack: a cycle that starts a hair early still scans on schedule;
        # node-local, a server new since the last scan is looked for at once: until its
        # processes are found here, no daemon accounts it
        if (
            last is not None
            and now - last.time < self.process_interval - 0.05
            and not (self.node_local and keys - last.servers)
        ):
            return Scan(last.time, last.usages, fresh=False, servers=last.servers)
        # node-local, a hub PID names a process of the hub's machine, and the server's
        # state does not say which machine: a local runtime is no node daemon's
        roots = {} if self.node_local else local_roots(servers)
        usages = await run_blocking(self.scanner.scan, roots)
        self._scan = Scan(now, usages, fresh=True, servers=keys)
        return self._scan

    async def _current_rules(self) -> RulesRead:
        now = self.clock.now()
        if self._rules is None or now - self._rules.time >= self.rules_ttl:
            self._rules = RulesRead(now, await run_blocking(self.store.rules))
        return self._rules

    async def _sample(self) -> TelemetrySample:
        try:
            return await self.telemetry.sample()
        except TelemetryError as e:
            log.warning("GPU sample failed this cycle: %s", e)
            return TelemetrySample(self.clock.now(), ())

    def _runtime(
        self, server: ServerInfo, gpus: GpuIndex, usages: Mapping[str, RuntimeUsage]
    ) -> Runtime:
        usage = usages.get(server.key)
        owner = usage.owner if usage else None
        kind = server.runtime_type or (owner.runtime_type if owner else "") or DEFAULT_RUNTIME_TYPE
        return Runtime(server, kind, gpus.gpus_of(usage), usage)

    async def _follow(self, runtimes: list[Runtime]) -> list[Runtime]:
        """Tracks for the runtimes running now: new ones start one (and are returned),
        stopped ones end theirs."""
        tracks = self._tracks
        if len(tracks) == len(runtimes) and all(r.key in tracks for r in runtimes):
            return []
        for key in set(tracks) - {r.key for r in runtimes}:
            del tracks[key]  # stopped: a new session starts afresh
            self.kernels.forget(key)
            if self.detector is not None:
                self.detector.forget(key)
        new = [r for r in runtimes if r.key not in tracks]
        if self.node_local:  # which node's daemon has a runtime: operators ask
            for runtime in new:
                log.info("%s runs on this node: accounted and judged here", runtime.key)
        await asyncio.gather(*(self._first_sight(r) for r in new))
        return new

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
        tracks, interval, period = self._tracks, self.interval, self.account_period
        due = [
            (r, i)
            for r in runtimes
            if (i := pending_interval(tracks[r.key], r, now, interval, period)) is not None
        ]
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

    # --- the mining detector ---

    async def _detected(self, decision: Decision, runtime: Runtime, report: CycleReport) -> None:
        """Stop and flag a runtime the detector flagged."""
        track = self._tracks[runtime.key]
        if not decision.flagged or track.stopping:
            return
        explanation = decision.explain()
        message = "your runtime was stopped: it behaved like cryptocurrency mining"
        # the readable explanation beside the raw decision: admins read the event, not a dict
        details = {**decision.to_dict(), "explanation": explanation}
        await self.stop(runtime, "mining-like", message, details, report)
        await run_blocking(self.store.flag, runtime.server.user, explanation, True)


def _observe_all(
    detector: Detector, runtimes: list[tuple[Runtime, float | None]], now: datetime
) -> list[Decision]:
    """The detector's decision on each runtime (with its CPU use since the last scan):
    blocking, run through ``run_blocking``."""
    return [detector.observe(observation(r, now, cpu)) for r, cpu in runtimes]
