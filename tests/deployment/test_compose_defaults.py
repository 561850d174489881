"""The compose deployment's safe defaults, checked on the running deployment: loopback
only, secrets in files and nowhere in environments or logs, unprivileged services, and
database roles limited to their own tables."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from compose_deployment import compose, deployment_containers, docker_cli, psql
from harness import wait_until

pytestmark = [pytest.mark.docker, pytest.mark.compose, pytest.mark.slow]


NET_ADMIN, NET_RAW = 1 << 12, 1 << 13  # capability bits, as /proc/<pid>/status shows them
# names of variables that would hold a secret rather than name its file
SECRET_NAMES = ("PASSWORD", "TOKEN", "SECRET")


def test_no_service_has_a_secret_in_its_configuration(deployment: dict[str, Any]) -> None:
    """`docker inspect` is open to whoever may talk to the engine: secrets are files."""
    containers = deployment_containers()
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
        for service, container in deployment_containers().items()
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
    container = deployment_containers()[service]
    assert container["State"]["Running"], container["State"]
    pids = docker_cli("top", container["Id"], "-eo", "pid").split()[1:]  # host PIDs
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


@pytest.mark.parametrize(("role", "statement", "allowed"), DATABASE_RIGHTS)
def test_database_roles_are_limited_to_their_own_tables(
    deployment: dict[str, Any], role: str, statement: str, allowed: bool
) -> None:
    # the daemon creates its tables as it starts, after the hub is healthy
    wait_until(
        lambda: psql("kernelhub_quotad", "SELECT 1 FROM quota_usage").returncode == 0,
        timeout=60,
        what="the quota daemon's tables",
    )
    done = psql(role, statement)
    if allowed:
        assert done.returncode == 0, done.stderr
    else:
        assert done.returncode != 0 and "permission denied" in done.stderr, done.stderr


def test_no_password_or_token_in_the_logs(deployment: dict[str, Any]) -> None:
    """Run last: the logs of everything the tests above made the deployment do."""
    known = {f"secret {name}": value for name, value in deployment["secrets"].items()}
    hub = deployment["hub"]
    credentials = json.loads(
        docker_cli("exec", hub, "cat", "/srv/kernelhub/local-credentials.json")
    )
    known["the first admin's password"] = credentials["admin_password"]
    known["the operator token"] = docker_cli(
        "exec", hub, "cat", "/srv/kernelhub/operator-token"
    ).strip()
    logs = compose("logs", "--no-color", env=deployment["env"])
    assert logs.returncode == 0, logs.stderr
    text = logs.stdout + logs.stderr
    assert [name for name, value in known.items() if value in text] == []
    # without a terminal the hub says where the password is, never what it is
    assert "admin's password is in /srv/kernelhub/local-credentials.json" in text
