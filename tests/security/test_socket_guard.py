"""The Docker socket guard against the real engine: the real `kernelhub-socket-guard`
process, the real socket, and a real hub whose runtimes it spawns through the guard.

Every attack of tests/security/socket_guard_cases.py is sent to the guard and must be
answered 403 (413 for a body too big) with the engine's state unchanged: no container
or volume created, the decoy containers untouched. The decoy stands for any container
that is not a runtime, the guard's own included (in the compose deployment the guard
is such a container). The haproxy filter this guard replaced let most of them through.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import docker
import docker.errors
import httpx
import pytest
from harness import (
    HubProcess,
    docker_engine,
    end_process,
    free_port,
    start_runtime,
    stop_all_runtimes,
    wait_until,
)
from socket_guard_cases import (
    CREATE_ATTACKS,
    DRIVE,
    NETWORK,
    PREFIX,
    REFUSED_CALLS,
    SNIPPETS,
    TEST_IMAGE,
    VICTIM,
    VOLUME_ATTACKS,
    Body,
    runtime,
)

from kernelhub.contract import RUNTIME_TYPE_LABEL, SERVER_LABEL, USER_LABEL

pytestmark = [pytest.mark.docker, pytest.mark.slow]

GUARD = str(Path(sys.executable).parent / "kernelhub-socket-guard")
API = "/v1.41"


@dataclass
class Guard:
    url: str
    read_only_url: str  # the quota daemon's address
    log_path: Path
    proc: subprocess.Popen[bytes]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def client(self) -> docker.DockerClient:
        return docker.DockerClient(base_url=self.url.replace("http://", "tcp://"), timeout=30)


@pytest.fixture(scope="module")
def engine() -> Iterator[docker.DockerClient]:
    with docker_engine(PREFIX, TEST_IMAGE) as client:
        network = client.networks.create(NETWORK)
        try:
            yield client
        finally:
            for container in client.containers.list(all=True, filters={"name": PREFIX}):
                container.remove(force=True)  # before the network they are on
            network.remove()


def sleeper(
    engine: docker.DockerClient, name: str, labels: dict[str, str], env: list[str] | None = None
) -> str:
    container = engine.containers.run(
        TEST_IMAGE, ["sleep", "900"], name=f"{PREFIX}-{name}", entrypoint=[], labels=labels,
        detach=True, network=NETWORK, environment=env or [],
    )  # fmt: skip
    return str(container.id)


@pytest.fixture(scope="module")
def decoy(engine: docker.DockerClient) -> str:
    """A running container that is not a runtime (as the guard's own is not)."""
    return sleeper(engine, "decoy", {"purpose": "decoy"})


@pytest.fixture(scope="module")
def victim_runtime(engine: docker.DockerClient) -> str:
    """A running container labelled as another user's runtime."""
    labels = {USER_LABEL: VICTIM, SERVER_LABEL: "", RUNTIME_TYPE_LABEL: "cpu"}
    return sleeper(engine, "victim", labels, [f"JUPYTERHUB_API_TOKEN={VICTIM_TOKEN}"])


@pytest.fixture(scope="module")
def guard(engine: docker.DockerClient, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Guard]:
    log_path = tmp_path_factory.mktemp("guard") / "guard.log"
    port, read_only_port = free_port(), free_port()
    command = [
        GUARD, "--listen", f"127.0.0.1:{port}", "--network", NETWORK,
        "--read-only-listen", f"127.0.0.1:{read_only_port}",
        "--drive-name-template", f"{PREFIX}-drive-{{username}}",
        "--site-snippets-volume", SNIPPETS, "--prefix", PREFIX,
    ]  # fmt: skip
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    url, read_only_url = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{read_only_port}"
    running = Guard(url, read_only_url, log_path, proc)
    try:

        def answers() -> bool:
            assert proc.poll() is None, running.log()
            try:
                return httpx.get(f"{running.url}/_ping", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(answers, timeout=30, what="the guard to answer")
        yield running
    finally:
        end_process(proc)


def state(engine: docker.DockerClient) -> tuple[set[tuple[str, str]], set[str]]:
    """The test's containers (and whether each runs) and volumes."""
    # the list alone: docker-py's models would inspect each, racing auto-removal
    containers = engine.api.containers(all=True, filters={"name": PREFIX})
    volumes = engine.volumes.list(filters={"name": PREFIX})
    return {(c["Names"][0].lstrip("/"), c["State"]) for c in containers}, {v.name for v in volumes}


def refused(response: httpx.Response, status: int = 403) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["status"] == status
    return str(body["message"])


def send(guard: Guard, method: str, path: str, body: bytes | None = None) -> httpx.Response:
    headers = {"Content-Type": "application/json"} if body is not None else {}
    return httpx.request(method, guard.url + path, content=body, headers=headers, timeout=30)


@pytest.mark.parametrize(
    ("case", "body", "says"), CREATE_ATTACKS, ids=[c[0] for c in CREATE_ATTACKS]
)
def test_each_container_escape_is_refused_and_creates_nothing(
    engine: docker.DockerClient, guard: Guard, decoy: str, case: str, body: Body, says: str
) -> None:
    before = state(engine)
    raw = body().replace(b"DECOY", decoy.encode())
    response = send(guard, "POST", f"{API}/containers/create?name={PREFIX}-attack", raw)
    assert says in refused(response)
    assert state(engine) == before


@pytest.mark.parametrize(
    ("case", "body", "says"), VOLUME_ATTACKS, ids=[c[0] for c in VOLUME_ATTACKS]
)
def test_each_volume_that_is_not_a_plain_drive_is_refused(
    engine: docker.DockerClient, guard: Guard, case: str, body: Body, says: str
) -> None:
    before = state(engine)
    assert says in refused(send(guard, "POST", f"{API}/volumes/create", body()))
    assert state(engine) == before


@pytest.mark.parametrize(
    ("case", "method", "path"), REFUSED_CALLS, ids=[c[0] for c in REFUSED_CALLS]
)
def test_each_call_the_spawner_never_makes_is_refused(
    engine: docker.DockerClient, guard: Guard, decoy: str, victim_runtime: str,
    case: str, method: str, path: str,
) -> None:  # fmt: skip
    before = state(engine)
    path = path.replace("DECOY", decoy).replace("RUNTIME", victim_runtime)
    refused(send(guard, method, path, b"{}" if method in ("PUT", "POST") else None))
    assert state(engine) == before


def test_a_runtime_image_must_be_a_kernelhub_runtime(
    engine: docker.DockerClient, guard: Guard
) -> None:
    before = state(engine)
    other = runtime(lambda b: b.update(Image="debian:bookworm-slim"))()
    response = send(guard, "POST", f"{API}/containers/create?name={PREFIX}-attack", other)
    assert "not a kernelhub runtime image" in refused(response)
    assert state(engine) == before


def test_a_runtime_cannot_take_a_services_name(engine: docker.DockerClient, guard: Guard) -> None:
    before = state(engine)
    response = send(guard, "POST", f"{API}/containers/create?name=hub-{PREFIX}", runtime()())
    assert "name starts with" in refused(response)
    assert state(engine) == before


@pytest.mark.parametrize("chunked", [False, True], ids=["sized", "chunked"])
def test_a_body_too_big_is_refused(
    engine: docker.DockerClient, guard: Guard, chunked: bool
) -> None:
    before = state(engine)
    big = runtime()().replace(b'"Tty"', b'"Hostname": "' + b"x" * (1024 * 1024) + b'", "Tty"')
    content: bytes | Iterator[bytes] = iter([big[:1000], big[1000:]]) if chunked else big
    response = httpx.post(
        f"{guard.url}{API}/containers/create?name={PREFIX}-attack", content=content, timeout=30
    )
    assert "exceeds" in refused(response, 413)
    assert state(engine) == before


def test_a_refusal_is_one_log_line_without_the_body(guard: Guard) -> None:
    secret = "JUPYTERHUB_API_TOKEN=not-to-be-logged"
    body = runtime(lambda b: (b["Env"].append(secret), b["HostConfig"].update(Privileged=True)))
    refused(send(guard, "POST", f"{API}/containers/create", body()))
    assert "refused POST /v1.41/containers/create: Privileged" in guard.log()
    assert "not-to-be-logged" not in guard.log()


def test_docker_py_shows_the_guards_reason(guard: Guard, decoy: str) -> None:
    client = guard.client()
    with pytest.raises(docker.errors.APIError) as error:
        client.containers.get(decoy)
    assert error.value.status_code == 403
    assert "is not a kernelhub runtime" in str(error.value.explanation)


def test_a_runtime_is_created_run_read_stopped_and_removed_through_the_guard(
    engine: docker.DockerClient, guard: Guard, decoy: str, victim_runtime: str
) -> None:
    client = guard.client()
    assert client.volumes.create(DRIVE["Name"], labels=DRIVE["Labels"]).name == DRIVE["Name"]
    response = send(guard, "POST", f"{API}/containers/create?name={PREFIX}-mine", runtime()())
    assert response.status_code == 201, response.text
    container = client.containers.get(f"{PREFIX}-mine")
    container.start()
    assert container.labels[USER_LABEL] == "mallory"
    host = engine.containers.get(container.id).attrs["HostConfig"]
    assert (host["CapDrop"], host["PidsLimit"]) == (["ALL"], 1024)

    listed = {c["Id"] for c in client.api.containers(all=True)}  # runtimes only
    assert {container.id, victim_runtime} <= listed and decoy not in listed
    waited: list[dict[str, int]] = []
    waiter = threading.Thread(target=lambda: waited.append(container.wait(timeout=60)))
    waiter.start()  # a long poll, streamed through the guard
    assert isinstance(container.logs(), bytes)
    container.stop(timeout=1)
    waiter.join(60)
    assert waited and "StatusCode" in waited[0]
    wait_until(lambda: f"{PREFIX}-mine" not in state(engine)[0], what="auto-removal")


HUB_CONFIG = f"""
c.RuntimeCatalog.runtime_types = [
    {{"name": "cpu", "display_name": "CPU", "image": "{TEST_IMAGE}", "mem_limit": "1G",
      "cpu_limit": 1.0}},
]
c.DockerRuntimeSpawner.prefix = "{PREFIX}"
c.DockerRuntimeSpawner.drive_name_template = "{PREFIX}-drive-{{username}}"
c.DockerRuntimeSpawner.site_snippets_volume = "{SNIPPETS}"
c.DockerRuntimeSpawner.network_name = "{NETWORK}"
c.DockerRuntimeSpawner.use_internal_ip = True
c.Spawner.start_timeout = 120
c.Spawner.http_timeout = 120
"""


def test_the_real_spawner_works_through_the_guard(
    engine: docker.DockerClient, guard: Guard, hub_factory: Callable[..., HubProcess]
) -> None:
    start = len(guard.log())
    docker_host = guard.url.replace("http://", "tcp://")
    hub = hub_factory(
        config_text=HUB_CONFIG, name="guarded", runtimes="docker",
        env={"DOCKER_HOST": docker_host},
    )  # fmt: skip
    user = "alice"
    with hub.api(hub.token(user)) as api:
        model = start_runtime(api, user, "", "cpu")
        assert api.get(f"{hub.url}{model['url']}api/status").status_code == 200
        (container,) = engine.containers.list(
            filters={"label": f"{USER_LABEL}={user}", "name": PREFIX}
        )
        assert container.name == f"{PREFIX}-{user}"
        # the lockdown the guard requires, from the spawner's own settings
        host = container.attrs["HostConfig"]
        assert (host["CapDrop"], host["PidsLimit"]) == (["ALL"], 1024)
        assert engine.volumes.get(f"{PREFIX}-drive-{user}")
        stop_all_runtimes(api, user)
    wait_until(lambda: f"{PREFIX}-{user}" not in state(engine)[0], what="container removal")
    assert "refused" not in guard.log()[start:], guard.log()[start:]


GPU_CONFIG = (
    HUB_CONFIG
    + f"""
c.RuntimeCatalog.runtime_types = [
    {{"name": "gpu", "display_name": "GPU", "image": "{TEST_IMAGE}", "gpus": 1}},
]
c.GpuInventory.devices = ["0"]
c.DockerRuntimeSpawner.gpu_request_mode = "device-requests"
"""
)


def test_the_spawners_gpu_request_passes_the_guard(
    engine: docker.DockerClient, guard: Guard, hub_factory: Callable[..., HubProcess]
) -> None:
    # this engine has no NVIDIA toolkit: the guard lets the device request through,
    # the engine cannot start it, and the spawner removes it (through the guard too)
    start = len(guard.log())
    docker_host = guard.url.replace("http://", "tcp://")
    hub = hub_factory(
        config_text=GPU_CONFIG, name="guardedgpu", runtimes="docker",
        env={"DOCKER_HOST": docker_host},
    )  # fmt: skip
    user = "gpuuser"
    with hub.api(hub.token(user)) as api:
        response = api.post(f"users/{user}/server", json={"user_options": {"runtime": "gpu"}})
        assert response.status_code in (201, 202), response.text
        progress = api.get(f"users/{user}/server/progress").text
        assert "could not start" in progress
    assert f"{PREFIX}-{user}" not in state(engine)[0]
    assert "creating a runtime container" in guard.log()[start:]
    assert "refused" not in guard.log()[start:], guard.log()[start:]


# ---- the quota daemon's read-only address -----------------------------------------------

VICTIM_TOKEN = "victim-runtime-token-" + PREFIX  # a stand-in: no hub issued it


def test_the_quota_daemons_address_reads_runtimes_and_changes_nothing(
    engine: docker.DockerClient, guard: Guard, victim_runtime: str, decoy: str
) -> None:
    read_only = Guard(guard.read_only_url, guard.read_only_url, guard.log_path, guard.proc)
    seen = send(read_only, "GET", f"{API}/containers/{victim_runtime}/json")
    assert seen.status_code == 200, seen.text
    assert seen.json()["Config"]["Labels"][USER_LABEL] == VICTIM
    assert "Env" not in seen.json()["Config"] and VICTIM_TOKEN not in seen.text
    # the spawner's address still sees it (the hub reads a runtime's token back from it)
    assert VICTIM_TOKEN in send(guard, "GET", f"{API}/containers/{victim_runtime}/json").text
    listed = send(read_only, "GET", f"{API}/containers/json")
    assert listed.status_code == 200 and victim_runtime in listed.text
    assert send(read_only, "GET", "/_ping").status_code == 200
    before = state(engine)
    for method, path, body in [
        ("POST", f"{API}/containers/{victim_runtime}/stop", None),
        ("DELETE", f"{API}/containers/{victim_runtime}", None),
        ("POST", f"{API}/containers/create?name={PREFIX}-ro", runtime()()),
        ("POST", f"{API}/volumes/create", json.dumps(DRIVE).encode()),
        ("GET", f"{API}/containers/{decoy}/json", None),
        ("GET", f"{API}/images/{TEST_IMAGE}/json", None),
    ]:
        refused(send(read_only, method, path, body))
    assert state(engine) == before
