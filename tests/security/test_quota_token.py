"""No privileged token ever reaches a user's server; kernel state comes from the runtimes.

A user's server is code the user controls, so whatever reaches it the user can read.
The quota daemon used to read each server's ``/api/kernels`` through the proxy with
its own token, which can list every user and stop every server. Now each runtime
reports its own kernels to the hub with its own token, the daemon reads all reports
from the hub in one call, and its role has no ``access:servers``.

Real parts throughout: a real hub with real local runtimes, the real quota daemon as
its own process (the command line the old daemon read kernels with), and a header
logger inside every runtime: a Jupyter server extension the operator's config loads
(``JUPYTER_CONFIG_PATH``, which JupyterHub's ``disable_user_config`` leaves alone as it
lies outside the user's home) that writes the SHA-256 of every word of every header,
never a token itself, to the user's drive. Tokens appear in assertions only as such
digests, never in clear.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from harness import HubProcess, free_port, start_runtime, stop_all_runtimes, wait_until
from jupyterhub.slugs import safe_slug
from kernels import RuntimeClient, _execute_request
from kh_header_log import LOG_NAME

from kernelhub.launcher.credentials import operator_token
from kernelhub.launcher.up import QUOTA_SCOPES
from kernelhub.quotas.clock import VirtualClock
from kernelhub.quotas.daemon import QuotaDaemon
from kernelhub.quotas.hub_api import HubApi
from kernelhub.quotas.policy import Rule
from kernelhub.quotas.replay import ReplayTelemetry
from kernelhub.quotas.runtimes import ProcessScanner
from kernelhub.quotas.store import QuotaStore
from kernelhub.quotas.telemetry import TelemetrySample

# a service holding exactly the quota service's role: the daemons here use its token
QUOTA_TOKEN = secrets.token_hex(32)
DECOY = f"decoy-{secrets.token_hex(16)}"  # sent by the test itself: proves the log works
HEADER_LOGGER = Path(__file__).with_name("kh_header_log.py")  # put into every runtime


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"token {token}"}


@pytest.fixture(scope="module")
def header_logger() -> Iterator[Path]:
    """The header-logging extension and the config that enables it, readable by the
    runtimes' Unix accounts (pytest's own temporary directories are private)."""
    root = Path(tempfile.mkdtemp(prefix="kh-header-log-"))
    try:
        (root / "python").mkdir()
        shutil.copy(HEADER_LOGGER, root / "python" / HEADER_LOGGER.name)
        config = root / "config" / "jupyter_server_config.d"
        config.mkdir(parents=True)
        enable = {"ServerApp": {"jpserver_extensions": {"kh_header_log": True}}}
        (config / "kh_header_log.json").write_text(json.dumps(enable))
        for path in [root, *root.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def thub(hub_factory: Callable[..., HubProcess], header_logger: Path) -> HubProcess:
    environment = {
        "JUPYTER_CONFIG_PATH": str(header_logger / "config"),
        "PYTHONPATH": str(header_logger / "python"),
        "KERNELHUB_KERNEL_REPORT_INTERVAL": "1",  # reports within a second, for the tests
    }
    config = f"""
c.JupyterHub.services = [{{"name": "quota-role", "api_token": {QUOTA_TOKEN!r}}}]
c.JupyterHub.load_roles = [
    {{"name": "quota-role", "scopes": {QUOTA_SCOPES!r}, "services": ["quota-role"]}},
]
c.Spawner.environment = {environment!r}
c.LocalRuntimeSpawner.extra_readonly_paths = [{str(header_logger)!r}]
"""
    # the hub's own managed daemon is off: the daemons here are the tests' to run
    return hub_factory(config, name="quota-token", quotas=False)


@pytest.fixture(scope="module")
def operator(thub: HubProcess) -> Iterator[httpx.Client]:
    with thub.api(operator_token(thub.data_dir)) as api:
        yield api


@pytest.fixture
def users(operator: httpx.Client, username: str) -> Iterator[list[str]]:
    """Two users of this test (made on first use), whose runtimes are stopped after it."""
    names = [f"{username}a", f"{username}b"]
    for name in names:
        assert operator.post(f"users/{name}").status_code in (201, 409)
    yield names
    for name in names:
        stop_all_runtimes(operator, name)


def internal_api_url(hub: HubProcess) -> str:
    """The hub's own API URL, as services and runtimes are given it (not the proxy's)."""
    state = json.loads((hub.data_dir / "hub-state.json").read_text())
    return f"http://127.0.0.1:{state['ports']['hub']}/hub/api"


def kernel_reports(hub: HubProcess, token: str = QUOTA_TOKEN) -> httpx.Response:
    return httpx.get(f"{hub.url}/hub/api/kernelhub/kernel-reports", headers=auth(token))


def report_of(hub: HubProcess, user: str, server: str = "") -> dict[str, Any] | None:
    answer = kernel_reports(hub)
    assert answer.status_code == 200, answer.text
    found = [r for r in answer.json()["reports"] if (r["user"], r["server"]) == (user, server)]
    return found[0] if found else None


def header_log(hub: HubProcess, user: str) -> list[dict[str, Any]]:
    path = hub.data_dir / "users" / safe_slug(user) / LOG_NAME
    return [json.loads(line) for line in path.read_text().splitlines()]


# --- (1) the daemon's token opens no server -------------------------------------------


@pytest.mark.slow
def test_the_quota_role_holds_no_access_to_servers_and_a_server_refuses_its_token(
    thub: HubProcess, operator: httpx.Client, users: list[str]
) -> None:
    user = users[0]
    start_runtime(operator, user)

    assert not [s for s in QUOTA_SCOPES if s.startswith("access:servers")]
    model = httpx.get(f"{thub.url}/hub/api/user", headers=auth(QUOTA_TOKEN)).json()
    assert model["kind"] == "service" and model["scopes"], model
    assert not [s for s in model["scopes"] if s.startswith("access:servers")], model["scopes"]
    kernels = httpx.get(f"{thub.url}/user/{user}/api/kernels", headers=auth(QUOTA_TOKEN))
    assert kernels.status_code in (302, 401, 403), kernels.status_code


# --- (2) nothing but its own token ever reaches a runtime -------------------------------


def run_quota_daemon(hub: HubProcess, db_url: str, port: int, log: Path) -> subprocess.Popen[bytes]:
    """The real kernelhub-quotad, every second, with its mining detector (which asks
    every runtime's kernel state at every process scan). ``--public-url`` is what the
    old daemon read servers' kernels through; today's accepts and ignores it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("JUPYTERHUB_")}
    env["JUPYTERHUB_API_URL"] = internal_api_url(hub)
    env["JUPYTERHUB_API_TOKEN"] = QUOTA_TOKEN
    env["JUPYTERHUB_SERVICE_URL"] = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "kernelhub.quotas.service", "--db-url", db_url]
    command += ["--interval", "1", "--process-interval", "1", "--metrics-public"]
    command += ["--public-url", hub.url]
    with log.open("ab") as out:
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)


def cycles(port: int) -> int:
    try:
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    except httpx.HTTPError:
        return 0
    found = re.search(r"^kernelhub_quotad_cycle_seconds_count ([0-9.]+)$", metrics, re.M)
    return int(float(found.group(1))) if found else 0


@pytest.mark.slow
def test_runtimes_never_see_a_token_but_their_own_while_the_daemon_cycles(
    thub: HubProcess, operator: httpx.Client, users: list[str], tmp_path: Path
) -> None:
    for user in users:
        start_runtime(operator, user)
        # a request the logger must see: the log works, and works before the daemon runs
        decoy = httpx.get(f"{thub.url}/user/{user}/api/status", headers=auth(DECOY))
        assert decoy.status_code in (302, 401, 403)
    port = free_port()
    hub_log_before = len(thub.log())
    daemon = run_quota_daemon(thub, f"sqlite:///{tmp_path / 'q.sqlite'}", port, tmp_path / "q.log")
    try:
        wait_until(lambda: cycles(port) >= 8, timeout=60, what="eight daemon cycles")
    finally:
        daemon.terminate()
        daemon.wait(timeout=30)

    quota = digest(QUOTA_TOKEN)
    for user in users:
        records = header_log(thub, user)
        own = records[0]["own"]
        sent = {d for r in records for d in r["auth"]}
        assert digest(DECOY) in sent, f"{user}'s header log missed the decoy"
        assert not [r["path"] for r in records if quota in r["words"]], "the quota token arrived"
        assert sent - {own, digest(DECOY)} == set(), f"{user}'s server saw another token"
    # and the daemon did want kernel state meanwhile: from the hub, in one call a cycle
    # (the hub's access log: the daemon does not log each request it makes)
    log = (tmp_path / "q.log").read_text()
    assert "Traceback" not in log, log[-3000:]
    asked = thub.log()[hub_log_before:]
    assert asked.count("GET /hub/api/kernelhub/kernel-reports") >= 2, asked[-3000:]


# --- (3) a busy kernel reaches the daemon as busy, an idle one as idle -----------------


def start_cell(client: RuntimeClient, code: str) -> None:
    """Send ``code`` to the runtime's kernel and leave it running."""
    kernel = client.kernel()
    ws = client._ws(f"api/kernels/{kernel}/channels")
    try:
        ws.send(json.dumps(_execute_request(uuid.uuid4().hex, code)))
    finally:
        ws.close()


@pytest.mark.slow
async def test_a_busy_kernel_postpones_the_idle_verdict_and_an_idle_one_does_not(
    thub: HubProcess, operator: httpx.Client, users: list[str], tmp_path: Path
) -> None:
    busy, idle = users
    for user in users:
        start_runtime(operator, user)
    RuntimeClient.of(thub.url, idle, "", thub.token(idle)).run("x = 1").ok()
    start_cell(
        RuntimeClient.of(thub.url, busy, "", thub.token(busy)), "import time; time.sleep(600)"
    )

    def reported(user: str, state: bool) -> bool:
        report = report_of(thub, user)
        return report is not None and report["busy"] is state and bool(report["last_activity"])

    wait_until(lambda: reported(busy, True), what="the busy kernel's report")
    wait_until(lambda: reported(idle, False), what="the idle kernel's report")

    hub = HubApi(internal_api_url(thub), QUOTA_TOKEN)
    store = QuotaStore.open(f"sqlite:///{tmp_path / 'quotas.sqlite'}")
    try:
        readings = await hub.kernel_reports()  # what the daemon reads
        assert readings[f"{busy}/"].activity.busy and not readings[f"{idle}/"].activity.busy
        store.set_rule(Rule(idle_minutes=30))
        clock = VirtualClock(time.time())
        clock.advance(25 * 60)  # both near the limit: 25 of 30 minutes without activity
        no_gpus = [TelemetrySample(clock.now(), ()).to_json_line()]
        telemetry = ReplayTelemetry(no_gpus, clock, loop=True)
        daemon = QuotaDaemon(store, telemetry, hub, clock, scanner=ProcessScanner())
        report = await daemon.run_cycle()
    finally:
        await hub.close()
        store.close()
    idle_warned = {key for key, reason in report.warnings if reason == "idle"}
    assert f"{idle}/" in idle_warned
    assert f"{busy}/" not in idle_warned  # its kernel executes: not idle


# --- (4) a runtime can report for itself only, and read no one's reports ---------------

ATTACK = """
import json, os, urllib.error, urllib.request
api, token = os.environ["JUPYTERHUB_API_URL"].rstrip("/"), os.environ["JUPYTERHUB_API_TOKEN"]
def call(path, body=None):
    request = urllib.request.Request(api + path, data=body and body.encode(),
        method="POST" if body else "GET", headers={"Authorization": "token " + token})
    try:
        return urllib.request.urlopen(request, timeout=30).status
    except urllib.error.HTTPError as e:
        return e.code
print(json.dumps([call(path, body) for path, body in CALLS]))
"""
MARKER = "2001-02-03T04:05:06Z"  # a time no real report carries
FORGED = {"busy": True, "last_activity": MARKER}

# from inside the attacker's runtime, with its own token: (path, body) -> HTTP status
RUNTIME_ATTACKS = {
    "report for another user's server": ("/kernelhub/users/{victim}/servers//kernels", 403),
    "report for a server of its user not its own": (
        "/kernelhub/users/{attacker}/servers/other/kernels",
        403,
    ),
    "read everyone's reports": ("/kernelhub/kernel-reports", 403),
}

# bodies reported for one's own server (JSON text) -> HTTP status; none is stored
GARBAGE = {
    "not JSON": ("busy", 400),
    "a list": ("[]", 400),
    "a field missing": ('{"busy": true}', 400),
    "a field too many": ('{"busy": true, "last_activity": null, "user": "x"}', 400),
    "busy as a number": ('{"busy": 1, "last_activity": null}', 400),
    "busy as a string": ('{"busy": "true", "last_activity": null}', 400),
    "a time without its offset": ('{"busy": true, "last_activity": "2026-01-01T00:00:00"}', 400),
    "not a time": ('{"busy": true, "last_activity": "yesterday"}', 400),
    "a time as a number": ('{"busy": true, "last_activity": 1767225600}', 400),
    "an overlong time": (
        '{"busy": true, "last_activity": "2026-01-01T00:00:00' + "0" * 60 + 'Z"}',
        400,
    ),
    "an oversized body": (json.dumps({**FORGED, "pad": "x" * 4096}), 413),
}


@pytest.mark.slow
def test_a_runtime_reports_for_itself_only_and_reads_no_reports(
    thub: HubProcess, operator: httpx.Client, users: list[str]
) -> None:
    attacker, victim = users
    for user in users:
        start_runtime(operator, user)
        wait_until(lambda u=user: report_of(thub, u), what=f"{user}'s first kernel report")
    victim_before = report_of(thub, victim)

    calls = [
        (
            path.format(attacker=attacker, victim=victim),
            None if "reports" in path else json.dumps(FORGED),
        )
        for path, _ in RUNTIME_ATTACKS.values()
    ]
    client = RuntimeClient.of(thub.url, attacker, "", thub.token(attacker))
    statuses = json.loads(client.run(ATTACK.replace("CALLS", repr(calls))).ok())
    assert dict(zip(RUNTIME_ATTACKS, statuses, strict=True)) == {
        case: status for case, (_, status) in RUNTIME_ATTACKS.items()
    }
    victim_after = report_of(thub, victim)
    assert victim_after is not None and victim_after["last_activity"] != MARKER
    assert victim_after["busy"] is False and victim_before is not None

    # a user's own token: filtered to themselves, so no one's reports; no token: nothing
    assert kernel_reports(thub, thub.token(attacker)).status_code == 403
    assert httpx.get(f"{thub.url}/hub/api/kernelhub/kernel-reports").status_code == 403


@pytest.mark.slow
def test_a_garbage_report_is_refused_and_leaves_the_last_good_one(
    thub: HubProcess, operator: httpx.Client, users: list[str]
) -> None:
    user = users[0]
    start_runtime(operator, user)
    token = thub.token(user)  # holds users:activity and access:servers for its own servers
    url = f"{thub.url}/hub/api/kernelhub/users/{user}/servers//kernels"

    def post(body: str) -> int:
        return httpx.post(url, content=body, headers=auth(token)).status_code

    for _attempt in range(3):  # the runtime's own heartbeat may land in between: retried
        assert post(json.dumps(FORGED)) == 204
        good = report_of(thub, user)
        assert good is not None and good["last_activity"] == MARKER and good["busy"] is True
        statuses = {case: post(body) for case, (body, _) in GARBAGE.items()}
        after = report_of(thub, user)
        if after != good and after is not None and after["last_activity"] != MARKER:
            continue  # the runtime reported itself meanwhile
        break
    assert statuses == {case: status for case, (_, status) in GARBAGE.items()}
    assert after == good  # nothing of the garbage was stored
    refusal = httpx.post(url, content='{"busy": 1, "last_activity": null}', headers=auth(token))
    assert refusal.json() == {"status": 400, "message": '"busy" must be true or false'}

    # a time ahead of the hub's clock is taken as the time it arrived
    assert post('{"busy": false, "last_activity": "2999-01-01T00:00:00Z"}') == 204
    clamped = report_of(thub, user)
    assert clamped is not None
    assert datetime.fromisoformat(clamped["last_activity"]) <= datetime.fromisoformat(
        clamped["reported"]
    )

    # the report names its server, which must be running; stopped, it is forgotten
    assert (
        httpx.post(
            f"{thub.url}/hub/api/kernelhub/users/{user}/servers/gone/kernels",
            content=json.dumps(FORGED),
            headers=auth(token),
        ).status_code
        == 404
    )
    stop_all_runtimes(operator, user)
    assert report_of(thub, user) is None
