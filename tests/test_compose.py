"""The compose deployment, brought up for real with locally built images.

docker-compose.yml is production's file; .ci/compose.local-images.yml is the
visible override that swaps what cannot be pulled here (see its header).
"""

from __future__ import annotations

import os
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path

import docker
import httpx
import pytest
from harness import KERNELHUB, free_port, start_runtime, stop_all_runtimes, wait_until

pytestmark = [pytest.mark.docker, pytest.mark.compose, pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent
IMAGES = ["hub", "docker-proxy", "ci-postgres", "test"]
PROJECT = f"khcompose{secrets.token_hex(3)}"
USER = f"compose{secrets.token_hex(3)}"


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
def deployment() -> Iterator[dict[str, str]]:
    for image in IMAGES:
        built = subprocess.run(
            [KERNELHUB, "images", "build", image],
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        assert built.returncode == 0, f"building {image} failed:\n{built.stderr[-3000:]}"
    env = {
        **os.environ,
        "KERNELHUB_POSTGRES_PASSWORD": secrets.token_hex(12),
        "KERNELHUB_QUOTAD_TOKEN": secrets.token_hex(32),
        "KERNELHUB_PORT": str(free_port()),
    }
    try:  # cleaned up even when interrupted while coming up (a timeout, Ctrl-C)
        started = compose("up", "-d", env=env)
        assert started.returncode == 0, started.stderr[-3000:]
        url = f"http://127.0.0.1:{env['KERNELHUB_PORT']}"
        wait_until(lambda: _healthy(url), timeout=120, what="the compose hub to be healthy")
        yield {"url": url, "hub": f"{PROJECT}_hub_1"}
    finally:
        logs = compose("logs", "--tail", "80", env=env)
        print(logs.stdout[-8000:])  # shown only when a test fails
        _remove_runtimes()  # first: a runtime still on its network would stop `down` there
        down = compose("down", "-v", env=env)
        assert down.returncode == 0, down.stderr[-3000:]


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/hub/health", timeout=3).status_code == 200
    except httpx.HTTPError:
        return False


def _remove_runtimes() -> None:
    """The runtimes and drives of this module's users (USER, and USER + a suffix)."""
    client = docker.from_env()
    for container in client.containers.list(all=True, filters={"label": "org.kernelhub.user"}):
        if container.labels["org.kernelhub.user"].startswith(USER):
            container.remove(force=True)
    for volume in client.volumes.list(filters={"label": "org.kernelhub.drive-of"}):
        if (volume.attrs.get("Labels") or {})["org.kernelhub.drive-of"].startswith(USER):
            volume.remove(force=True)


def hub_token(deployment: dict[str, str], user: str) -> str:
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
    deployment: dict[str, str],
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
        ("client.api.exec_create(client.containers.list(all=True)[0].id, 'id')", "exec"),
    ],
)
def test_the_socket_proxy_refuses_what_the_spawner_does_not_need(
    deployment: dict[str, str], call: str, what: str
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


def test_the_quota_daemon_runs_with_its_store_in_postgresql(deployment: dict[str, str]) -> None:
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
    deployment: dict[str, str],
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
