"""The mining detector in the quota daemon, against a real hub and real local runtimes.

Four users each run a real local runtime; the GPUs are replayed on a virtual
clock from the four traces of ``tests/data`` (one GPU each, attached to the
runtimes' processes with ``pid_map``): a hash kernel, a training job, a model
server and an idle notebook holding memory. Ten virtual minutes of cycles at the
daemon's interval must stop the miner (and only the miner) within the detection
delay the detector is evaluated against, record why, and flag its user so that
the hub refuses them a GPU runtime.

Kernel activity is the one input not produced for real: a training job runs in
a notebook cell, and running one here would mean a kernel busy for ten minutes
of wall time per test. The daemon reads kernel state through ``HubApi.kernel_reports``
(what each runtime reported of its kernels to the hub), so ``BusyKernelsHub`` is
that real client with one override: the runtimes named in ``busy`` report an
executing kernel. Everything else (servers, other runtimes' reports, stops) goes
to the real hub.

The store is the one the hub's spawn check reads (``KERNELHUB_QUOTA_DB_URL``);
the hub's own managed kernelhub-quotad is off (``KERNELHUB_QUOTAS=0``) so that
this daemon, on its virtual clock, is the only writer.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from harness import HubProcess, server_path, stop_all_runtimes, wait_for_process_exit, wait_until
from test_quotad import (
    QUOTA_ROLE_CONFIG,
    QUOTA_ROLE_TOKEN,
    internal_api_url,
    root_pid,
    servers,
    start_user_runtime,
)

from kernelhub.launcher.credentials import operator_token
from kernelhub.quotas.clock import Clock, VirtualClock
from kernelhub.quotas.daemon import QuotaDaemon
from kernelhub.quotas.detector import MiningDetector
from kernelhub.quotas.evaluate import DEFAULT_MAX_DELAY_S
from kernelhub.quotas.hub_api import HubApi, KernelActivity, KernelReport
from kernelhub.quotas.policy import Rule
from kernelhub.quotas.replay import ReplayTelemetry
from kernelhub.quotas.runtimes import ProcessScanner
from kernelhub.quotas.store import QuotaStore
from kernelhub.quotas.telemetry import read_trace

pytestmark = pytest.mark.slow

DATA = Path(__file__).parent / "data"
# trace file → the PID it records (tests/data/README.md), one GPU per trace
TRACES = {
    "hash_search": 6606,
    "training": 4121,
    "inference": 5310,
    "idle_with_memory": 2877,
}
FIELDS = ("day", "runtime_type", "gpu_seconds", "gpu_seconds_weighted", "cpu_seconds")
CONFIG = (
    """
c.GpuInventory.devices = ["0", "1"]
"""
    + QUOTA_ROLE_CONFIG  # the daemon's token holds the quota service's scopes
)


@pytest.fixture(scope="module")
def store_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('mining-store') / 'quotas.sqlite'}"
    # the hub only reads the store (it refuses spawns without one): migrated here, as
    # kernelhub-quotad does when it starts
    QuotaStore.open(url).close()
    return url


@pytest.fixture(scope="module")
def mhub(hub_factory: Callable[..., HubProcess], store_url: str) -> HubProcess:
    env = {"KERNELHUB_QUOTAS": "0", "KERNELHUB_QUOTA_DB_URL": store_url}
    return hub_factory(CONFIG, name="quotad-mining", env=env)


@pytest.fixture(scope="module")
def operator(mhub: HubProcess) -> Iterator[httpx.Client]:
    with mhub.api(operator_token(mhub.data_dir)) as api:
        yield api


class BusyKernelsHub(HubApi):
    """The real hub's API, but the runtimes (``user/server``) in ``busy`` have a kernel
    executing now: the seam standing in for a cell that runs for the whole test."""

    def __init__(self, *args: object, busy: set[str], clock: Clock, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.busy = busy
        self.clock = clock
        self.seen: dict[str, KernelReport] = {}  # what the daemon was told, last

    async def kernel_reports(self) -> dict[str, KernelReport]:
        found = await super().kernel_reports()
        now = datetime.fromtimestamp(self.clock.now(), UTC)
        for key in self.busy:
            found[key] = KernelReport(KernelActivity(True, now), age=0.0)
        self.seen = found
        return found


def four_gpu_trace() -> list[str]:
    """GPU i replays the i-th trace of TRACES, all on the same seconds."""
    traces = [read_trace((DATA / f"{name}.jsonl").read_text().splitlines()) for name in TRACES]
    lines = []
    for samples in zip(*traces, strict=True):
        sample = json.loads(samples[0].to_json_line())
        sample["gpus"] = [
            {**json.loads(s.to_json_line())["gpus"][0], "index": i, "uuid": f"GPU-{name}"}
            for i, (name, s) in enumerate(zip(TRACES, samples, strict=True))
        ]
        lines.append(json.dumps(sample))
    return lines


async def test_mining_runtime_stopped_flagged_and_gpu_spawn_refused_ml_runtimes_untouched(
    mhub: HubProcess, operator: httpx.Client, store_url: str, username: str
) -> None:
    users = {name: f"{username}{name.split('_')[0]}" for name in TRACES}
    miner, trainer = users["hash_search"], users["training"]
    for user in users.values():
        start_user_runtime(operator, user)
    pids = {name: root_pid(mhub, user) for name, user in users.items()}
    store = QuotaStore.open(store_url)
    # the idle notebook stays under its limit for the whole run: only the detector may act
    store.set_rule(Rule(idle_minutes=60))
    clock = VirtualClock(time.time())  # the hub's real timestamps line up with it
    telemetry = ReplayTelemetry(four_gpu_trace(), clock)
    telemetry.pid_map = {TRACES[name]: pid for name, pid in pids.items()}
    api_url = internal_api_url(mhub)
    hub = BusyKernelsHub(api_url, QUOTA_ROLE_TOKEN, busy={f"{trainer}/"}, clock=clock)
    detector = MiningDetector()
    daemon = QuotaDaemon(store, telemetry, hub, clock, scanner=ProcessScanner(), detector=detector)
    t0 = clock.now()
    stopped_at: float | None = None
    reports = []
    try:
        while clock.now() - t0 <= 10 * 60:
            report = await daemon.run_cycle()
            reports.append(report)
            if report.stops and stopped_at is None:
                stopped_at = clock.now()
                seen = hub.seen.get(f"{miner}/")
                assert seen is None or not seen.activity.busy
            clock.advance(daemon.interval)
    finally:
        await hub.close()
    try:
        assert [s for r in reports for s in r.stops] == [(f"{miner}/", "mining-like")]
        assert not [w for r in reports for w in r.warnings]
        # behaviour needs a full window, and the detector is evaluated on stopping a miner
        # within DEFAULT_MAX_DELAY_S of its start (here: the trace's first second)
        assert stopped_at is not None
        window = detector.config.window_s * detector.config.coverage
        assert window <= stopped_at - t0 <= DEFAULT_MAX_DELAY_S, stopped_at - t0
        wait_until(lambda: not servers(operator, miner), timeout=60, what="the mining stop")
        wait_for_process_exit([pids["hash_search"]])

        (event,) = store.events(miner)
        assert (event.kind, event.reason, event.server) == ("stop", "mining-like", "")
        assert "cryptocurrency mining" in event.message
        details = event.details
        assert details["verdict"] == "mining-like" and details["stopped_by_hub"] is True
        signals = {s["name"] for s in details["signals"]}
        assert signals == {"gpu_saturated_flat", "no_kernel_activity"}, signals
        explanation = details["explanation"]
        assert explanation.startswith(f"Runtime '{miner}/' at ") and "mining-like" in explanation
        assert "while no notebook kernel executed in the window" in explanation
        flag = store.flag_of(miner)
        assert flag is not None and flag.block_gpu and flag.reason == explanation

        # the hub reads the same store before every spawn: no GPU runtime for the miner
        with mhub.api(mhub.token(miner)) as own:
            refused = own.post(server_path(miner, ""), json={"user_options": {"runtime": "gpu"}})
            assert refused.status_code == 403, refused.text
            assert "GPU runtimes are blocked for your account" in refused.json()["message"]
            assert servers(operator, miner) == {}, "nothing left pending"

        # the ML runtimes ran the whole ten minutes, untouched, each accounted
        today = datetime.now(UTC).date()
        for name in ("training", "inference", "idle_with_memory"):
            user = users[name]
            assert store.events(user) == [], name
            assert servers(operator, user)[""]["ready"], name  # type: ignore[index]
            assert os.path.exists(f"/proc/{pids[name]}"), name
            usage = store.usage(user, today - timedelta(days=1))
            assert sum(u.gpu_seconds for u in usage) >= 10 * 60, (name, usage)
        assert hub.seen[f"{trainer}/"].activity.busy
    finally:
        for name in ("training", "inference", "idle_with_memory"):
            stop_all_runtimes(operator, users[name])
        store.close()


def test_batch_accounting_equals_one_call_per_interval(tmp_path: Path) -> None:
    """``account_intervals`` (the daemon's one transaction per cycle) adds what the same
    ``account_interval`` calls in order add: repeats, a runtime twice, midnight."""
    t = datetime(2026, 1, 1, 23, 59, 30, tzinfo=UTC)

    def at(seconds: float) -> datetime:
        return t + timedelta(seconds=seconds)

    batches = [
        [
            ("ann/", "ann", "gpu", at(0), at(10), 1, 0.5, 4.0),
            ("bob/x", "bob", "gpu", at(0), at(60), 2, 1.0, 60.0),  # crosses midnight
            ("ann/", "ann", "gpu", at(5), at(20), 1, 1.0, 3.0),  # overlaps its own first
        ],
        [
            ("ann/", "ann", "gpu", at(0), at(20), 1, 1.0, 3.0),  # all accounted already
            ("bob/x", "bob", "gpu", at(60), at(65), 2, 0.25, 1.0),
            ("cid/", "cid", "cpu", at(0), at(30), 0, 0.0, 30.0),
        ],
    ]
    with (
        QuotaStore.open(f"sqlite:///{tmp_path / 'one.sqlite'}") as one,
        QuotaStore.open(f"sqlite:///{tmp_path / 'batch.sqlite'}") as batch,
    ):
        for intervals in batches:
            expected = [one.account_interval(*i) for i in intervals]
            assert batch.account_intervals(intervals) == expected
        assert expected == [0.0, 5.0, 30.0]
        assert batch.account_intervals([]) == []
        for key in ("ann/", "bob/x", "cid/"):
            user = key.partition("/")[0]
            rows = [
                [tuple(vars(u)[f] for f in FIELDS) for u in s.usage(user, t.date())]
                for s in (one, batch)
            ]
            assert rows[0] == rows[1] and rows[0], user
            assert batch.cursor(key) == one.cursor(key), key
