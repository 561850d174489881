"""The compose deployment, brought up for real with locally built images.

docker-compose.yml is production's file; .ci/compose.local-images.yml is the
visible override that swaps what cannot be pulled here (see its header). Besides
spawning and accounting, the deployment is checked for its safe defaults: loopback
only, secrets in files and nowhere in environments or logs, unprivileged services,
and a database role for the quota daemon that cannot read the hub's tables.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import httpx
import pytest
from harness import KERNELHUB, free_port, start_runtime, stop_all_runtimes, wait_until

pytestmark = [pytest.mark.docker, pytest.mark.compose, pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent
IMAGES = ["hub", "docker-proxy", "ci-postgres", "test"]
PROJECT = f"khcompose{secrets.token_hex(3)}"
USER = f"compose{secrets.token_hex(3)}"
# the Docker secrets docker-compose.yml reads from $KERNELHUB_SECRETS (README's steps)
SECRET_FILES = ["postgres_password", "hub_db_password", "quotad_db_password", "quotad_token"]
RUNTIMES_BRIDGE = "kh-runtimes"


def compose(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    command = [
        "docker-compose",
        "-p",
        PROJECT,
        "-f",
        "docker-compose.yml",
        "-f",
        ".ci/compose.local-images.yml",
        *args,
    ]
    return subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False
    )


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    for image in IMAGES:
        built = subprocess.run(
            [KERNELHUB, "images", "build", image],
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        assert built.returncode == 0, f"building {image} failed:\n{built.stderr[-3000:]}"
    # as the README says: a private directory, files the services' users can read
    secret_dir = tmp_path_factory.mktemp("secrets")
    secret_dir.chmod(0o700)
    values = {name: secrets.token_hex(32) for name in SECRET_FILES}
    for name, value in values.items():
        (secret_dir / name).write_text(value + "\n")
        (secret_dir / name).chmod(0o644)
    environ = {k: v for k, v in os.environ.items() if k != "KERNELHUB_BIND"}  # the default
    env = {**environ, "KERNELHUB_SECRETS": str(secret_dir), "KERNELHUB_PORT": str(free_port())}
    try:  # cleaned up even when interrupted while coming up (a timeout, Ctrl-C)
        started = compose("up", "-d", env=env)
        assert started.returncode == 0, started.stderr[-3000:]
        url = f"http://127.0.0.1:{env['KERNELHUB_PORT']}"
        wait_until(lambda: _healthy(url), timeout=180, what="the compose hub to be healthy")
        # quotad starts once the hub is healthy; until it listens the proxy answers 503
        metrics = f"{url}/services/kernelhub-quotas/metrics"
        wait_until(lambda: _answers(metrics), timeout=60, what="the quota daemon to answer")
        yield {
            "url": url,
            "hub": f"{PROJECT}_hub_1",
            "port": env["KERNELHUB_PORT"],
            "secrets": values,
            "env": env,
        }
    finally:
        logs = compose("logs", "--tail", "80", env=env)
        print(logs.stdout[-8000:])  # shown only when a test fails
        _remove_runtimes()  # first: a runtime still on its network would stop `down` there
        down = compose("down", "-v", env=env)
        _remove_firewall_rules()  # the firewall service leaves them on purpose when stopped
        assert down.returncode == 0, down.stderr[-3000:]


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/hub/health", timeout=3).status_code == 200
    except httpx.HTTPError:
        return False


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=3).status_code != 503
    except httpx.HTTPError:
        return False


def _remove_firewall_rules() -> None:
    """The runtime-firewall service's chains in this host's iptables, as its own command
    removes them (the service keeps them when stopped, so runtimes never go unguarded)."""
    subprocess.run(
        ["docker", "run", "--rm", "--network=host", "--user=0:0", "--cap-drop=ALL",
         "--cap-add=NET_ADMIN", "--cap-add=NET_RAW", "kernelhub/hub:latest",
         "kernelhub", "network", "lock-down", f"--bridge={RUNTIMES_BRIDGE}", "--remove"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def _remove_runtimes() -> None:
    """The runtimes and drives of this module's users (USER, and USER + a suffix)."""
    client = docker.from_env()
    for container in client.containers.list(all=True, filters={"label": "org.kernelhub.user"}):
        if container.labels["org.kernelhub.user"].startswith(USER):
            container.remove(force=True)
    for volume in client.volumes.list(filters={"label": "org.kernelhub.drive-of"}):
        if (volume.attrs.get("Labels") or {})["org.kernelhub.drive-of"].startswith(USER):
            volume.remove(force=True)


def hub_token(deployment: dict[str, Any], user: str) -> str:
    issued = subprocess.run(
        [
            "docker",
            "exec",
            deployment["hub"],
            "kernelhub",
            "token",
            user,
            "--data-dir",
            "/srv/kernelhub",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert issued.returncode == 0, issued.stderr
    return issued.stdout.strip()


def test_the_deployment_spawns_a_runtime_on_the_runtimes_network(
    deployment: dict[str, Any],
) -> None:
    with httpx.Client(
        base_url=f"{deployment['url']}/hub/api/",
        timeout=30,
        headers={"Authorization": f"token {hub_token(deployment, USER)}"},
    ) as api:
        model = start_runtime(api, USER, "", "cpu")
        try:
            status_url = f"{deployment['url']}{model['url']}api/status"
            # seen once on a loaded machine: a 403 for the first request right after the
            # start; the server must answer within seconds
            wait_until(lambda: api.get(status_url).status_code == 200, timeout=30, what="status")
            container = docker.from_env().containers.get(f"kernelhub-{USER}")
            assert list(container.attrs["NetworkSettings"]["Networks"]) == ["kernelhub-runtimes"]
        finally:
            stop_all_runtimes(api, USER)


@pytest.mark.parametrize(
    ("call", "what"),
    [
        ("client.images.pull('busybox')", "image pull"),
        ("client.volumes.prune()", "volume prune"),
        (
            "client.containers.create('kernelhub/runtime-test:latest', privileged=True)",
            "privileged",
        ),
        (
            "client.containers.create('kernelhub/runtime-test:latest', volumes=['/:/host'])",
            "host path",
        ),
        ("client.containers.create('kernelhub/runtime-test:latest', pid_mode='host')", "host pid"),
        (
            "client.containers.create('kernelhub/runtime-test:latest', cap_add=['SYS_ADMIN'])",
            "caps",
        ),
        # the hub's own container (its hostname): not a runtime, and exec is never allowed
        ("import socket; client.api.exec_create(socket.gethostname(), 'id')", "exec"),
        (f"client.api.stop('{PROJECT}_docker-proxy_1')", "stop the guard itself"),
    ],
)
def test_the_socket_proxy_refuses_what_the_spawner_does_not_need(
    deployment: dict[str, Any], call: str, what: str
) -> None:
    probe = (
        "import docker\nclient = docker.from_env()\n"
        f"try:\n    {call}\n    print('allowed')\n"
        "except docker.errors.APIError as e:\n    print('refused', e.status_code)\n"
    )
    result = subprocess.run(
        ["docker", "exec", deployment["hub"], "python3", "-c", probe],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.stdout.strip() == "refused 403", f"{what}: {result.stdout}{result.stderr}"


def test_the_quota_daemon_runs_with_its_store_in_postgresql(deployment: dict[str, Any]) -> None:
    url = deployment["url"]
    with httpx.Client(base_url=f"{url}/hub/api/", timeout=30) as api:
        api.headers["Authorization"] = f"token {hub_token(deployment, 'admin')}"
        service = api.get("services/kernelhub-quotas")
        assert service.status_code == 200, service.text
        # the quotad container, not a process of the hub's
        assert service.json()["url"] == "http://quotad:8090", service.json()
        metrics_url = f"{url}/services/kernelhub-quotas/metrics"
        assert httpx.get(metrics_url, timeout=10).status_code == 401  # it names users
        metrics = httpx.get(metrics_url, headers={"Authorization": api.headers["Authorization"]})
        assert metrics.status_code == 200
        assert "kernelhub_stops_total" in metrics.text
        rules = httpx.get(
            f"{url}/services/kernelhub-quotas/api/rules",
            headers={"Authorization": api.headers["Authorization"]},
            timeout=10,
        )
        assert rules.status_code == 200, rules.text
    tables = subprocess.run(
        [
            "docker",
            "exec",
            f"{PROJECT}_postgres_1",
            "psql",
            "-U",
            "kernelhub",
            "-d",
            "kernelhub",
            "-Atc",
            "select tablename from pg_tables where tablename like 'quota_%' order by 1",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert "quota_usage" in tables.stdout.split(), tables.stdout + tables.stderr


def test_the_quota_daemon_accounts_a_runtime_containers_cpu_time(
    deployment: dict[str, Any],
) -> None:
    """quotad sees the host's processes: a runtime container's are its user's."""
    url, user = deployment["url"], f"{USER}cpu"
    admin = {"Authorization": f"token {hub_token(deployment, 'admin')}"}
    usage_url = f"{url}/services/kernelhub-quotas/api/users/{user}/usage"

    seen: list[float] = []

    def cpu_hours() -> float:
        """The user's CPU-hours so far; -1 before the daemon wrote any usage."""
        answer = httpx.get(usage_url, headers=admin, timeout=10)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        seen.append(float(body["totals"]["cpu_hours"]) if body["days"] else -1.0)
        return seen[-1]

    with httpx.Client(
        base_url=f"{url}/hub/api/",
        timeout=30,
        headers={"Authorization": f"token {hub_token(deployment, user)}"},
    ) as api:
        start_runtime(api, user, "", "cpu")
        try:
            # counted from the daemon's first sight of the runtime (a usage row) on
            wait_until(lambda: cpu_hours() >= 0, timeout=60, what="the runtime accounted")
            before = cpu_hours()
            # four CPU-seconds inside the runtime's container, then a pause longer than the
            # daemon's process interval (5 s), so that a process scan sees them before the
            # process and its times are gone (`docker exec` is no child of the server);
            # at least half must be accounted: the API rounds to 0.36 CPU-seconds
            burn = (
                "import time\nt = time.process_time()\n"
                "while time.process_time() - t < 4: pass\ntime.sleep(7)"
            )
            subprocess.run(
                ["docker", "exec", f"kernelhub-{user}", "python3", "-c", burn],
                check=True,
                timeout=60,
            )
            try:
                wait_until(
                    lambda: cpu_hours() - before >= 2 / 3600, timeout=60, what="CPU accounted"
                )
            except TimeoutError:
                log = subprocess.run(
                    ["docker", "logs", f"{PROJECT}_quotad_1"], capture_output=True, text=True
                )
                lines = (log.stdout + log.stderr).splitlines()
                print("\n".join(line for line in lines if "200 GET" not in line)[-6000:])
                print("CPU-hours seen:", sorted(set(seen)))
                raise
        finally:
            stop_all_runtimes(api, user)


# ---- safe defaults -------------------------------------------------------------------------

NET_ADMIN, NET_RAW = 1 << 12, 1 << 13  # capability bits, as /proc/<pid>/status shows them
# names of variables that would hold a secret rather than name its file
SECRET_NAMES = ("PASSWORD", "TOKEN", "SECRET")


def _docker(*args: str) -> str:
    done = subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def _containers() -> dict[str, dict[str, Any]]:
    """This deployment's containers by service name, as `docker inspect` shows them."""
    ids = _docker("ps", "-aq", "--filter", f"label=com.docker.compose.project={PROJECT}").split()
    inspected = json.loads(_docker("inspect", *ids))
    return {c["Config"]["Labels"]["com.docker.compose.service"]: c for c in inspected}


def test_no_service_has_a_secret_in_its_configuration(deployment: dict[str, Any]) -> None:
    """`docker inspect` is open to whoever may talk to the engine: secrets are files."""
    containers = _containers()
    assert {"postgres", "hub", "quotad", "runtime-firewall"} <= set(containers)
    found = []
    for service, container in containers.items():
        config = container["Config"]
        for entry in config["Env"] or []:
            name, _, value = entry.partition("=")
            if any(secret in value for secret in deployment["secrets"].values()):
                found.append(f"{service}: ${name} holds a secret")
            elif any(word in name for word in SECRET_NAMES) and not name.endswith("_FILE"):
                found.append(f"{service}: ${name}")
        argv = " ".join([*(config["Entrypoint"] or []), *(config["Cmd"] or [])])
        if any(secret in argv for secret in deployment["secrets"].values()):
            found.append(f"{service}: its command holds a secret")
    assert found == []


def test_only_the_hub_is_published_and_on_loopback_only(deployment: dict[str, Any]) -> None:
    published = {
        service: sorted(
            (port, binding["HostIp"], binding["HostPort"])
            for port, bindings in (container["NetworkSettings"]["Ports"] or {}).items()
            for binding in bindings or []
        )
        for service, container in _containers().items()
        if container["HostConfig"]["NetworkMode"] != "host"  # the firewall publishes nothing
    }
    expected: dict[str, list[tuple[str, str, str]]] = {service: [] for service in published}
    expected["hub"] = [("8000/tcp", "127.0.0.1", deployment["port"])]
    assert published == expected


# (service, uid of every process, effective = permitted = bounding capabilities)
PRIVILEGES = [
    ("hub", 10001, 0),
    # not the hub's uid: with pid: host it could open the hub's /proc/<pid>/root
    ("quotad", 10002, 0),
    # root in the host's network namespace, for iptables, and nothing else
    ("runtime-firewall", 0, NET_ADMIN | NET_RAW),
]


@pytest.mark.parametrize(("service", "uid", "capabilities"), PRIVILEGES)
def test_services_run_without_privileges(
    deployment: dict[str, Any], service: str, uid: int, capabilities: int
) -> None:
    container = _containers()[service]
    assert container["State"]["Running"], container["State"]
    pids = _docker("top", container["Id"], "-eo", "pid").split()[1:]  # host PIDs
    assert pids
    seen = 0
    for pid in pids:
        try:
            lines = Path(f"/proc/{pid}/status").read_text().splitlines()
        except FileNotFoundError:
            continue  # a short-lived child (an iptables call) already gone
        status = dict(line.split(":", 1) for line in lines if ":" in line)
        got = {
            "uids": {int(u) for u in status["Uid"].split()},
            "CapEff": int(status["CapEff"], 16),
            "CapPrm": int(status["CapPrm"], 16),
            "CapBnd": int(status["CapBnd"], 16),
            "NoNewPrivs": status["NoNewPrivs"].strip(),
        }
        want = {
            "uids": {uid},
            "CapEff": capabilities,
            "CapPrm": capabilities,
            "CapBnd": capabilities,
            "NoNewPrivs": "1",
        }
        assert got == want, f"{service}, process {pid} ({status['Name'].strip()})"
        seen += 1
    assert seen


# (role, statement, allowed): each service's database role may do its own work only
DATABASE_RIGHTS = [
    ("kernelhub_quotad", "SELECT count(*) FROM public.users", False),
    ("kernelhub_quotad", "SELECT count(*) FROM public.api_tokens", False),
    ("kernelhub_quotad", "SELECT count(*) FROM public.spawners", False),
    ("kernelhub_quotad", "CREATE TABLE public.probe (x int)", False),
    ("kernelhub_quotad", "SELECT count(*) FROM kernelhub_quotas.quota_usage", True),
    ("kernelhub_quotad", "DELETE FROM kernelhub_quotas.quota_flags", True),
    # the hub reads the quota store (spawn checks, notices) and writes nothing there
    ("kernelhub", "SELECT count(*) FROM kernelhub_quotas.quota_usage", True),
    ("kernelhub", "SELECT count(*) FROM kernelhub_quotas.quota_flags", True),
    ("kernelhub", "DELETE FROM kernelhub_quotas.quota_flags", False),
    (
        "kernelhub",
        "INSERT INTO kernelhub_quotas.quota_rules (scope, subject) VALUES ('user', 'x')",
        False,
    ),
    ("kernelhub", "SELECT count(*) FROM public.api_tokens", True),
]


def _psql(role: str, *statements: str) -> subprocess.CompletedProcess[str]:
    """``statements`` in one session as ``role`` (the server's local socket), rolled back."""
    command = ["docker", "exec", f"{PROJECT}_postgres_1", "psql", "-U", role, "-d", "kernelhub"]
    command += ["-v", "ON_ERROR_STOP=1", "-Atc", "BEGIN"]
    for statement in (*statements, "ROLLBACK"):
        command += ["-c", statement]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)


@pytest.mark.parametrize(("role", "statement", "allowed"), DATABASE_RIGHTS)
def test_database_roles_are_limited_to_their_own_tables(
    deployment: dict[str, Any], role: str, statement: str, allowed: bool
) -> None:
    # the daemon creates its tables as it starts, after the hub is healthy
    wait_until(
        lambda: _psql("kernelhub_quotad", "SELECT 1 FROM quota_usage").returncode == 0,
        timeout=60,
        what="the quota daemon's tables",
    )
    done = _psql(role, statement)
    if allowed:
        assert done.returncode == 0, done.stderr
    else:
        assert done.returncode != 0 and "permission denied" in done.stderr, done.stderr


def test_no_password_or_token_in_the_logs(deployment: dict[str, Any]) -> None:
    """Run last: the logs of everything the tests above made the deployment do."""
    known = {f"secret {name}": value for name, value in deployment["secrets"].items()}
    hub = deployment["hub"]
    credentials = json.loads(_docker("exec", hub, "cat", "/srv/kernelhub/local-credentials.json"))
    known["the first admin's password"] = credentials["admin_password"]
    known["the operator token"] = _docker(
        "exec", hub, "cat", "/srv/kernelhub/operator-token"
    ).strip()
    logs = compose("logs", "--no-color", env=deployment["env"])
    assert logs.returncode == 0, logs.stderr
    text = logs.stdout + logs.stderr
    assert [name for name, value in known.items() if value in text] == []
    # without a terminal the hub says where the password is, never what it is
    assert "admin's password is in /srv/kernelhub/local-credentials.json" in text
