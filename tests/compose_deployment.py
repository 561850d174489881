"""The compose deployment of tests/deployment/: brought up from locally built images
with fresh secrets, and everything it made removed again (runtimes, volumes, networks,
the firewall's rules), also when a test or the start-up fails."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import docker
import httpx
from harness import KERNELHUB, free_port, wait_until

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


@contextmanager
def deployed(secret_dir: Path) -> Iterator[dict[str, Any]]:
    """The deployment, up and healthy, with its secrets written into ``secret_dir``."""
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


def hub_api(deployment: dict[str, Any], user: str) -> httpx.Client:
    """A client of the deployment's hub REST API with a fresh token of ``user``."""
    return httpx.Client(
        base_url=f"{deployment['url']}/hub/api/",
        timeout=30,
        headers={"Authorization": f"token {hub_token(deployment, user)}"},
    )


def docker_cli(*args: str) -> str:
    done = subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def deployment_containers() -> dict[str, dict[str, Any]]:
    """This deployment's containers by service name, as `docker inspect` shows them."""
    ids = docker_cli("ps", "-aq", "--filter", f"label=com.docker.compose.project={PROJECT}").split()
    inspected = json.loads(docker_cli("inspect", *ids))
    return {c["Config"]["Labels"]["com.docker.compose.service"]: c for c in inspected}


def psql(role: str, *statements: str) -> subprocess.CompletedProcess[str]:
    """``statements`` in one session as ``role`` (the server's local socket), rolled back."""
    command = ["docker", "exec", f"{PROJECT}_postgres_1", "psql", "-U", role, "-d", "kernelhub"]
    command += ["-v", "ON_ERROR_STOP=1", "-Atc", "BEGIN"]
    for statement in (*statements, "ROLLBACK"):
        command += ["-c", statement]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)


# run in a runtime container: which of the (name, host, port) targets in argv[1] answer
REACH = """
import json, socket, sys
found = {}
for name, host, port in json.loads(sys.argv[1]):
    try:
        socket.create_connection((host, port), timeout=3).close()
        found[name] = "reached"
    except OSError as e:
        found[name] = type(e).__name__
print(json.dumps(found))
"""
