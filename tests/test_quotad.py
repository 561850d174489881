"""The quota daemon against a real hub and real local runtimes, GPUs replayed from traces.

Policy tests drive ``QuotaDaemon.run_cycle`` in-process on a ``VirtualClock``
(started at the wall clock's now, so the hub's real timestamps line up), so
hours of session age pass instantly while the hub, its runtimes and the stops
are real. The in-process daemon talks to the hub with a token holding exactly the
quota service's scopes (``QUOTA_SCOPES``), as the managed service does. The kill -9
test runs the daemon as its own process on the wall clock.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime
from pathlib import Path

import httpx
import pytest
from harness import (
    HubProcess,
    runtime_pids,
    start_runtime,
    stop_all_runtimes,
    wait_for_process_exit,
    wait_until,
)

from kernelhub.launcher.credentials import operator_token
from kernelhub.launcher.up import QUOTA_SCOPES
from kernelhub.quotas.clock import VirtualClock
from kernelhub.quotas.daemon import QuotaDaemon
from kernelhub.quotas.hub_api import HubApi
from kernelhub.quotas.nvml import NvmlTelemetry
from kernelhub.quotas.policy import Rule
from kernelhub.quotas.replay import ReplayTelemetry
from kernelhub.quotas.runtime_view import local_roots
from kernelhub.quotas.runtimes import ProcessScanner, RuntimeUsage
from kernelhub.quotas.store import QuotaStore
from kernelhub.quotas.telemetry import read_trace

pytestmark = pytest.mark.slow

DATA = Path(__file__).parent / "data"
TRAINING_PID, IDLE_PID = 4121, 2877  # the PIDs recorded in training / idle_with_memory
# a service holding the quota service's role, whose token the in-process daemons use
QUOTA_ROLE_TOKEN = secrets.token_hex(32)
QUOTA_ROLE_CONFIG = f"""
c.JupyterHub.services = [{{"name": "quota-role", "api_token": {QUOTA_ROLE_TOKEN!r}}}]
c.JupyterHub.load_roles = [
    {{"name": "quota-role", "scopes": {QUOTA_SCOPES!r}, "services": ["quota-role"]}},
]
"""


@pytest.fixture(scope="module")
def qhub(hub_factory: Callable[..., HubProcess]) -> HubProcess:
    """A hub of its own: its managed quota service's log is this module's to read."""
    return hub_factory(QUOTA_ROLE_CONFIG, name="quotad")


@pytest.fixture(scope="module")
def operator(qhub: HubProcess) -> Iterator[httpx.Client]:
    with qhub.api(operator_token(qhub.data_dir)) as api:
        yield api


def internal_api_url(hub: HubProcess) -> str:
    """The hub's own API URL, as services and runtimes are given it (not the proxy's)."""
    state = json.loads((hub.data_dir / "hub-state.json").read_text())
    return f"http://127.0.0.1:{state['ports']['hub']}/hub/api"


def two_gpu_trace() -> list[str]:
    """GPU 0 replays training.jsonl, GPU 1 idle_with_memory.jsonl (same times)."""
    training = read_trace((DATA / "training.jsonl").read_text().splitlines())
    idle = read_trace((DATA / "idle_with_memory.jsonl").read_text().splitlines())
    lines = []
    for busy, quiet in zip(training, idle, strict=False):
        second = {**json.loads(quiet.to_json_line())["gpus"][0], "index": 1, "uuid": "GPU-idle"}
        sample = json.loads(busy.to_json_line())
        sample["gpus"].append(second)
        lines.append(json.dumps(sample))
    return lines


def make_daemon(
    hub: HubProcess, store: QuotaStore, clock: VirtualClock, **pids: int
) -> QuotaDaemon:
    telemetry = ReplayTelemetry(two_gpu_trace(), clock, loop=True)
    telemetry.pid_map = {TRAINING_PID: pids.get("training", 0), IDLE_PID: pids.get("idle", 0)}
    client = HubApi(internal_api_url(hub), QUOTA_ROLE_TOKEN)
    return QuotaDaemon(store, telemetry, client, clock, scanner=ProcessScanner())


async def close_hub(daemon: QuotaDaemon) -> None:
    """Close make_daemon's HubApi: the daemon only uses the client it is given."""
    assert isinstance(daemon.hub, HubApi)
    await daemon.hub.close()


def start_user_runtime(api: httpx.Client, user: str) -> None:
    """Create ``user`` (if new) and start their default CPU runtime."""
    created = api.post(f"users/{user}")
    assert created.status_code in (201, 409), created.text
    start_runtime(api, user)


def root_pid(hub: HubProcess, user: str) -> int:
    """``user``'s runtime's outermost process: its sandbox (whose processes all carry
    the server's command line), or the server itself where unsandboxed."""
    pids = runtime_pids(hub.data_dir, user, with_sandbox=True)
    roots = [pid for pid in pids if parent_pid(pid) not in pids]
    assert len(roots) == 1, pids
    return roots[0]


def parent_pid(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_bytes().rpartition(b")")[2].split()[1])


@pytest.fixture
def store(tmp_path: Path) -> Iterator[QuotaStore]:
    with QuotaStore.open(f"sqlite:///{tmp_path / 'quotas.sqlite'}") as s:
        yield s


def gpu_totals(store: QuotaStore, user: str, since: date) -> tuple[float, float]:
    """GPU-seconds and utilization-weighted GPU-seconds of ``user`` from ``since`` on."""
    rows = store.usage(user, since)
    return sum(r.gpu_seconds for r in rows), sum(r.gpu_seconds_weighted for r in rows)


def servers(api: httpx.Client, user: str) -> dict[str, object]:
    return dict(api.get(f"users/{user}").json().get("servers") or {})


async def test_runtime_past_max_age_is_stopped_with_reason_and_drive_intact(
    qhub: HubProcess, operator: httpx.Client, store: QuotaStore, username: str
) -> None:
    start_user_runtime(operator, username)
    drive = qhub.data_dir / "users" / username
    (drive / "notes.txt").write_text("keep me")
    pid = root_pid(qhub, username)
    store.set_rule(Rule(max_session_hours={"*": 1.0}))
    clock = VirtualClock(time.time())
    daemon = make_daemon(qhub, store, clock)
    try:
        first = await daemon.run_cycle()
        assert first.runtimes >= 1 and not first.stops and not first.warnings
        clock.advance(50 * 60)  # 10 min before the limit: warned once
        warned = await daemon.run_cycle()
        assert (f"{username}/", "max-session-age") in warned.warnings
        clock.advance(60)
        again = await daemon.run_cycle()
        assert not again.warnings and not again.stops  # the warning is not repeated
        clock.advance(10 * 60)
        stopped = await daemon.run_cycle()
    finally:
        await close_hub(daemon)
    assert (f"{username}/", "max-session-age") in stopped.stops
    wait_until(lambda: not servers(operator, username), timeout=60, what="the stop")
    wait_for_process_exit([pid])
    events = store.events(username)
    assert [(e.kind, e.reason) for e in events] == [
        ("warn", "max-session-age"),
        ("stop", "max-session-age"),
    ]
    stop = events[-1]
    assert "maximum session length" in stop.message
    assert stop.details["limit_hours"] == 1.0 and stop.details["stopped_by_hub"] is True
    assert (drive / "notes.txt").read_text() == "keep me"  # the drive is never touched
    metrics = daemon.metrics.render().decode()
    assert 'kernelhub_stops_total{reason="max-session-age"} 1.0' in metrics


async def test_idle_gpu_runtime_stopped_busy_gpu_runtime_kept(
    qhub: HubProcess, operator: httpx.Client, store: QuotaStore, username: str
) -> None:
    busy_user = f"{username}busy"
    start_user_runtime(operator, username)
    start_user_runtime(operator, busy_user)
    idle_pid, busy_pid = root_pid(qhub, username), root_pid(qhub, busy_user)
    store.set_rule(Rule(idle_minutes=30))
    busy_started = datetime.fromisoformat(servers(operator, busy_user)[""]["started"])  # type: ignore[index]
    clock = VirtualClock(time.time())
    started_day = datetime.fromtimestamp(clock.now(), UTC).date()
    daemon = make_daemon(qhub, store, clock, training=busy_pid, idle=idle_pid)
    # first sight accounts the interval just passed, or less if the runtime is younger
    first_interval = min(daemon.interval, clock.now() - busy_started.timestamp())
    reports = []
    try:
        for _ in range(32):  # 31 virtual minutes, a cycle a minute
            reports.append(await daemon.run_cycle())
            clock.advance(60)
    finally:
        await close_hub(daemon)
        stop_all_runtimes(operator, busy_user)
    stops = [s for r in reports for s in r.stops]
    warnings = [w for r in reports for w in r.warnings]
    assert stops == [(f"{username}/", "idle")]
    assert (f"{username}/", "idle") in warnings and (f"{busy_user}/", "idle") not in warnings
    wait_until(lambda: not servers(operator, username), timeout=60, what="the idle stop")
    stop = store.events(username)[-1]
    assert (stop.kind, stop.reason) == ("stop", "idle")
    assert stop.details["gpu_util"] == 0.0 and "GPU unused" in stop.message
    assert servers(operator, busy_user) == {}  # (stopped by the test's cleanup only)
    # both held one replayed GPU, each accounted from its first cycle on
    # (summed over days: the virtual half hour may cross midnight UTC)
    busy_seconds, busy_weighted = gpu_totals(store, busy_user, started_day)
    assert busy_seconds == pytest.approx(31 * 60 + first_interval, abs=1)
    # weighted by SM utilization: minute ticks on a 600 s loop land on training's step-boundary
    # dips (every 15 s), so well under its mean, but far from the idle GPU's zero
    assert busy_weighted > 0.25 * busy_seconds
    assert gpu_totals(store, username, started_day)[1] == 0.0


def start_ticks(pid: int) -> int:
    """A process's start time in clock ticks since boot (/proc/PID/stat field 22)."""
    return int(Path(f"/proc/{pid}/stat").read_bytes().rpartition(b")")[2].split()[19])


async def test_the_quota_role_reads_each_local_runtimes_root_and_only_its_tree_counts(
    qhub: HubProcess, operator: httpx.Client, username: str
) -> None:
    start_user_runtime(operator, username)
    # the server, and its sandbox's processes where it has one
    server_pids = set(runtime_pids(qhub.data_dir, username))
    api_url = internal_api_url(qhub)
    hub = HubApi(api_url, QUOTA_ROLE_TOKEN)
    try:
        (server,) = [s for s in await hub.servers() if s.user == username]
    finally:
        await hub.close()
    # the hub shows the spawner's state to the quota role: the root and its start time
    assert server.local_pid is not None, "no admin:server_state, or no pid in the state"
    assert server.local_pid_start == start_ticks(server.local_pid)
    # a process outside the runtime that claims it in every variable a runtime is given
    claims = {
        "JUPYTERHUB_USER": username,
        "JUPYTERHUB_SERVER_NAME": "",
        "JUPYTERHUB_API_URL": api_url,
    }
    impostor = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)"], env={**os.environ, **claims}
    )
    try:
        scanner = ProcessScanner(connections=False, container_labels=lambda _: None)
        usages: dict[str, RuntimeUsage] = scanner.scan(local_roots([server]))
    finally:
        impostor.kill()
        impostor.wait()
        stop_all_runtimes(operator, username)
    pids = usages[f"{username}/"].pids
    assert pids[0] == server.local_pid and server_pids <= set(pids)
    assert impostor.pid not in pids


def run_quotad(hub: HubProcess, db_url: str, pid: int, log: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JUPYTERHUB_")}
    env["JUPYTERHUB_API_URL"] = internal_api_url(hub)
    env["JUPYTERHUB_API_TOKEN"] = QUOTA_ROLE_TOKEN
    env["JUPYTERHUB_SERVICE_URL"] = "http://127.0.0.1:0"
    command = [sys.executable, "-m", "kernelhub.quotas.service", "--db-url", db_url]
    command += [
        "--interval",
        "0.5",
        "--account-period",
        "1",
        "--telemetry",
        f"replay:{DATA / 'training.jsonl'}",
    ]
    command += ["--replay-pid", f"{TRAINING_PID}={pid}"]
    with log.open("ab") as out:
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)


def test_kill_9_loses_at_most_one_interval_and_never_double_counts(
    qhub: HubProcess, operator: httpx.Client, tmp_path: Path, username: str
) -> None:
    start_user_runtime(operator, username)
    started = datetime.fromisoformat(servers(operator, username)[""]["started"])  # type: ignore[index]
    pid = root_pid(qhub, username)
    db_url = f"sqlite:///{tmp_path / 'quotas.sqlite'}"
    log = tmp_path / "quotad.log"
    key = f"{username}/"
    with QuotaStore.open(db_url) as store:
        launched = datetime.now(UTC)
        daemon = run_quotad(qhub, db_url, pid, log)
        try:
            wait_until(lambda: store.usage(username, launched.date()), what="usage")
            time.sleep(2.2)  # mid-run: a few cycles in, then no chance to finish cleanly
            daemon.send_signal(signal.SIGKILL)
            daemon.wait(10)
            killed_at = store.cursor(key)  # as the killed process left it
            before = gpu_totals(store, username, launched.date())[0]
            time.sleep(1.5)  # down for three intervals
            daemon = run_quotad(qhub, db_url, pid, log)
            wait_until(lambda: store.cursor(key) > killed_at, what="the restarted daemon")  # type: ignore[operator]
            time.sleep(1.5)
        finally:
            daemon.send_signal(signal.SIGTERM)
            assert daemon.wait(15) == 0, log.read_text()
        cursor = store.cursor(key)
        total = gpu_totals(store, username, launched.date())[0]  # midnight may split it
    assert cursor is not None and killed_at is not None
    # one replayed GPU: GPU-seconds == seconds accounted
    after_kill = total - before
    span = (cursor - killed_at).total_seconds()
    # never more than the time that passed (no double count), in total and since the kill
    assert total <= (cursor - started).total_seconds() + 1e-6
    assert after_kill <= span + 1e-6, (after_kill, span)
    # and the kill, with the downtime after it, costs at most one 0.5 s interval
    assert after_kill >= span - 0.5, (after_kill, span)
    assert "stopped" in log.read_text()
    stop_all_runtimes(operator, username)


def test_host_without_nvml_samples_no_gpu_says_so_once_and_serves_metrics(
    qhub: HubProcess,
) -> None:
    async def nvml_available() -> bool:
        async with NvmlTelemetry() as nvml:
            return nvml.available

    available = asyncio.run(nvml_available())
    text = wait_until(
        lambda: "kernelhub-quotad: every" in qhub.log() and qhub.log(), what="quotad start"
    )
    off_lines = [line for line in text.splitlines() if "GPU sampling is off" in line]
    assert len(off_lines) == (0 if available else 1), off_lines
    state = json.loads((qhub.data_dir / "hub-state.json").read_text())
    admin = {"Authorization": f"token {qhub.token('admin')}"}  # admins hold read:metrics
    direct = f"http://127.0.0.1:{state['ports']['quotas']}/metrics"
    metrics = httpx.get(direct, headers=admin).text
    assert f"kernelhub_gpu_sampling_enabled {1.0 if available else 0.0}" in metrics
    # and through the proxy, under the service's prefix
    proxied = httpx.get(f"{qhub.url}/services/kernelhub-quotas/metrics", headers=admin)
    assert proxied.status_code == 200 and "kernelhub_runtimes" in proxied.text


@pytest.mark.parametrize(
    ("token", "status", "message"),
    [
        ("none", 401, "send a hub token with read:metrics"),
        ("garbage", 401, "send a hub token with read:metrics"),
        ("user", 403, "lacks the read:metrics scope"),  # a user may not read everyone's use
        ("admin", 200, None),  # the admin role holds read:metrics
    ],
)
def test_metrics_need_a_token_with_read_metrics(
    qhub: HubProcess,
    username: str,
    token: str,
    status: int,
    message: str | None,
) -> None:
    headers = {}
    if token == "garbage":
        headers["Authorization"] = "token not-a-real-token"
    elif token in ("user", "admin"):
        headers["Authorization"] = f"token {qhub.token(username if token == 'user' else 'admin')}"
    answer = httpx.get(f"{qhub.url}/services/kernelhub-quotas/metrics", headers=headers)
    assert answer.status_code == status, answer.text
    if message is None:
        assert "kernelhub_runtimes" in answer.text
    else:
        assert answer.json() == {"status": status, "message": answer.json()["message"]}
        assert message in answer.json()["message"] and "kernelhub_" not in answer.text
