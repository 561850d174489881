"""The quota daemon's cycle on its own: processes are read less often than GPUs, after
the servers (whose state roots each local runtime's processes), and the mining detector
looks at each runtime at each read, with its CPU use against its CPU limit.

The hub, the process scanner and the detector are stand-ins here (the real ones are
exercised in test_quotad.py and test_quotad_mining.py); time is a VirtualClock.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import threading
import time
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from kernelhub.quotas.clock import VirtualClock
from kernelhub.quotas.cycle import CycleReport
from kernelhub.quotas.daemon import QuotaDaemon
from kernelhub.quotas.hub_api import KernelActivity, KernelReport, ServerInfo
from kernelhub.quotas.replay import ReplayTelemetry
from kernelhub.quotas.runtimes import LocalRoot, Owner, RuntimeUsage, _owner_from_labels
from kernelhub.quotas.store import QuotaStore
from kernelhub.quotas.telemetry import TelemetrySample

START = 1_767_225_600.0
CPU_PER_SCAN = 2.0  # CPU seconds the runtime uses between two scans


class OneServerHub:
    def __init__(self, started: datetime) -> None:
        self.server = ServerInfo("ada", "", "cpu", started, started, True, None, "/user/ada/")

    async def servers(self) -> list[ServerInfo]:
        return [self.server]

    async def kernel_reports(self) -> dict[str, KernelReport]:
        return {}  # no runtime reported

    async def stop_server(self, user: str, server: str) -> bool:
        return True

    async def close(self) -> None:
        pass


class CountingScanner:
    """ada's runtime, using CPU_PER_SCAN more CPU seconds at every scan."""

    def __init__(self, owner: Owner) -> None:
        self.owner, self.scans = owner, 0

    def scan(self, local_roots: Mapping[int, LocalRoot]) -> dict[str, RuntimeUsage]:
        self.scans += 1
        usage = RuntimeUsage(self.owner, pids=[4242], cpu_seconds=CPU_PER_SCAN * self.scans)
        return {self.owner.key: usage}


class RecordingDetector:
    def __init__(self) -> None:
        self.seen: list[Any] = []

    def observe(self, observation: Any) -> Any:
        self.seen.append(observation)
        return SimpleNamespace(flagged=False)

    def forget(self, runtime: str) -> None:
        pass


@pytest.fixture
def store(tmp_path: Path) -> Iterator[QuotaStore]:
    with QuotaStore.open(f"sqlite:///{tmp_path / 'quotas.sqlite'}") as opened:
        yield opened


def daemon_with(
    store: QuotaStore, scanner: CountingScanner, detector: RecordingDetector, clock: VirtualClock
) -> QuotaDaemon:
    """ada's runtime, its processes read every 5 cycles of 1 s."""
    no_gpus = [TelemetrySample(START + t, ()).to_json_line() for t in range(60)]
    return QuotaDaemon(
        store,
        ReplayTelemetry(no_gpus, clock, loop=True),
        OneServerHub(datetime.fromtimestamp(START, UTC) - timedelta(minutes=5)),
        clock,
        interval=1.0,
        process_interval=5.0,
        scanner=scanner,
        detector=detector,
    )


def run_cycles(store: QuotaStore, owner: Owner, cycles: int) -> tuple[CountingScanner, list[Any]]:
    clock = VirtualClock(START)
    scanner, detector = CountingScanner(owner), RecordingDetector()
    daemon = daemon_with(store, scanner, detector, clock)

    async def go() -> None:
        for _ in range(cycles):
            await daemon.run_cycle()
            clock.advance(1.0)

    asyncio.run(go())
    return scanner, detector.seen


def test_processes_are_read_and_judged_every_process_interval_not_every_cycle(
    store: QuotaStore,
) -> None:
    scanner, seen = run_cycles(store, Owner("ada", ""), cycles=12)

    assert scanner.scans == 3  # at 0, 5 and 10 s
    assert [o.time - START for o in seen] == [0.0, 5.0, 10.0]  # the detector: at each scan


@pytest.mark.parametrize(
    ("cpu_cores", "expected_cores"),
    [
        (1.0, 1.0),  # a container limited to one core
        (None, None),  # no limit: the host's cores
    ],
)
def test_the_detector_sees_cpu_used_since_the_last_scan_against_the_limit(
    store: QuotaStore, cpu_cores: float | None, expected_cores: float | None
) -> None:
    _, seen = run_cycles(store, Owner("ada", "", cpu_cores=cpu_cores), cycles=12)

    assert [o.cpu_fraction for o in seen] == [None, CPU_PER_SCAN / 5.0, CPU_PER_SCAN / 5.0]
    assert {o.cpu_cores for o in seen} == {expected_cores or float(os.cpu_count() or 1)}


class SlowDetector(RecordingDetector):
    """Takes 0.3 s of blocking work per runtime, as matching a pathological command line
    would; notes how often the event loop ran a ticker meanwhile, and in which thread."""

    def __init__(self, ticks: list[float]) -> None:
        super().__init__()
        self.ticks, self.ticks_meanwhile, self.threads = ticks, -1, list[threading.Thread]()

    def observe(self, observation: Any) -> Any:
        self.threads.append(threading.current_thread())
        before = len(self.ticks)
        time.sleep(0.3)
        self.ticks_meanwhile = len(self.ticks) - before
        return super().observe(observation)


def test_the_detector_works_off_the_event_loop(store: QuotaStore) -> None:
    """Quotas, culling and every other runtime share the daemon's event loop: a runtime
    whose judging takes long must not stop it (the ReDoS of the security review)."""
    ticks: list[float] = []
    detector = SlowDetector(ticks)
    daemon = daemon_with(store, CountingScanner(Owner("ada", "")), detector, VirtualClock(START))

    async def cycle_beside_a_ticker() -> None:
        async def tick() -> None:
            while True:
                await asyncio.sleep(0.01)
                ticks.append(time.monotonic())

        ticker = asyncio.create_task(tick())
        try:
            await daemon.run_cycle()
        finally:
            ticker.cancel()

    asyncio.run(cycle_beside_a_ticker())

    assert len(detector.seen) == 1 and detector.threads != [threading.main_thread()]
    assert detector.ticks_meanwhile >= 5  # on the loop it would be 0: ~30 ticks in 0.3 s


@pytest.mark.parametrize(
    ("label", "cores"),
    [("2", 2.0), ("0.5", 0.5), ("", None), ("lots", None), ("0", None), ("-1", None)],
)
def test_a_containers_cpu_limit_comes_from_its_label(label: str, cores: float | None) -> None:
    labels = {"org.kernelhub.user": "ada", "org.kernelhub.cpu-limit": label}
    owner = _owner_from_labels("c0ffee", lambda _: labels)
    assert owner is not None and owner.cpu_cores == cores


class KernelsHub(OneServerHub):
    """Runtimes idle for the given minutes (90 is the default limit), with the reports
    their kernels sent the hub: (busy, seconds ago), or None for no report. Counts the
    hub's reads of the reports."""

    def __init__(self, now: datetime, runtimes: dict[str, tuple[int, tuple[bool, float] | None]]):
        started = now - timedelta(hours=2)
        self.all = [
            ServerInfo(u, "", "cpu", started, now - timedelta(minutes=m), True, None, f"/user/{u}/")
            for u, (m, _) in runtimes.items()
        ]
        self.reports = {
            f"{u}/": KernelReport(KernelActivity(r[0], None), age=r[1])
            for u, (_, r) in runtimes.items()
            if r is not None
        }
        self.reads = 0

    async def servers(self) -> list[ServerInfo]:
        return self.all

    async def kernel_reports(self) -> dict[str, KernelReport]:
        self.reads += 1
        return self.reports


class NoProcesses:
    def scan(self, local_roots: Mapping[int, LocalRoot]) -> dict[str, RuntimeUsage]:
        return {}


def one_cycle(store: QuotaStore, hub: KernelsHub) -> CycleReport:
    clock = VirtualClock(START)
    no_gpus = [TelemetrySample(START, ()).to_json_line()]
    daemon = QuotaDaemon(
        store, ReplayTelemetry(no_gpus, clock, loop=True), hub, clock, scanner=NoProcesses()
    )
    return asyncio.run(daemon.run_cycle())


# user: (minutes idle by the hub's last activity, their runtime's report), and whether
# the idle rule warns (85 of 90 minutes idle warns, unless a kernel executes)
KERNEL_REPORT_RULES = {
    "ada": ((85, (True, 5.0)), False),  # a fresh report of an executing kernel: not idle
    "bob": ((85, (True, 240.0)), True),  # a stale report says nothing (over 180 s old)
    "dee": ((85, (False, 5.0)), True),  # reported, and nothing executes
    "eve": ((85, None), True),  # never reported: the hub's last activity decides
    "cy": ((1, (False, 5.0)), False),  # far from the limit, whatever the kernels say
}


def test_kernel_reports_are_read_once_per_cycle_and_decide_near_the_idle_limit(
    store: QuotaStore,
) -> None:
    runtimes = {user: runtime for user, (runtime, _) in KERNEL_REPORT_RULES.items()}
    hub = KernelsHub(datetime.fromtimestamp(START, UTC), runtimes)

    report = one_cycle(store, hub)

    assert hub.reads == 1  # one read for every runtime, never a call per runtime
    warned = sorted(key for key, reason in report.warnings if reason == "idle")
    assert warned == sorted(f"{u}/" for u, (_, warns) in KERNEL_REPORT_RULES.items() if warns)


def test_kernel_reports_are_not_read_when_no_decision_depends_on_them(
    store: QuotaStore,
) -> None:
    hub = KernelsHub(datetime.fromtimestamp(START, UTC), {"cy": (1, (True, 5.0))})

    report = one_cycle(store, hub)

    assert hub.reads == 0 and not report.warnings


class StartingHub(OneServerHub):
    """ada's runtime runs from the first cycle, bob's local GPU runtime from the second;
    the hub's server state names each one's root process. Logs each call."""

    def __init__(self, started: datetime, log: list[str]) -> None:
        super().__init__(started)
        self.server = dataclasses.replace(self.server, local_pid=4242, local_pid_start=777)
        self.bob = ServerInfo(
            "bob", "big", "gpu", started, started, True, None, "/user/bob/big/",
            local_pid=5353, local_pid_start=888, gpu_ids=("1", "GPU-b"),
        )  # fmt: skip
        self.log, self.cycles = log, 0

    async def servers(self) -> list[ServerInfo]:
        self.cycles += 1
        self.log.append("servers")
        return [self.server] if self.cycles == 1 else [self.server, self.bob]


class RootsScanner:
    """Records the roots each scan is given; finds a process at each root."""

    def __init__(self, log: list[str]) -> None:
        self.log = log
        self.roots: list[dict[int, LocalRoot]] = []

    def scan(self, local_roots: Mapping[int, LocalRoot]) -> dict[str, RuntimeUsage]:
        self.log.append("scan")
        self.roots.append(dict(local_roots))
        return {r.owner.key: RuntimeUsage(r.owner, [pid]) for pid, r in local_roots.items()}


def test_each_scan_is_given_the_local_roots_of_the_servers_read_in_its_cycle(
    store: QuotaStore,
) -> None:
    clock, log = VirtualClock(START), list[str]()  # calls, in order
    hub = StartingHub(datetime.fromtimestamp(START, UTC) - timedelta(minutes=5), log)
    scanner = RootsScanner(log)
    no_gpus = [TelemetrySample(START, ()).to_json_line()]
    telemetry = ReplayTelemetry(no_gpus, clock, loop=True)
    daemon = QuotaDaemon(store, telemetry, hub, clock, process_interval=0.0, scanner=scanner)

    async def two_cycles() -> list[Any]:
        first = await daemon.run_cycle()
        clock.advance(daemon.interval)
        return [first, await daemon.run_cycle()]

    reports = asyncio.run(two_cycles())

    assert log == ["servers", "scan", "servers", "scan"]  # the servers, then their processes
    ada = LocalRoot(777, Owner("ada", "", "cpu"))
    bob = LocalRoot(888, Owner("bob", "big", "gpu", ("1", "GPU-b")))
    assert scanner.roots == [{4242: ada}, {4242: ada, 5353: bob}]
    assert [r.runtimes for r in reports] == [1, 2]
