"""docker-stack.yml deployed on a real (one-node) swarm of its own, as its header says:
node labels, `docker secret create`, images in a registry, `docker stack deploy`. Every
service's tasks run (and are healthy), the hub answers on its published port, the
attacks the file guards against fail in the running tasks, runtimes spawned through the
deployed hub's REST API answer through its proxy to their own user alone and keep their
drive across a restart, and `docker stack rm` leaves no service, container, network or
config behind (test_stack.py reads the file itself).
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from harness import free_port, start_runtime, stop_all_runtimes, wait_until
from kernels import RuntimeClient
from stack_runtimes import PROBE, Spawned, spawned_runtimes
from swarm_cluster import swarm_cluster

from deployment.test_stack import (
    CAP_ADD,
    ROOT,
    RUN_AS,
    SECRET_TARGETS,
    SERVICES,
    SOCKET,
    STACK,
    STACK_FILE,
)
from kernelhub.contract import DRIVE_LABEL, USER_LABEL

# the harness may wait for another run's swarm first (one swarm per host)
pytestmark = [pytest.mark.docker, pytest.mark.swarm, pytest.mark.slow, pytest.mark.timeout(1500)]


NAME = "khsws"  # the stack's name, and the swarm harness's prefix
NAMESPACE = "com.docker.stack.namespace"
RUNTIME_IMAGE = "kernelhub/runtime-test:latest"  # the small one: the catalog's only type
PUSHED = ["kernelhub/hub:latest", "kernelhub/docker-proxy:latest", RUNTIME_IMAGE]
RUNTIME_TYPES = [{"name": "cpu", "image": RUNTIME_IMAGE, "mem_limit": "1G", "cpu_limit": 1.0}]


@dataclass
class Deployed:
    engine: Any
    url: str
    # the secret values, for the test that looks for them: never in a repr (pytest shows
    # a failing test's arguments)
    secrets: dict[str, str] = field(repr=False)


@pytest.fixture(scope="module")
def stack() -> Iterator[Deployed]:
    """docker-stack.yml deployed as its header says, on a one-node swarm of its own:
    node labels, `docker secret create`, images pushed to a registry (the harness's:
    the stack's own registry service runs too, on a port of its own)."""
    with swarm_cluster(NAME, workers=0, images=PUSHED) as cluster:
        engine = cluster.manager
        _remove_stack(engine)  # a crashed run's volumes
        node = cluster.node(cluster.manager_name)
        labels = {f"kernelhub.{k}": "true" for k in ("hub", "postgres", "registry")}
        node.update({**node.attrs["Spec"], "Labels": labels})
        values = {name: os.urandom(32).hex() for name in STACK["secrets"]}
        for name, value in values.items():  # never printed: only their names are
            engine.secrets.create(name=name, data=value.encode(), labels=cluster.labels())
        port = free_port()
        env = {
            **os.environ,
            # node-local drives (the header's one-node choice): a shared root needs an NFS
            # export with all_squash for the hub to hand folders to uid 1000, and this
            # kernel has no NFS client (test_swarm_runtimes.py tests shared drives)
            "KERNELHUB_DRIVE_ROOT": "",
            "KERNELHUB_RUNTIME_TYPES_JSON": json.dumps(RUNTIME_TYPES),
            "KERNELHUB_REGISTRY": f"{cluster.registry}/{NAME}",
            "KERNELHUB_POSTGRES_IMAGE": "kernelhub/ci-postgres:latest",
            "KERNELHUB_PORT": str(port),
            "KERNELHUB_REGISTRY_PORT": str(free_port()),
            # not the compose deployment's network, which its tests may still hold
            "KERNELHUB_RUNTIMES_NETWORK": f"{NAME}-runtimes",
        }
        try:
            # as the header says: no image looked up on a registry the test did not make
            deployed = _docker(
                "stack", "deploy", "--resolve-image", "never", "-c", str(STACK_FILE), NAME,
                env=env,
            )  # fmt: skip
            assert deployed.returncode == 0, deployed.stderr
            yield Deployed(engine, f"http://127.0.0.1:{port}", values)
        finally:
            print(_docker("service", "ls", env=env).stdout)
            for service in SERVICES:  # shown when a test fails (the secrets never are)
                name = f"{NAME}_{service}"
                print(_docker("service", "ps", "--no-trunc", name, env=env).stdout)
                logs = _docker("service", "logs", "--tail", "30", name, env=env)
                print((logs.stdout + logs.stderr)[-4000:])
            removed = _docker("stack", "rm", NAME, env=env)
            _wait_gone(engine)
            _remove_stack(engine)
            assert removed.returncode == 0, removed.stderr


def _docker(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["docker", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
        check=False,
    )  # fmt: skip


def _stack_objects(engine: Any) -> dict[str, list[str]]:
    label = {"label": f"{NAMESPACE}={NAME}"}
    return {
        "services": [s.name for s in engine.services.list(filters=label)],
        # sparse: no inspect of each listed container, which may be gone a moment later
        "containers": [
            c.id[:12] for c in engine.containers.list(all=True, filters=label, sparse=True)
        ],
        "networks": [n.name for n in engine.networks.list(filters=label)],
        "configs": [c.name for c in engine.configs.list(filters=label)],
    }


def _wait_gone(engine: Any) -> None:
    wait_until(
        lambda: not any(_stack_objects(engine).values()), timeout=120, interval=1,
        what="`docker stack rm` to remove every service, container, network and config",
    )  # fmt: skip


def _remove_stack(engine: Any) -> None:
    """What `docker stack rm` keeps by design: the volumes (data) and the external
    secrets (the operator's)."""
    for volume in engine.volumes.list(filters={"label": f"{NAMESPACE}={NAME}"}):
        volume.remove(force=True)
    for secret in engine.secrets.list():
        if secret.name in STACK["secrets"]:
            secret.remove()


def _running(engine: Any) -> dict[str, str]:
    """Each service's state: "running" when every task it should have runs (and is
    healthy, where it has a health check); "failing: ERROR" once two tasks failed."""
    states = {}
    for service in SERVICES:
        tasks = engine.services.get(f"{NAME}_{service}").tasks()
        failed = [t["Status"] for t in tasks if t["Status"]["State"] in ("failed", "rejected")]
        wanted = [t for t in tasks if t["DesiredState"] == "running"]
        if wanted and all(t["Status"]["State"] == "running" for t in wanted):
            states[service] = "running"
        elif len(failed) >= 2:
            states[service] = f"failing: {failed[0].get('Err', '')}"
        else:
            states[service] = " ".join(t["Status"]["State"] for t in wanted) or "no task"
    return states


def test_deployed_every_service_runs_and_the_hub_answers(stack: Deployed) -> None:
    engine = stack.engine

    started = time.monotonic()

    def settled() -> bool:
        # without depends_on, a service fails and restarts while what it needs starts
        # (the hub before PostgreSQL): only one that still fails after a while has failed
        states = set(_running(engine).values())
        late = time.monotonic() - started > 150
        return states == {"running"} or (late and any(s.startswith("failing") for s in states))

    try:
        wait_until(settled, timeout=300, interval=2, what="every service's tasks to run")
    except TimeoutError:
        pytest.fail(f"not every service runs after 300 s: {_running(engine)}")
    states = _running(engine)
    assert set(states.values()) == {"running"}, f"not every service runs: {states}"

    wait_until(
        lambda: _hub_healthy(stack.url), timeout=180, interval=2,
        what="the hub on its published port",
    )  # fmt: skip


def _hub_healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/hub/health", timeout=3).status_code == 200
    except httpx.HTTPError:
        return False


def _task_container(engine: Any, service: str) -> Any:
    found = engine.containers.list(
        filters={"label": f"com.docker.swarm.service.name={NAME}_{service}", "status": "running"}
    )
    assert found, f"no running task of {service}: {_running(engine)[service]}"
    return found[0]


def _run_in(container: Any, *command: str) -> tuple[int, str]:
    code, output = container.exec_run(list(command))
    return code, output.decode(errors="replace")


def test_deployed_no_secret_in_any_service_task_or_container_configuration(
    stack: Deployed,
) -> None:
    """What `docker service inspect` and `docker inspect` show anyone who may use the
    engine: every service's spec, and every container the stack runs."""
    engine = stack.engine
    shown = [json.dumps(engine.services.get(f"{NAME}_{s}").attrs) for s in SERVICES]
    containers = engine.containers.list(filters={"label": f"{NAMESPACE}={NAME}"})
    assert containers
    shown += [json.dumps(c.attrs) for c in containers]
    for name, value in stack.secrets.items():
        assert not any(value in text for text in shown), f"{name} is in a configuration"


# linux/capability.h: the bits of the capabilities a service of the file gets back
CAPABILITY_BITS = {"NET_ADMIN": 12, "SYS_PTRACE": 19, "SYS_ADMIN": 21}


@pytest.mark.parametrize("service", list(RUN_AS))
def test_deployed_users_capabilities_socket_and_ports(stack: Deployed, service: str) -> None:
    """As the file says, in the running task: its uid, no effective capability (but the
    runtimes' firewall's three), the Docker socket only in the guards, and ports in host
    mode."""
    engine = stack.engine
    container = _task_container(engine, service)
    code, status = _run_in(container, "cat", "/proc/1/status")
    assert code == 0, status
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    user = RUN_AS[service][0]
    if user:
        assert fields["Uid"].split()[0] == user.split(":")[0]
        assert fields["Gid"].split()[0] == user.split(":")[1]
    expected = sum(1 << CAPABILITY_BITS[cap] for cap in CAP_ADD.get(service, []))
    assert int(fields["CapEff"], 16) == expected, f"{service}: effective capabilities"
    has_socket = _run_in(container, "test", "-S", SOCKET)[0] == 0
    assert has_socket is (service in ("docker-proxy", "node-guard"))
    ports = engine.services.get(f"{NAME}_{service}").attrs["Endpoint"].get("Ports", [])
    assert {p["PublishMode"] for p in ports} <= {"host"}


@pytest.mark.parametrize("service", ["hub", "quotad"])
def test_deployed_secrets_are_files_only_the_services_user_reads(
    stack: Deployed, service: str
) -> None:
    container = _task_container(stack.engine, service)
    uid = RUN_AS[service][0].split(":")[0]  # type: ignore[union-attr]
    for target in SECRET_TARGETS[service]:
        code, out = _run_in(container, "stat", "-L", "-c", "%u %a", f"/run/secrets/{target}")
        assert (code, out.split()) == (0, [uid, "400"]), target


def test_deployed_the_daemon_reads_processes_but_not_other_services_environment_nor_writes(
    stack: Deployed,
) -> None:
    """The attack a host /proc invites: from the quota daemon's task, the environment and
    root of the other services' processes (other uids: the hub's, PostgreSQL's, the
    guards' root) and any write to /proc (a read-only mount)."""
    engine = stack.engine
    quotad = _task_container(engine, "quotad")
    others = {s: _task_container(engine, s) for s in ("hub", "postgres", "node-guard")}
    for service, container in others.items():
        pid = container.attrs["State"]["Pid"]
        code, out = _run_in(quotad, "cat", f"/host/proc/{pid}/stat")
        assert code == 0 and out.startswith(f"{pid} "), out  # what it accounts
        for path in (f"/host/proc/{pid}/environ", f"/host/proc/{pid}/root/etc/hostname"):
            code, out = _run_in(quotad, "cat", path)
            assert code != 0 and "Permission denied" in out, f"{service}: {path}: {out[:200]}"
    code, out = _run_in(quotad, "sh", "-c", "echo 1 > /host/proc/sys/vm/drop_caches")
    assert code != 0 and "Read-only file system" in out, out


GUARD_PROBE = """
import http.client, json, socket, sys
class Unix(http.client.HTTPConnection):
    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect(sys.argv[1])
def ask(method, path, body=None):
    c = Unix("localhost")
    c.request(method, path, body=body, headers={"Content-Type": "application/json"})
    return c.getresponse().status
print(ask("GET", "/_ping"), ask("GET", "/containers/json"),
      ask("POST", "/containers/create", json.dumps({"Image": "kernelhub/hub:latest"})),
      ask("GET", "/info"))
"""


def test_deployed_the_node_guard_lets_the_daemon_read_runtimes_and_nothing_more(
    stack: Deployed,
) -> None:
    quotad = _task_container(stack.engine, "quotad")
    socket_path = SERVICES["quotad"]["environment"]["DOCKER_HOST"].removeprefix("unix://")
    code, out = _run_in(quotad, "python3", "-c", GUARD_PROBE, socket_path)
    assert code == 0, out
    assert out.split() == ["200", "200", "403", "403"]


# ---- runtimes spawned through the deployed hub (tests/stack_runtimes.py) --------------


@pytest.fixture(scope="module")
def spawned(stack: Deployed) -> Iterator[Spawned]:
    """Two users with a runtime each, spawned once for the tests below."""
    wait_until(lambda: _hub_healthy(stack.url), timeout=300, interval=2, what="the hub")
    hub = _task_container(stack.engine, "hub")
    with spawned_runtimes(stack.engine, stack.url, hub) as run:
        yield run


@pytest.mark.parametrize("n", [0, 1])
def test_deployed_a_runtime_is_its_users_service_on_the_drive_node_and_answers_them(
    spawned: Spawned, n: int
) -> None:
    """A one-task service labelled as its user's, pinned to the manager the hub talks to
    (node-local drives), its drive a volume there labelled as that user's; through the
    hub's proxy, it answers its user's token."""
    engine, user = spawned.engine, spawned.users[n]
    (service,) = engine.services.list(filters={"label": f"{USER_LABEL}={user}"})
    spec = service.attrs["Spec"]["TaskTemplate"]
    assert spec["ContainerSpec"]["Labels"][USER_LABEL] == user
    assert spec["ContainerSpec"]["Image"].split("@")[0].endswith(f"/{NAME}/{RUNTIME_IMAGE}")
    assert spec["Placement"]["Constraints"] == [f"node.hostname=={engine.info()['Name']}"]
    assert [t["Status"]["State"] for t in service.tasks()] == ["running"]
    (drive,) = [m for m in spec["ContainerSpec"]["Mounts"] if m["Target"] == "/home/jovyan"]
    assert drive.get("Type", "volume") == "volume", drive
    assert engine.volumes.get(drive["Source"]).attrs["Labels"][DRIVE_LABEL] == user
    api, status = spawned.apis[user], spawned.runtime_url(user, "api/status")
    # right after the start a server may answer its first request with a 403
    # (test_compose.py): it must answer within seconds
    wait_until(lambda: api.get(status).status_code == 200, timeout=30, what=f"{user}'s status")


# who asks for the first user's runtime, with which Authorization header
INTRUDERS = {"the other user's token": "other", "no token": "", "a made-up token": "forged"}


@pytest.mark.parametrize("who", list(INTRUDERS))
@pytest.mark.parametrize("path", ["api/status", "api/contents"])
def test_deployed_nobody_else_reaches_a_users_runtime(
    spawned: Spawned, who: str, path: str
) -> None:
    owner, other = spawned.users
    headers = {
        "other": dict(spawned.apis[other].headers),
        "": {},
        "forged": {"Authorization": f"token {secrets.token_hex(16)}"},
    }[INTRUDERS[who]]
    if INTRUDERS[who] == "other":  # a token that works, on its own user's runtime
        assert httpx.get(spawned.runtime_url(other, path), headers=headers).status_code == 200
    answer = httpx.get(spawned.runtime_url(owner, path), headers=headers, timeout=30)
    # 403 or 404 from the server, or a redirect to sign in: never the runtime's answer
    assert answer.status_code in (302, 403, 404), f"{who}: {answer.status_code}"
    if answer.status_code == 302:
        assert "/hub/" in answer.headers["location"], answer.headers["location"]


def test_deployed_runtimes_reach_the_hub_but_never_each_other(
    stack: Deployed, spawned: Spawned
) -> None:
    """The stack's runtime-firewall: the hub reaches each runtime's server on the overlay
    (which connects them all); a user's kernel reaches the hub, not the other runtime."""
    network = f"{NAME}-runtimes"
    owner, other = spawned.users
    targets = [(spawned.address(other, network), 8888), ("hub", 8081), ("hub", 8000)]
    hub_sees = _run_in(_task_container(stack.engine, "hub"), "python3", "-c",
                       f"ADDRESSES = {targets[:1]!r}\n{PROBE}")  # fmt: skip
    assert hub_sees[1].split() == ["open"], hub_sees
    code = f"ADDRESSES = {targets!r}\n{PROBE}"
    seen = RuntimeClient.of(stack.url, owner, "", spawned.token(owner)).run(code).ok().split()
    assert seen[1:] == ["open", "open"], seen  # the hub's API and proxy
    assert seen[0] != "open", seen  # the other user's server


def test_deployed_a_file_in_the_drive_survives_a_restart_and_stopping_leaves_nothing(
    spawned: Spawned,
) -> None:
    """Written through the contents API into the node-local drive; the stopped runtime
    leaves no service or container (the other user's runs on); started again, its new
    task finds the file. Then both stop: nothing of either is left."""
    (user, other), api = spawned.users, spawned.apis[spawned.users[0]]
    url = spawned.runtime_url(user, "api/contents/stack-probe.txt")
    text = f"written through the deployed stack {secrets.token_hex(4)}"
    assert api.get(url).status_code == 404  # a new drive of its own
    written = api.put(url, json={"type": "file", "format": "text", "content": text})
    assert written.status_code in (200, 201), written.text
    stop_all_runtimes(api, user)
    # the engine removes a service's container a moment after the service
    wait_until(lambda: not spawned.left(user), timeout=60, interval=1, what=f"{user}'s runtime")
    assert len(spawned.left(other)) == 2, "the other user's service and container run on"
    start_runtime(api, user, "", "cpu")
    wait_until(lambda: api.get(url).status_code == 200, timeout=30, what="the file")
    assert api.get(url).json()["content"] == text
    for name, client in spawned.apis.items():
        stop_all_runtimes(client, name)
    wait_until(lambda: not spawned.left(), timeout=60, interval=1, what="every runtime to go")
