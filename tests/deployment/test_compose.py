"""The compose deployment, brought up for real with locally built images.

docker-compose.yml is production's file; .ci/compose.local-images.yml is the
visible override that swaps what cannot be pulled here (see its header). Here: it
spawns runtimes that reach the hub and nothing else of it, the socket guard refuses
what the spawner never asks, and the quota daemon accounts runtimes without ever
holding their tokens. test_compose_defaults.py checks its safe defaults.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import docker
import docker.errors
import httpx
import pytest
from compose_deployment import (
    PROJECT,
    REACH,
    USER,
    deployment_containers,
    docker_cli,
    hub_api,
    hub_token,
)
from harness import free_port, start_runtime, stop_all_runtimes, wait_until

pytestmark = [pytest.mark.docker, pytest.mark.compose, pytest.mark.slow]


def test_the_deployment_spawns_a_runtime_on_the_runtimes_network(
    deployment: dict[str, Any],
) -> None:
    with hub_api(deployment, USER) as api:
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


def test_a_signed_in_users_start_claims_their_warm_runtime_through_the_socket_guard(
    deployment: dict[str, Any],
) -> None:
    """Warm runtimes in production's file: made through the socket guard, on the
    runtimes network, when the user signs in; claimed by their Start."""
    user = f"{USER}w"
    add = ["exec", deployment["hub"], "kernelhub", "user", "add", user]
    password = docker_cli(*add, "--data-dir", "/srv/kernelhub").strip()
    engine = docker.from_env()

    def warm() -> Any | None:
        try:
            container = engine.containers.get(f"kernelhub-{user}")
            ready = b"waiting for the hub's activation" in container.logs()
        except docker.errors.NotFound:
            return None
        return container if ready and "org.kernelhub.warm" in container.labels else None

    session = httpx.Client(base_url=deployment["url"], timeout=30, follow_redirects=True)
    try:
        session.get("/hub/login")
        signed_in = session.post(
            "/hub/login",
            data={"username": user, "password": password, "_xsrf": session.cookies["_xsrf"]},
        )
        assert signed_in.status_code == 200 and "/hub/login" not in str(signed_in.url)
        container = wait_until(warm, timeout=90, what="the warm runtime")
        assert list(container.attrs["NetworkSettings"]["Networks"]) == ["kernelhub-runtimes"]
        with hub_api(deployment, user) as api:
            try:
                model = start_runtime(api, user, "", "cpu")
                assert engine.containers.get(f"kernelhub-{user}").id == container.id
                status_url = f"{deployment['url']}{model['url']}api/status"
                wait_until(lambda: api.get(status_url).status_code == 200, timeout=30, what="up")
            finally:
                stop_all_runtimes(api, user)
    finally:
        session.close()


def test_a_runtime_reaches_the_hub_and_nothing_else_of_the_deployment(
    deployment: dict[str, Any], tmp_path: Path
) -> None:
    """From inside a runtime container, as its user: the hub's proxy and API answer;
    another runtime, the host (a listener of this test on the bridge's gateway), the
    socket guard, PostgreSQL and the quota daemon do not."""
    services = deployment_containers()
    internal = f"{PROJECT}_internal"

    def address(service: str) -> str:
        return str(services[service]["NetworkSettings"]["Networks"][internal]["IPAddress"])

    runtimes = docker.from_env().networks.get("kernelhub-runtimes").attrs
    gateway = runtimes["IPAM"]["Config"][0]["Gateway"]
    port = free_port()
    # a decoy of this test on its own bridge's address: the host's services stand for it
    host_listener = subprocess.Popen(
        ["python3", "-m", "http.server", str(port), "--bind", gateway, "-d", str(tmp_path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    users = [f"{USER}reach", f"{USER}other"]
    clients = [hub_api(deployment, user) for user in users]
    try:
        for api, user in zip(clients, users, strict=True):
            start_runtime(api, user, "", "cpu")
        engine = docker.from_env()
        other = engine.containers.get(f"kernelhub-{users[1]}")
        other_ip = other.attrs["NetworkSettings"]["Networks"]["kernelhub-runtimes"]["IPAddress"]
        targets = [
            ("hub proxy", "hub", 8000),
            ("hub API", "hub", 8081),
            ("another runtime", other_ip, 8888),
            ("the host", gateway, port),
            ("socket guard", address("docker-proxy"), 2375),
            ("PostgreSQL", address("postgres"), 5432),
            ("quota daemon", address("quotad"), 8090),
        ]
        probe = engine.containers.get(f"kernelhub-{users[0]}").exec_run(
            ["python3", "-c", REACH, json.dumps(targets)], user="jovyan"
        )
        assert probe.exit_code == 0, probe.output
        found = json.loads(probe.output.decode().strip().splitlines()[-1])
        assert found["hub proxy"] == found["hub API"] == "reached", found
        beyond = {name: found[name] for name, _, _ in targets[2:]}
        assert "reached" not in beyond.values(), found
    finally:
        host_listener.terminate()
        for api, user in zip(clients, users, strict=True):
            stop_all_runtimes(api, user)
            api.close()


READ_ONLY_PROBE = """
import docker, sys
client = docker.from_env()  # DOCKER_HOST: the guard's read-only address
print("Env" in client.api.inspect_container(sys.argv[1])["Config"])
try:
    client.api.stop(sys.argv[1])
    print("stopped")
except docker.errors.APIError as e:
    print("refused", e.status_code)
"""


def test_the_quota_daemon_reads_runtimes_without_their_tokens_and_stops_none(
    deployment: dict[str, Any],
) -> None:
    user = f"{USER}ro"
    with hub_api(deployment, user) as api:
        start_runtime(api, user, "", "cpu")
        try:
            probe = docker_cli(
                "exec", f"{PROJECT}_quotad_1", "python3", "-c", READ_ONLY_PROBE, f"kernelhub-{user}"
            )
            assert probe.split() == ["False", "refused", "403"], probe
        finally:
            stop_all_runtimes(api, user)


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
    with hub_api(deployment, "admin") as api:
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

    with hub_api(deployment, user) as api:
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
